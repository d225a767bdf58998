"""Shared fixtures: small samples of the real data sets (offline set-up is in ../conftest.py)."""

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SKTRANSFER_DATA", REPO_ROOT.parent / "shared" / "data"))


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
