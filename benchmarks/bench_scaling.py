"""Encoding time and peak memory as the input grows: streaming must keep memory flat.

Images: the hymenoptera file list repeated 1x, 4x, 16x as distinct paths (hard links in a temporary
folder, so that per-call deduplication of identical paths does not hide the work; decoding streams
through a bounded DataLoader, so peak memory should not grow beyond the output array). Texts: SST-2 sentences
repeated with a numeric suffix to 10k, 40k and 160k distinct texts (so deduplication does not
hide the work). Each size runs in a fresh child process, which reports its wall time and its
peak resident memory above the level reached after loading the model.

Usage: python benchmarks/bench_scaling.py [--image-factors 1 4 16] [--text-sizes 10000 40000 160000]
       [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, hymenoptera_files, machine_description, read_sst2  # noqa: E402


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


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


def child(kind: str, size: int, precision: str) -> dict:
    """Run one size in this process; return time and memory figures."""
    import numpy as np

    from sktransfer import ImageEncoder, TextEncoder

    if kind == "image":
        items = _distinct_copies(hymenoptera_files(), size)
        encoder = ImageEncoder(weights="IMAGENET1K_V1", precision=precision).fit(items[:1])
        encoder.transform(items[:8])  # warm up (oneDNN kernels), outside the timing
    else:
        pool = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0]
        items = [f"{pool[i % len(pool)]} {i}" for i in range(size)]
        encoder = TextEncoder(precision=precision).fit(items[:1])
        encoder.transform(items[:8])
    base = _peak_rss_mib()
    start = time.perf_counter()
    out = encoder.transform(items)
    seconds = time.perf_counter() - start
    assert np.isfinite(out).all()
    return {
        "items": len(items),
        "seconds": seconds,
        "peak_above_model_mib": _peak_rss_mib() - base,
        "output_mib": out.nbytes / 2**20,
    }


def run_child(kind, size, precision):
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(size), "--precision", precision],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-factors", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--text-sizes", type=int, nargs="*", default=[10_000, 40_000, 160_000])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.precision)))
        return

    print(f"Machine: {machine_description()}")
    print(f"precision={args.precision}; each size in a fresh process; memory = peak resident set above the "
          "level after loading the model and a warm-up batch\n")
    print(f"{'input':<34} {'items':>8} {'time (this machine)':>20} {'items/s':>8} {'time per item vs first':>23} "
          f"{'peak memory':>12} {'of which output':>16}")
    for kind, sizes, label in [
        ("image", args.image_factors, "hymenoptera files x {}"),
        ("text", args.text_sizes, "SST-2 sentences, {} distinct"),
    ]:
        first = None
        for size in sizes:
            r = run_child(kind, size, args.precision)
            per_item = r["seconds"] / r["items"]
            first = first or per_item
            print(f"{label.format(size):<34} {r['items']:>8} {r['seconds']:>18.1f} s {r['items'] / r['seconds']:>8.1f} "
                  f"{per_item / first:>22.2f}x {r['peak_above_model_mib']:>9.0f} MiB {r['output_mib']:>12.0f} MiB")


if __name__ == "__main__":
    main()
