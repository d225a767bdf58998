"""Fine-tuning cost per epoch: top blocks on cached activations vs the whole network with augmentation.

Both train MobileNetV2 (IMAGENET1K_V1) with a new linear layer on the hymenoptera training photos,
through the tuner FineTuningClassifier uses, in one process, alternating epochs. Baseline: the whole
network with augmentation (random resized crop and flip), what the PyTorch tutorial's fine-tuning
loop does, decoding every photo every epoch. Candidates: the top 4 of the 19 feature blocks on the
frozen blocks' output, computed once (reported as its own one-off cost), at fp32 and bf16 autocast.

Usage: python benchmarks/bench_finetune.py [--data DIR] [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Table, hymenoptera_files, machine_description, summary, time_alternating  # noqa: E402

from sktransfer import ImageEncoder  # noqa: E402
from sktransfer._tune_images import ImageTuner  # noqa: E402


def tuner(files, labels, unfreeze, augment, precision):
    encoder = ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu", precision=precision).fit(files[:1])
    tuned = ImageTuner(encoder, unfreeze=unfreeze, augment=augment, learning_rate=1e-4, batch_size=32,
                       max_epochs=1, precision=precision, seed=0)
    tuned.start(files, np.arange(len(files)), labels)
    return tuned


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the hymenoptera images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training photos (smoke test)")
    args = parser.parse_args(argv)

    files = [f for f in hymenoptera_files(args.data) if "/train/" in f and not f.endswith(".gif")][: args.limit]
    labels = np.array([0 if "/ants/" in f else 1 for f in files])
    print(f"Machine: {machine_description()}")
    full = tuner(files, labels, "all", True, "fp32")
    top = tuner(files, labels, 4, False, "fp32")
    top_bf16 = tuner(files, labels, 4, False, "bf16")
    once = {}
    for name, candidate in [("top 4 blocks, fp32", top), ("top 4 blocks, bf16", top_bf16)]:
        start = time.perf_counter()
        _ = candidate.activations  # the frozen 15 blocks, once per photo (a cached property)
        once[name] = time.perf_counter() - start
    epochs = iter(range(1, 10_000))
    quiet = lambda batches: batches  # noqa: E731
    times = time_alternating(
        {
            "whole network + augmentation (baseline)": lambda: full.train_epoch(next(epochs), quiet),
            "top 4 blocks, fp32": lambda: top.train_epoch(next(epochs), quiet),
            "top 4 blocks, bf16": lambda: top_bf16.train_epoch(next(epochs), quiet),
        },
        args.repeats,
    )
    base = np.median(times["whole network + augmentation (baseline)"])
    rows = [[name, summary(seconds), f"{base / np.median(seconds):.1f}x",
             f"{once[name]:.1f} s" if name in once else "none (decodes every epoch)"]
            for name, seconds in times.items()]
    table = Table(
        f"Fine-tuning: one epoch over {len(files)} hymenoptera training photos, MobileNetV2 IMAGENET1K_V1, batch 32, "
        f"{args.repeats} alternating repetitions",
        ["training", "time per epoch (this machine)", "vs baseline", "one-off frozen pass"],
        rows,
        notes=["The one-off frozen pass computes the lower 15 blocks' output for every photo (cached by the "
               "EmbeddingCache when one is given, so a grid over learning rates pays it once).",
               "bf16 autocast pays only on CPUs with bf16 instructions (AVX-512 BF16, AMX); without them it is "
               "emulated and slower than fp32 (benchmarks/bench_precision_cpu.py tells in a minute)."],
        chart={"kind": "bar", "labels": list(times), "values": [np.median(t) for t in times.values()],
               "xlabel": "seconds per epoch (this machine)"},
    )
    return [table.show()]


if __name__ == "__main__":
    main()
