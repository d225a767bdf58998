"""Encoding time and peak memory as the input grows: streaming must keep memory flat.

Images: the hymenoptera file list repeated 1x, 4x, 16x as distinct paths (hard links in a temporary
folder, so that per-call deduplication of identical paths does not hide the work; decoding streams
through a bounded DataLoader, so peak memory should not grow beyond the output array). Texts: SST-2 sentences
repeated with a numeric suffix to 10k, 40k and 160k distinct texts (so deduplication does not
hide the work). Each size runs in a fresh child process, which reports its wall time and its
peak resident memory above the level reached after loading the model.

Usage: python benchmarks/bench_scaling.py [--image-factors 1 4 16] [--text-sizes 10000 40000 160000]
       [--precision bf16] [--repeats 1] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import DATA_DIR, Table, hymenoptera_files, machine_description, read_sst2, run_json_child  # noqa: E402


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> float:
    """Start a fresh peak measurement; returns the resident memory it starts from (MiB).

    ``ru_maxrss`` is no good here: Linux carries the parent's peak into a child started with
    fork + exec, so children of a large parent (such as run_all.py) would report no growth at
    all. The mm's own high-water mark (VmHWM) starts afresh at exec, and writing 5 to
    /proc/self/clear_refs resets it to the current resident size.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mib("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _peak_since_reset() -> float:
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _distinct_copies(files, factor):
    """``factor`` distinct paths per file: hard links (or copies across file systems)."""
    import os
    import shutil
    import tempfile

    import atexit

    folder = Path(tempfile.mkdtemp(prefix="sktransfer-scaling-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    items = []
    for copy in range(factor):
        for index, source in enumerate(files):
            target = folder / f"{copy}_{index}{Path(source).suffix}"
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            items.append(str(target))
    return items


def child(kind: str, size: int, precision: str, limit: int | None = None) -> dict:
    """Run one size in this process; return time and memory figures."""
    from sktransfer import ImageEncoder, TextEncoder

    if kind == "image":
        items = _distinct_copies(hymenoptera_files()[:limit], size)
        encoder = ImageEncoder(weights="IMAGENET1K_V1", precision=precision).fit(items[:1])
        encoder.transform(items[:8])  # warm up (oneDNN kernels), outside the timing
    else:
        pool = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0]
        items = [f"{pool[i % len(pool)]} {i}" for i in range(size)]
        encoder = TextEncoder(precision=precision).fit(items[:1])
        encoder.transform(items[:8])
    base = _reset_peak()
    start = time.perf_counter()
    out = encoder.transform(items)
    seconds = time.perf_counter() - start
    assert np.isfinite(out).all()
    return {
        "items": len(items),
        "seconds": seconds,
        "peak_above_model_mib": _peak_since_reset() - base,
        "output_mib": out.nbytes / 2**20,
    }


def run_child(kind, size, precision, limit):
    return run_json_child([__file__, "--child", kind, str(size), "--precision", precision,
                           *(["--limit", str(limit)] if limit else [])])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-factors", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--text-sizes", type=int, nargs="*", default=[10_000, 40_000, 160_000])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all sizes (interleaved); median time")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N image files (smoke test)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.precision, args.limit)))
        return

    print(f"Machine: {machine_description()}")
    runs = [("image", f, f"hymenoptera files x {f}") for f in args.image_factors]
    runs += [("text", n, f"SST-2 sentences, {n} distinct") for n in args.text_sizes]
    results = {label: [] for _, _, label in runs}
    for _ in range(args.repeats):  # rounds interleave the sizes, so machine drift hits them alike
        for kind, size, label in runs:
            results[label].append(run_child(kind, size, args.precision, args.limit))

    rows, series = [], {}
    for kind, _size, label in runs:
        r = results[label]
        seconds = float(np.median([x["seconds"] for x in r]))
        peak = max(x["peak_above_model_mib"] for x in r)
        items, output = r[0]["items"], r[0]["output_mib"]
        s = series.setdefault("images" if kind == "image" else "texts",
                              {"items": [], "seconds": [], "memory": [], "output": []})
        per_item = seconds / items
        first = s["seconds"][0] / s["items"][0] if s["items"] else per_item
        for key, value in zip(["items", "seconds", "memory", "output"], [items, seconds, peak, output]):
            s[key].append(value)
        rows.append([label, f"{items:,}", f"{seconds:.1f} s", f"{items / seconds:.1f}", f"{per_item / first:.2f}x",
                     f"{peak:.0f} MiB", f"{output:.0f} MiB", f"{int(round(peak - output))} MiB"])
    table = Table(
        f"Scaling at precision={args.precision}: each size in a fresh process, {args.repeats} round(s)",
        ["input", "items", "time (this machine)", "items/s", "time per item vs smallest", "peak memory",
         "of which output", "peak beyond output"],
        rows,
        notes=["peak memory: peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident "
               "size after loading the model and a warm-up batch; the output array is float32 (items x 1280 for images, items x 384 for texts)."],
        chart={"kind": "scaling", "series": series},
    )
    return [table.show()]


if __name__ == "__main__":
    main()
