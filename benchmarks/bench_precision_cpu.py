"""Is bf16 worth it on this CPU? TextEncoder at bf16 against fp32 (the baseline), alternating.

bf16 is fast only on CPUs with bf16 instructions (AVX-512 BF16, AMX); elsewhere torch runs it
through reference kernels and it is several times slower than fp32. This prints the CPU's
capability, its bf16 flags and the measured ratio, so users can check their own machine in a
minute before choosing ``precision="bf16"``.

Usage: python benchmarks/bench_precision_cpu.py [--limit 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, machine_description, read_sst2, summary, time_alternating  # noqa: E402

from sktransfer import TextEncoder  # noqa: E402


def bf16_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag in {"avx512_bf16", "amx_bf16"}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="SST-2 training sentences to encode")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    texts = read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0][: args.limit]
    encoders = {precision: TextEncoder(device="cpu", precision=precision).fit(texts[:1]) for precision in ("fp32", "bf16")}
    for encoder in encoders.values():
        encoder.transform(texts[:32])  # warm-up outside the timing
    times = time_alternating({p: (lambda e=e: e.transform(texts)) for p, e in encoders.items()}, args.repeats)
    ratio = np.median(times["bf16"]) / np.median(times["fp32"])
    print(f"Machine: {machine_description()}; bf16 flags: {', '.join(bf16_flags()) or 'none'}")
    print(f"TextEncoder(all-MiniLM-L6-v2), {len(texts)} SST-2 sentences, {args.repeats} alternating repetitions")
    print(f"  fp32 (baseline): {summary(times['fp32'])}")
    print(f"  bf16:            {summary(times['bf16'])}  ({ratio:.2f}x the fp32 time)")


if __name__ == "__main__":
    main()
