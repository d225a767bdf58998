"""Fine-tuning on a small photo set: hymenoptera, frozen MobileNetV2 vs top blocks vs the whole network.

Three ways to use ImageNet's MobileNetV2 (IMAGENET1K_V1) on the 244 training photos of ants and
bees, each scored on the 153 validation photos (never used for any choice):

* frozen: ``make_pipeline(ImageEncoder(...), LogisticRegression())``;
* top blocks: ``FineTuningClassifier(ImageEncoder(...))`` with its defaults: the top 4 of the 19
  feature blocks trained on the frozen blocks' cached output, epochs chosen on a 20 % split of
  the training photos, the frozen encoder kept when tuning does not beat it there;
* whole network: ``unfreeze="all"`` with augmentation (random resized crop and flip), decoding
  every photo every epoch.

Each is timed (fit, on this machine), over several seeds. Writes a JSON file with the figures.

Run: ``python examples/finetune_hymenoptera.py`` (about 10 minutes on 2 cores), or ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hymenoptera_transfer import DEFAULT_DATA, image_folder  # noqa: E402

from sktransfer import FineTuningClassifier, ImageEncoder  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "hymenoptera",
                        help="folder with train/ and val/ ImageFolder splits (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per fine-tuning method")
    parser.add_argument("--full-epochs", type=int, default=4, help="most epochs of whole-network tuning")
    parser.add_argument("--limit", type=int, default=None, help="photos per class and split (quick runs)")
    parser.add_argument("--output", type=Path, default=DOCS / "finetune_hymenoptera.json", help="JSON results")
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        print(f"hymenoptera not found under {args.data}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    X, y, classes = image_folder(args.data / "train", args.limit)
    X_val, y_val, _ = image_folder(args.data / "val", args.limit)

    def encoder():
        return ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu")

    rows = []

    def report(method, seed, clf, fit_s):
        acc = clf.score(X_val, y_val)
        row = {"method": method, "seed": seed, "val_accuracy": acc, "fit_seconds": round(fit_s, 1),
               "pickle_bytes": len(pickle.dumps(clf))}
        if isinstance(clf, FineTuningClassifier):
            row.update(kept_tuned=clf.tuned_, best_epoch=clf.best_epoch_, history=clf.history_,
                       seconds_per_epoch=round(float(np.mean([h["seconds"] for h in clf.history_[1:]])), 2))
        rows.append(row)
        kept = "" if "kept_tuned" not in row else ("tuned" if clf.tuned_ else "frozen kept")
        print(f"{method:<14} seed {seed}  val accuracy {acc:.3f}  fit {fit_s:6.1f} s  {kept}", flush=True)

    start = time.perf_counter()
    frozen = make_pipeline(encoder(), LogisticRegression(max_iter=1000)).fit(X, y)
    report("frozen", 0, frozen, time.perf_counter() - start)
    methods = {"top 4 blocks": {}, "whole network": {"unfreeze": "all", "max_epochs": args.full_epochs}}
    for method, params in methods.items():
        for seed in range(args.seeds):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                clf = FineTuningClassifier(encoder(), random_state=seed, **params).fit(X, y)
            report(method, seed, clf, time.perf_counter() - start)

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads")
    result = {"command": "python examples/finetune_hymenoptera.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": machine, "classes": classes,
              "train_photos": len(X), "val_photos": len(X_val), "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {args.output} ({machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
