"""Every code block of the README and of docs/ runs, so the documentation cannot drift from the code.

Each page runs in a fresh working directory with the shared data beside it as ``../shared`` (the
layout of a checkout). Blocks run in page order:

* ``python`` blocks execute in one namespace per page;
* ``bash`` blocks run line by line: ``sktransfer ...`` commands for real (``|| echo`` tails
  accept a documented failure); ``make TARGET`` as a dry run (``make -n``) from the project root,
  which checks the target exists without a 30-minute run; ``python SCRIPT`` with ``--help``;
* ``text`` blocks are sample output and are not run. Any other language fails the test, so a new
  block cannot slip through unrun.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PAGES = ["README.md"] + sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def shell_commands(code):
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def sktransfer_in_process(argv, env):
    """``sktransfer ARGS`` through ``cli.main`` in this process (the page's working directory is
    already the current one): the commands and their exit codes as a user gets them, without the
    seconds of a fresh interpreter per line. tests/test_cli.py runs the real entry point."""
    import contextlib
    import io

    from sktransfer.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's --help and usage errors
                code = exc.code
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(argv, code or 0, out.getvalue(), err.getvalue())


def run_command(line, work):
    accept_failure = False
    if "||" in line:  # `cmd || echo ...`: the page shows a failing command on purpose
        line, accept_failure = line.split("||")[0], True
    words = shlex.split(line, comments=True)
    env = {"SKTRANSFER_CACHE": str(work / "default-cache")}  # never the user's own cache
    if words[0] == "make":
        result = subprocess.run(["make", "-n", *words[1:]], cwd=REPO_ROOT, capture_output=True, text=True)
    elif words[0] == "sktransfer":
        result = sktransfer_in_process(words[1:], env)
    elif words[0] == "python":
        result = subprocess.run([sys.executable, str(REPO_ROOT / words[1]), "--help"], capture_output=True,
                                text=True)
    else:
        pytest.fail(f"documentation runs an unrecognised command: {line}")
    if accept_failure:
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    else:
        assert result.returncode == 0, f"{line}\n{result.stdout[-1000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page, data_dir, tmp_path, capsys):
    blocks = BLOCK.findall((REPO_ROOT / page).read_text())
    unknown = sorted({lang for lang, _ in blocks if lang not in {"python", "bash", "text"}})
    assert not unknown, f"{page}: code blocks must be python, bash or text (sample output), got {unknown}"
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "shared").symlink_to(data_dir.parent, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        namespace = {"__name__": "__docs__"}
        for index, (lang, code) in enumerate(blocks):
            if lang == "python":
                exec(compile(code, f"{page} (code block {index + 1})", "exec"), namespace)
            elif lang == "bash":
                for line in shell_commands(code):
                    run_command(line, work)
    finally:
        os.chdir(cwd)
    if page == "README.md":
        assert "[1 0]" in capsys.readouterr().out  # the first example's printed prediction
        # Each distinct item is encoded once: four texts, then the table's names and photos.
        products = namespace["products"]
        expected = 4 + products["productDisplayName"].nunique() + products["photo"].nunique()
        assert namespace["cache"].stats.misses == expected
