"""The README's Python examples run as written, in order, in one namespace."""

import os
import re

import pytest

from conftest import REPO_ROOT


def test_readme_python_blocks_run(data_dir, tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 3
    # The README is read from the project root, with the shared data beside it as ../shared.
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "shared").symlink_to(data_dir.parent, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        namespace = {}
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "[1 0]" in out  # the first example's printed prediction
    assert namespace["cache"].stats.misses == 4  # four distinct texts, encoded once each
    if not list((tmp_path / "shared" / "data" / "hymenoptera").glob("train/ants/*.jpg")):
        pytest.fail("README image example found no photos")
