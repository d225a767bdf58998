"""Does fine-tuning pay with few labels? SST-2: frozen MiniLM vs FineTuningClassifier.

For each training-set size (50, 100, 200, 500 sentences) and several random draws, two models
are fitted on the same sentences and scored on the official SST-2 test split (1821 sentences):

* frozen: ``make_pipeline(TextEncoder(), LogisticRegression())``;
* fine-tuned: ``FineTuningClassifier(TextEncoder())`` with its defaults (SetFit-style contrastive
  tuning of all-MiniLM-L6-v2 on a stratified 80 % of the sentences, epochs chosen on the other
  20 %, the frozen encoder kept when tuning does not beat it there; LogisticRegression head).

Prints a table, and writes the figures to a JSON file and a PNG plot.

Run: ``python examples/finetune_sst2.py`` (about 20 minutes on 2 cores), or ``--help``.
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
from sst2_learning_curve import DEFAULT_DATA, read_sst2, subsample  # noqa: E402

from sktransfer import FineTuningClassifier, TextEncoder  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding sst2/ (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--draws", type=int, default=3, help="random training sets per size")
    parser.add_argument("--unfreeze", default="auto", help='FineTuningClassifier(unfreeze=...): "auto", "all", '
                        '"lora" or a number of top layers (default: %(default)s)')
    parser.add_argument("--test-size", type=int, default=None, help="score on the first N test sentences only")
    parser.add_argument("--output", type=Path, default=DOCS / "finetune_sst2.json", help="JSON results")
    parser.add_argument("--plot", type=Path, default=DOCS / "img" / "finetune_sst2.png", help="PNG plot")
    args = parser.parse_args(argv)
    folder = args.data / "sst2"
    if not (folder / "stsa.binary.train").exists():
        print(f"SST-2 not found under {folder}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    train_texts, train_labels = read_sst2(folder / "stsa.binary.train")
    test_texts, test_labels = read_sst2(folder / "stsa.binary.test")
    if args.test_size:
        test_texts, test_labels = test_texts[: args.test_size], test_labels[: args.test_size]

    rows = []
    print(f"{'n':>5} {'draw':>4} {'frozen':>7} {'tuned':>7} {'gain':>6} {'kept':>7} {'fit s':>6}")
    for n in args.sizes:
        for draw in range(args.draws):
            X, y = subsample(train_texts, train_labels, n, seed=draw)
            frozen = make_pipeline(TextEncoder(device="cpu"), LogisticRegression(max_iter=1000)).fit(X, y)
            frozen_acc = frozen.score(test_texts, test_labels)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # small validation split; frozen kept
                unfreeze = int(args.unfreeze) if args.unfreeze.isdigit() else args.unfreeze
                clf = FineTuningClassifier(TextEncoder(device="cpu"), unfreeze=unfreeze, random_state=draw).fit(X, y)
            fit_s = time.perf_counter() - start
            tuned_acc = clf.score(test_texts, test_labels)
            rows.append({"n": n, "draw": draw, "frozen": frozen_acc, "tuned": tuned_acc, "kept_tuned": clf.tuned_,
                         "best_epoch": clf.best_epoch_, "fit_seconds": round(fit_s, 1),
                         "pickle_bytes": len(pickle.dumps(clf)), "history": clf.history_})
            print(f"{n:>5} {draw:>4} {frozen_acc:>7.3f} {tuned_acc:>7.3f} {100 * (tuned_acc - frozen_acc):>+6.1f} "
                  f"{'tuned' if clf.tuned_ else 'frozen':>7} {fit_s:>6.0f}", flush=True)

    print("\nmean over draws (test accuracy):")
    summary = []
    for n in args.sizes:
        mine = [r for r in rows if r["n"] == n]
        frozen, tuned = np.array([r["frozen"] for r in mine]), np.array([r["tuned"] for r in mine])
        summary.append({"n": n, "frozen_mean": frozen.mean(), "frozen_std": frozen.std(), "tuned_mean": tuned.mean(),
                        "tuned_std": tuned.std(), "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in mine]))})
        print(f"  n={n:>4}: frozen {frozen.mean():.3f} +- {frozen.std():.3f}, fine-tuned {tuned.mean():.3f} +- "
              f"{tuned.std():.3f} ({100 * (tuned.mean() - frozen.mean()):+.1f} points), fit "
              f"{summary[-1]['fit_seconds_mean']:.0f} s")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads")
    result = {"command": "python examples/finetune_sst2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "machine": machine, "test_sentences": len(test_texts),
              "summary": summary, "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
    plot(summary, args.plot)
    print(f"\nwrote {args.output} and {args.plot} ({machine})")
    return 0


def plot(summary: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [s["n"] for s in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in [("frozen", "frozen MiniLM + LogisticRegression"), ("tuned", "FineTuningClassifier (defaults)")]:
        ax.errorbar(n, [s[f"{key}_mean"] for s in summary], yerr=[s[f"{key}_std"] for s in summary], marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(n, [str(v) for v in n])
    ax.minorticks_off()
    ax.set_xlabel("labelled training sentences")
    ax.set_ylabel("SST-2 test accuracy")
    ax.set_title("Fine-tuning with few labels (mean +- std over draws)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
