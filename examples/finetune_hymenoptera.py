"""Fine-tuning on small photo sets: frozen MobileNetV2 + a tuned head vs FineTuningClassifier.

MobileNetV2 (IMAGENET1K_V1) on three photo tasks, each scored on held-out photos never used for
any choice:

* ``hymenoptera``: all 244 training photos of ants and bees, scored on the 153 validation photos,
  one fit per seed;
* ``hymenoptera-10``: 10 training photos per class drawn at random (a draw per seed), the same
  153 validation photos;
* ``fashion-10``: the fashion catalogue's photos of every ``articleType`` with at least 40 photos
  (23 classes), 10 training photos per class drawn at random and 30 other photos per class to
  score on (a fresh draw per seed).

Two models per draw, on the same photos: frozen + ``sktransfer.heads.tuned_head`` (StandardScaler +
LogisticRegressionCV, C chosen on the training photos only), and ``FineTuningClassifier`` with its
defaults (the top 4 feature blocks on the frozen blocks' cached output; frozen and tuned judged
with the same tuned head over 3 validation splits of the training photos; tuned kept only beyond
the spread). ``--whole-network`` adds ``unfreeze="all"`` with augmentation (slow: decodes every
photo every epoch). Writes the figures to a JSON file.

Run: ``python examples/finetune_hymenoptera.py`` (about 12 minutes on 2 AVX-512 cores), or ``--help``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hymenoptera_transfer import DEFAULT_DATA, image_folder  # noqa: E402

from sktransfer import FineTuningClassifier, ImageEncoder  # noqa: E402
from sktransfer.heads import tuned_head  # noqa: E402
from sktransfer.speed import machine_description  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
TASKS = ["hymenoptera", "hymenoptera-10", "fashion-10"]


def per_class(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows of ``n`` items per class (all of a smaller class), drawn with ``rng``."""
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]))


def task(name: str, data: Path, seed: int, limit: int | None):
    """(train paths, train labels, test paths, test labels) of one draw of ``name``."""
    rng = np.random.default_rng(seed)
    if name.startswith("hymenoptera"):
        X, y, _ = image_folder(data / "hymenoptera" / "train", limit)
        X_test, y_test, _ = image_folder(data / "hymenoptera" / "val", limit)
        if name == "hymenoptera-10":
            rows = per_class(y, 10, rng)
            X, y = [X[i] for i in rows], y[rows]
        return X, y, X_test, y_test
    folder = data / "fashion_products"
    styles = pd.read_csv(folder / "styles.csv")
    counts = styles["articleType"].value_counts()
    styles = styles[styles["articleType"].isin(counts.index[counts >= 40])].reset_index(drop=True)
    if limit:
        styles = styles.groupby("articleType").head(limit + 3).reset_index(drop=True)
    labels = styles["articleType"].to_numpy()
    train = per_class(labels, min(10, limit or 10), rng)
    rest = np.setdiff1d(np.arange(len(labels)), train)
    test = rest[per_class(labels[rest], min(30, limit or 30), rng)]
    paths = np.array([str(folder / "images" / f) for f in styles["image"]], dtype=object)
    return list(paths[train]), labels[train], list(paths[test]), labels[test]


def markdown_table(result: dict) -> str:
    """One row per task and method of a results file: held-out accuracy, gains over frozen + tuned head."""
    what = {"hymenoptera": "hymenoptera, {n_train} training photos, {n_test} validation photos scored",
            "hymenoptera-10": "hymenoptera, 10 photos per class ({n_train}), {n_test} validation photos scored",
            "fashion-10": "fashion photos, {classes} article types, 10 per class ({n_train}), {n_test} others scored"}
    lines = ["| task | method | fits | frozen + tuned head | `FineTuningClassifier()` | gains, one per fit | "
             "tuning kept | fit s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in result["summary"]:
        runs = [r for r in result["runs"] if r["task"] == s["task"] and r["method"] == s["method"]]
        task = what[s["task"]].format(**runs[0])
        cells = [task, s["method"], str(s["fits"]), f"{s['frozen_mean']:.3f}", f"{s['finetuned_mean']:.3f}",
                 ", ".join(f"{r['gain_points']:+.1f}" for r in runs), f"{s['kept_tuned']} of {s['fits']}",
                 f"{min(r['fit_seconds'] for r in runs):.1f}-{max(r['fit_seconds'] for r in runs):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding hymenoptera/ and "
                        "fashion_products/ (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--seeds", type=int, default=3, help="fits (draws, for the -10 tasks) per task")
    parser.add_argument("--whole-network", action="store_true", help='also unfreeze="all" with augmentation')
    parser.add_argument("--full-epochs", type=int, default=4, help="most epochs of whole-network tuning")
    parser.add_argument("--limit", type=int, default=None, help="photos per class and split (smoke runs)")
    parser.add_argument("--output", type=Path, default=DOCS / "finetune_hymenoptera.json", help="JSON results")
    parser.add_argument("--table", action="store_true", help="fit nothing: print the table of --output as "
                        "markdown (the one docs/adapting.md shows)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.output.read_text())))
        return 0
    if not (args.data / "hymenoptera" / "train").is_dir():
        print(f"hymenoptera not found under {args.data}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2

    def encoder():
        return ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu")

    methods = {"top 4 blocks": {}}
    if args.whole_network:
        methods["whole network"] = {"unfreeze": "all", "max_epochs": args.full_epochs}
    rows = []
    print(f"{'task':<15} {'seed':>4} {'method':<14} {'frozen+tuned head':>17} {'fine-tuned':>10} {'gain':>6} "
          f"{'kept':>6} {'fit s':>6}")
    for name in args.tasks:
        for seed in range(args.seeds):
            X, y, X_test, y_test = task(name, args.data, seed, args.limit)
            frozen_encoder = encoder().fit(X)
            head = tuned_head(y).fit(frozen_encoder.transform(X), y)
            # accuracy_score, not head.score: LogisticRegressionCV scores by its scoring (log loss here)
            frozen = float(accuracy_score(y_test, head.predict(frozen_encoder.transform(X_test))))
            for method, params in methods.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the frozen encoder kept; small splits
                    clf = FineTuningClassifier(encoder(), random_state=seed, show_progress=False,
                                               **params).fit(X, y)
                fit_s = time.perf_counter() - start
                tuned = float(clf.score(X_test, y_test))
                rows.append({"task": name, "seed": seed, "method": method, "n_train": len(X), "n_test": len(X_test),
                             "classes": len(np.unique(y)), "frozen_tuned_head": frozen, "finetuned": tuned,
                             "gain_points": 100 * (tuned - frozen), "kept_tuned": clf.tuned_,
                             "best_epoch": clf.best_epoch_, "decision": clf.decision_,
                             "fit_seconds": round(fit_s, 1), "pickle_bytes": len(pickle.dumps(clf))})
                print(f"{name:<15} {seed:>4} {method:<14} {frozen:>17.3f} {tuned:>10.3f} "
                      f"{100 * (tuned - frozen):>+6.1f} {'tuned' if clf.tuned_ else 'frozen':>6} {fit_s:>6.0f}",
                      flush=True)

    print("\nmean over seeds (held-out accuracy), worst gain:")
    summary = []
    for name in args.tasks:
        for method in methods:
            mine = [r for r in rows if r["task"] == name and r["method"] == method]
            gains = [r["gain_points"] for r in mine]
            summary.append({"task": name, "method": method, "frozen_mean": np.mean([r["frozen_tuned_head"] for r in mine]),
                            "finetuned_mean": np.mean([r["finetuned"] for r in mine]), "mean_gain_points": np.mean(gains),
                            "worst_gain_points": min(gains), "kept_tuned": sum(r["kept_tuned"] for r in mine),
                            "fits": len(mine), "fit_seconds_mean": np.mean([r["fit_seconds"] for r in mine])})
            s = summary[-1]
            print(f"  {name:<15} {method:<14} frozen+tuned head {s['frozen_mean']:.3f}, fine-tuned "
                  f"{s['finetuned_mean']:.3f} ({s['mean_gain_points']:+.1f} points, worst {s['worst_gain_points']:+.1f}), "
                  f"tuned kept {s['kept_tuned']}/{s['fits']}, fit {s['fit_seconds_mean']:.0f} s")
    machine = machine_description()
    result = {"command": "python examples/finetune_hymenoptera.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": machine,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "summary": summary, "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {args.output} ({machine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
