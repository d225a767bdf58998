"""Helpers shared by the benchmark scripts: machine description, timing, data paths."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

DATA_DIR = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def machine_description() -> str:
    """CPU model, cores, torch version and intra-op threads, as one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, CUDA {torch.cuda.is_available()}"
    )


def time_alternating(candidates: dict, repeats: int) -> dict:
    """Run each callable ``repeats`` times, alternating between them; return lists of seconds."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: list) -> str:
    median = statistics.median(seconds)
    spread = (max(seconds) - min(seconds)) / 2
    return f"{median:.2f} s +/- {spread:.2f}"


def hymenoptera_files(root: Path | None = None) -> list[str]:
    root = root or DATA_DIR / "hymenoptera"
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".gif"})
    if not files:
        raise SystemExit(f"no images under {root}; set SKTRANSFER_DATA to the folder holding hymenoptera/")
    return files


def read_sst2(path):
    """One SST-2 split as (texts, labels): ``<label> <sentence>`` per line, latin-1.

    The same format as ``examples/sst2_learning_curve.py`` reads; the example keeps its own copy
    so that it stays a self-contained script for users.
    """
    import numpy as np

    texts, labels = [], []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            if line.strip():
                labels.append(int(line[0]))
                texts.append(line[2:].strip())
    return texts, np.asarray(labels)


def cosine_rows(a, b):
    """Cosine similarity of matching rows of two feature arrays."""
    import numpy as np

    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
