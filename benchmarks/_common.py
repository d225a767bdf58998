"""Helpers shared by the benchmark scripts: machine description, timing, data paths, tables."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from sktransfer.speed import machine_description  # noqa: F401  (the one description, with bf16 instructions)

DATA_DIR = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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
    median, spread = median_spread(seconds)
    return f"{median:.2f} s ± {spread:.2f}"


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


def read_docstring_paragraphs(n: int, min_words: int = 20) -> list[str]:
    """The first ``n`` distinct stdlib docstrings of ``min_words`` words or more, as one paragraph each.

    Long, varied English prose that every machine has offline (the corpus the issue's figures for
    raw ``encode`` were measured on). Files are parsed, never imported, in sorted order.
    """
    import ast
    import sysconfig

    paragraphs, seen = [], set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = " ".join((ast.get_docstring(node) or "").split())
                if len(text.split()) >= min_words and text not in seen:
                    seen.add(text)
                    paragraphs.append(text)
                    if len(paragraphs) == n:
                        return paragraphs
    return paragraphs


def cosine_rows(a, b):
    """Cosine similarity of matching rows of two feature arrays."""
    import numpy as np

    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@dataclass
class Table:
    """One result table of a benchmark: printed by the script, rendered by ``run_all.py``.

    ``rows`` hold formatted strings. ``chart`` optionally describes a figure for the docs page:
    ``{"kind": "bar", "labels": [...], "values": [...], "xlabel": ...}`` or
    ``{"kind": "scaling", "series": {label: {"items": [...], "seconds": [...], "memory": [...],
    "output": [...]}}}``.
    """

    title: str
    columns: list
    rows: list
    notes: list = field(default_factory=list)
    chart: dict | None = None

    def show(self) -> Table:
        widths = [max(len(str(c)), *(len(str(r[i])) for r in self.rows)) for i, c in enumerate(self.columns)]
        print(f"\n{self.title}")
        line = lambda cells: "  ".join(  # noqa: E731
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )
        print(line(self.columns))
        for row in self.rows:
            print(line(row))
        for note in self.notes:
            print(f"  * {note}")
        return self

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
               "| " + " | ".join(["---"] + ["---:"] * (len(self.columns) - 1)) + " |"]
        out += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {note}" for note in self.notes]
        return "\n".join(out)


def run_json_child(argv: list):
    """Run ``python *argv`` in a fresh process and parse the JSON on the last line of its output."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def median_spread(seconds: list) -> tuple[float, float]:
    """Median and half-range of repeated timings."""
    return statistics.median(seconds), (max(seconds) - min(seconds)) / 2
