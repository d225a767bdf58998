"""ImageEncoder vs the tutorial-style torchvision loop, same model and files, in one process.

Baseline (what the PyTorch transfer-learning tutorial and most blog posts do): open each file with
PIL, apply ``weights.transforms()``, stack 32 images, forward, repeat; one process, no overlap.
Candidates: ImageEncoder at fp32 and at bf16 (autocast). Also reported: decode+preprocess alone and
the network alone, so the bottleneck is visible, and the two presets alone (torchvision's, which
resizes the PIL image, and ImageEncoder's, which resizes the 8-bit tensor) on decoded images. Prints times, images/s, ratios and the cosine
similarity of the features to the baseline's.

Usage: python benchmarks/bench_images.py [--data DIR] [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Table, cosine_rows, hymenoptera_files, machine_description, summary, time_alternating,
)

from sktransfer import ImageEncoder  # noqa: E402
from sktransfer._runtime import default_num_workers  # noqa: E402


def resolved_workers(encoder, n_items: int) -> int:
    """The decoding processes the encoder's DataLoader uses for ``n_items`` (``_runtime.data_loader``'s rule)."""
    if encoder.num_workers != "auto":
        return encoder.num_workers
    return 0 if n_items <= encoder.batch_size else default_num_workers(torch.device(encoder.device_))


def tutorial_loop(files, model, transform, batch_size=32):
    """The hand-written loop users write: decode, transform, stack, forward."""
    feats = []
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[start : start + batch_size]])
            feats.append(model(batch))
    return torch.cat(feats).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the hymenoptera images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files (smoke test)")
    args = parser.parse_args(argv)

    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    files = hymenoptera_files(args.data)[: args.limit]
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    model = mobilenet_v2(weights=weights).eval()
    model.classifier = torch.nn.Identity()  # same penultimate features as ImageEncoder's default
    transform = weights.transforms()
    fp32 = ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu").fit(files)
    bf16 = ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu", precision="bf16").fit(files)
    print(f"Machine: {machine_description()}")

    results = {}
    reference = tutorial_loop(files, model, transform)
    photos = np.array([not f.endswith(".gif") for f in files])  # the data set has one placeholder GIF
    for name, encoder in [("ImageEncoder fp32", fp32), ("ImageEncoder bf16", bf16)]:
        cos = cosine_rows(encoder.transform(files), reference)
        results[name] = (cos.min(), cos[photos].min() if photos.any() else float("nan"))
    preprocessed = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[:64]])
    decoded = [Image.open(f).convert("RGB") for f in files]
    preset = fp32.preprocess_  # ImageEncoder's own: the resize on the 8-bit tensor

    def network_only():
        with torch.inference_mode():
            for start in range(0, len(files), 32):
                model(preprocessed[: min(32, len(files) - start)])

    times = time_alternating(
        {
            "tutorial loop (baseline)": lambda: tutorial_loop(files, model, transform),
            "ImageEncoder fp32": lambda: fp32.transform(files),
            "ImageEncoder bf16": lambda: bf16.transform(files),
            "decode + preprocess only": lambda: [transform(Image.open(f).convert("RGB")) for f in files],
            "decode + preprocess only, ImageEncoder's preset": lambda: [preset(Image.open(f).convert("RGB"))
                                                                        for f in files],
            "preprocess only: weights.transforms() (PIL resize)": lambda: [transform(image) for image in decoded],
            "preprocess only: ImageEncoder's preset (8-bit tensor resize)": lambda: [preset(image) for image in decoded],
            "network only, fp32 NCHW": network_only,
        },
        args.repeats,
    )
    base = np.median(times["tutorial loop (baseline)"])
    rows = []
    for name, seconds in times.items():
        median = np.median(seconds)
        cos = [f"{results[name][0]:.6f}", f"{results[name][1]:.6f}"] if name in results else ["", ""]
        rows.append([name, summary(seconds), f"{len(files) / median:.1f}", f"{base / median:.2f}x", *cos])
    table = Table(
        f"Images: {len(files)} hymenoptera files, MobileNetV2 IMAGENET1K_V1, batch 32, ImageEncoder "
        f"num_workers={resolved_workers(fp32, len(files))}, {args.repeats} alternating repetitions",
        ["pipeline", "time (this machine)", "images/s", "vs baseline", "min cosine", "min cosine (photos)"],
        rows,
        notes=[
            "min cosine: lowest cosine similarity of a file's features to the baseline's; (photos) excludes the "
            "placeholder imageNotFound.gif, a flat image on which bf16 rounding weighs most.",
            "decode + preprocess only and network only split the baseline's time, so the bottleneck is visible; "
            "preprocess only runs on images already decoded (the same RGB images for both presets).",
        ],
        chart={"kind": "bar", "labels": list(times), "values": [len(files) / np.median(t) for t in times.values()],
               "xlabel": "images per second (this machine)"},
    )
    return [table.show()]


if __name__ == "__main__":
    main()
