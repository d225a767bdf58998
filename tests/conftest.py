"""Shared fixtures: small samples of the real data sets (offline set-up is in ../conftest.py)."""

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SKTRANSFER_DATA", REPO_ROOT.parent / "shared" / "data"))

# The test files that take a minute or more, longest first (summed test times of `make test`,
# 2026-12-04: 283, 258, 229, 155, 135, 135, 82, 75 and 66 s, of about 1700 s in all). `make test`
# hands whole files to two workers in collection order (`--dist loadfile --no-loadscope-reorder`,
# pytest-xdist 3.8), so these start first and the many short files fill the gaps at the end.
# pytest-xdist's own order, most tests first, sent the 283 s file of 12 tests out near the end:
# by those times, one worker then waits about 70 s for the other.
LONGEST_FILES_FIRST = ["test_examples_and_benchmarks.py", "test_docs.py", "test_cluster.py", "test_cli.py",
                       "test_finetune.py", "test_backends.py", "test_identity.py", "test_spark.py", "test_int8.py"]

_renamed = [name for name in LONGEST_FILES_FIRST if not (Path(__file__).parent / name).is_file()]
assert not _renamed, f"tests/conftest.py: LONGEST_FILES_FIRST names test files that do not exist: {_renamed}"


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture(scope="session")
def data_dir():
    """The shared real data sets; tests that need them skip cleanly when they are absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR} (set SKTRANSFER_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def sst2_sample(data_dir):
    """40 short SST-2 training sentences with labels (20 per class)."""
    path = data_dir / "sst2" / "stsa.binary.train"
    if not path.exists():
        pytest.skip(f"{path} not found")
    texts, labels = [], []
    counts = {0: 0, 1: 0}
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            label, text = int(line[0]), line[2:].strip()
            if counts[label] < 20 and len(text) < 120:
                counts[label] += 1
                texts.append(text)
                labels.append(label)
            if min(counts.values()) >= 20:
                break
    return texts, labels


@pytest.fixture(scope="session")
def hymenoptera(data_dir):
    """Sorted photo paths of the hymenoptera data set: {"train": {"ants": [...], ...}, "val": ...}."""
    root = data_dir / "hymenoptera"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return {
        split: {cls: sorted(str(p) for p in (root / split / cls).glob("*.jp*g")) for cls in ("ants", "bees")}
        for split in ("train", "val")
    }


@pytest.fixture
def encoded(monkeypatch):
    """Every text that reaches TextEncoder's network, in order (to count real encodings)."""
    from sktransfer import TextEncoder

    seen = []
    original = TextEncoder._encode_batch

    def recording(self, model, batch):
        seen.extend(batch)
        return original(self, model, batch)

    monkeypatch.setattr(TextEncoder, "_encode_batch", recording)
    return seen


@pytest.fixture
def minilm_copy(tmp_path):
    """A private copy of the all-MiniLM-L6-v2 folder that a test may edit."""
    from sktransfer.model_store import resolve_text_model

    target = tmp_path / "minilm"
    shutil.copytree(resolve_text_model("all-MiniLM-L6-v2"), target)
    return target
