"""Every code block of the README and of docs/ runs, so the documentation cannot drift from the code.

Each page runs in a fresh working directory with the shared data beside it as ``../shared`` (the
layout of a checkout). Blocks run in page order:

* ``python`` blocks execute in one namespace per page;
* ``bash`` blocks run line by line: ``sktransfer ...`` commands for real (``|| echo`` tails
  accept a documented failure); ``make TARGET`` as a dry run (``make -n``) from the project root,
  which checks the target exists without a 30-minute run; ``python SCRIPT`` with ``--help``;
* ``text`` blocks show the output of the block before them, and ``# ...`` comments on ``print``
  lines what that line prints: both are checked (the grammar of a claim is in
  ``tests/doc_outputs.py``). Any other language fails the test, so a new block cannot slip
  through unrun.
"""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from doc_outputs import PrintRecorder, check_claim, check_print_claims, code_blocks

PAGES = ["README.md"] + sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md"))


def shell_commands(code):
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def sktransfer_in_process(argv, env):
    """``sktransfer ARGS`` through ``cli.main`` in this process (the page's working directory is
    already the current one): the commands and their exit codes as a user gets them, without the
    seconds of a fresh interpreter per line. tests/test_cli.py runs the real entry point."""
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
    """Run one documented shell line; return what a terminal would show (stderr, then stdout)."""
    echo = None
    if "||" in line:  # `cmd || echo ...`: the page shows a failing command on purpose
        line, tail = (part.strip() for part in line.split("||", 1))
        echo = shlex.split(tail)
        assert echo[0] == "echo", f"documentation runs an unrecognised command after ||: {tail}"
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
    shown = result.stderr + result.stdout
    if echo is not None:
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        shown += " ".join(echo[1:]).replace("$?", str(result.returncode)) + "\n"
    else:
        assert result.returncode == 0, f"{line}\n{result.stdout[-1000:]}\n{result.stderr[-2000:]}"
    return shown


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page, data_dir, tmp_path):
    blocks = code_blocks((REPO_ROOT / page).read_text())
    unknown = sorted({lang for lang, _, _ in blocks if lang not in {"python", "bash", "text"}})
    assert not unknown, f"{page}: code blocks must be python, bash or text (sample output), got {unknown}"
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "shared").symlink_to(data_dir.parent, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(work)
    recorder = PrintRecorder()
    namespace = {"__name__": "__main__", "print": recorder}  # as a script, its guards run
    previous = None  # (language, line, what the block printed), for the text block after it
    try:
        for lang, code, line in blocks:
            where = f"{page}:{line}"
            if lang == "python":
                filename = f"{page} (code block at line {line})"
                stdout = io.StringIO()
                with contextlib.redirect_stdout(stdout):
                    exec(compile("\n" * (line - 1) + code, filename, "exec"), namespace)
                check_print_claims("\n" * (line - 1) + code, filename, recorder, page)
                previous = (lang, line, stdout.getvalue())
            elif lang == "bash":
                shown = "".join(run_command(command, work) for command in shell_commands(code))
                previous = (lang, line, shown)
            else:
                assert previous is not None, f"{where}: a text block shows the output of the code block before it"
                try:
                    check_claim(code, previous[2])
                except AssertionError as exc:
                    raise AssertionError(f"{where}: the output of the {previous[0]} block at line "
                                         f"{previous[1]}: {exc}") from None
                previous = None
    finally:
        os.chdir(cwd)
    if page == "README.md":
        # Each distinct item is encoded once: four texts, then the table's names and photos.
        products = namespace["products"]
        expected = 4 + products["productDisplayName"].nunique() + products["photo"].nunique()
        assert namespace["cache"].stats.misses == expected


def test_the_benchmark_duration_quoted_is_the_recorded_one():
    # README and Makefile quote how long `make bench` takes; the figure must be the sum of the
    # sections' recorded run times in docs/benchmarks.json (within rounding to 5 minutes).
    import json

    sections = json.loads((REPO_ROOT / "docs" / "benchmarks.json").read_text())
    total = sum(section.get("minutes") or 0 for section in sections.values())
    for page in ("README.md", "Makefile"):
        text = (REPO_ROOT / page).read_text()
        quoted = [int(m) for m in re.findall(r"about (\d+) min(?:utes)? on 2\s+(?:#\s*)?cores", text)]
        assert quoted, f"{page} no longer says how long `make bench` takes"
        assert all(abs(q - total) <= 5 for q in quoted), f"{page} says {quoted} minutes; recorded: {total:.0f}"


def test_docstrings_use_cross_references_that_the_api_reference_renders():
    # mkdocstrings renders Markdown: a Sphinx role (:class:`~sktransfer.X`) showed raw on the API
    # page. Cross-references are written [`X`][sktransfer.X]; `mkdocs build --strict` (CI) fails on
    # one whose target is not on the site.
    role = re.compile(r":(?:class|mod|func|meth|attr|exc|data|obj|ref|doc):`")
    found = [f"{path.relative_to(REPO_ROOT)}:{number}" for path in sorted((REPO_ROOT / "sktransfer").rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if role.search(line)]
    assert not found, f"Sphinx roles in docstrings: {found}"
