"""What transfer learning buys with little labelled data: SST-2 sentiment, from zero labels to all.

For each training-set size (50, 100, 200, 500, 1000 sentences, several random draws each, and
the full 6920), on the same sentences, scored on the official SST-2 test split (1821 sentences):

* frozen: TextEncoder() features (sentence-transformers all-MiniLM-L6-v2) + the tuned head
  (``sktransfer.heads.tuned_head``: StandardScaler + LogisticRegressionCV, C chosen on the
  training sentences only);
* TF-IDF: TfidfVectorizer(ngram_range=(1, 2)) + LogisticRegressionCV over the same C values;
* few-shot: ``FewShotClassifier`` (the label texts blended with the labelled sentences);
* fine-tuned: ``FineTuningClassifier(TextEncoder())`` with its defaults, at ``--finetune-sizes``
  and ``--finetune-draws`` draws each (the first draws of the frozen curve; each fit takes minutes).

The first point uses no labels at all: ``ZeroShotClassifier(TextEncoder(), labels={0: "a negative
review", 1: "a positive review"})`` picks the label text closest to each sentence. Every sentence
is encoded once for the frozen curves (the zero-shot and few-shot classifiers read the vectors
from the encoder's cache). Prints a table and saves a PNG plot.

Run: ``make demo`` (sets everything up), or ``python examples/sst2_learning_curve.py --help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, FewShotClassifier, FineTuningClassifier, TextEncoder, ZeroShotClassifier
from sktransfer.heads import C_GRID, tuned_head

#: The curves, in the table's and the plot's order.
SERIES = ["frozen + tuned head", "TF-IDF + tuned LR", "few-shot", "fine-tuned"]

#: The zero-shot label texts, fixed before looking at any score (never tuned on the test set).
ZERO_SHOT_LABELS = {0: "a negative review", 1: "a positive review"}

DEFAULT_DATA = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    """Read one SST-2 split: ``<label> <sentence>`` per line, latin-1."""
    texts, labels = [], []
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            line = line.strip()
            if line:
                labels.append(int(line[0]))
                texts.append(line[2:])
    return texts, np.asarray(labels)


def subsample(texts, labels, n, seed):
    """A random subset of ``n`` items, stratified by label."""
    from sklearn.model_selection import train_test_split

    if n >= len(texts):
        return texts, labels
    idx, _ = train_test_split(np.arange(len(texts)), train_size=n, stratify=labels, random_state=seed)
    return [texts[i] for i in idx], labels[idx]


def draws_of(size: int, n_train: int, draws: int, seed: int) -> list:
    """The training rows of each draw at ``size``: all of them once when ``size`` reaches the training set."""
    if size >= n_train:
        return [np.arange(n_train)]
    rng = np.random.default_rng(seed + size)
    return [rng.choice(n_train, size, replace=False) for _ in range(draws)]


def learning_curve(sizes, draws, seed, train_texts, y_train, test_texts, y_test, E_train, E_test, encoder,
                   finetune_sizes=(), finetune_draws=1, finetune_params=None):
    """Test accuracy of every series for each size; yields ``(size, {series: scores})``."""
    for size in sizes:
        scores = {name: [] for name in SERIES}
        for k, idx in enumerate(draws_of(size, len(train_texts), draws, seed)):
            X, y = [train_texts[i] for i in idx], y_train[idx]
            # accuracy_score, not .score: LogisticRegressionCV scores by its scoring (log loss here)
            head = tuned_head(y).fit(E_train[idx], y)
            scores["frozen + tuned head"].append(accuracy_score(y_test, head.predict(E_test)))
            tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)),
                                  LogisticRegressionCV(Cs=C_GRID, scoring="neg_log_loss", l1_ratios=(0.0,),
                                                       use_legacy_attributes=False, max_iter=2000))
            scores["TF-IDF + tuned LR"].append(accuracy_score(y_test, tfidf.fit(X, y).predict(test_texts)))
            quiet = clone(encoder).set_params(show_progress=False)  # the same cache: its vectors are read, not encoded
            few = FewShotClassifier(quiet, labels=ZERO_SHOT_LABELS, template=None, random_state=k).fit(X, y)
            scores["few-shot"].append(few.score(test_texts, y_test))
            if size in finetune_sizes and k < finetune_draws:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "kept the frozen encoder" is in the table
                    tuned = FineTuningClassifier(TextEncoder(model=encoder.model, precision=encoder.precision),
                                                 random_state=k, **(finetune_params or {}))
                    scores["fine-tuned"].append(tuned.fit(X, y).score(test_texts, y_test))
        yield min(size, len(train_texts)), {name: np.asarray(values) for name, values in scores.items()}


def figure(rows, model: str, n_test: int, zero_shot: float | None = None):
    """The learning-curve figure: accuracy on the ``n_test`` test sentences against labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 5.6))
    colors = {"frozen + tuned head": "tab:blue", "TF-IDF + tuned LR": "tab:orange", "few-shot": "tab:purple",
              "fine-tuned": "tab:red"}
    labels = {"frozen + tuned head": f"TextEncoder({model}) + tuned head (frozen)",
              "TF-IDF + tuned LR": "TF-IDF (1-2 grams) + tuned LogisticRegression",
              "few-shot": "FewShotClassifier (label names + labels)",
              "fine-tuned": "FineTuningClassifier (defaults)"}
    for name in SERIES:
        points = [(size, scores[name]) for size, scores in rows if len(scores.get(name, ()))]
        if not points:
            continue
        x = [size for size, _ in points]
        mean = np.array([values.mean() for _, values in points])
        std = np.array([values.std() for _, values in points])
        ax.plot(x, mean, "o-" if name != "fine-tuned" else "s--", label=labels[name], color=colors[name])
        if name != "fine-tuned":
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=colors[name])
    if zero_shot is not None:
        at = sizes[0] / 2
        ax.plot([at], [zero_shot], "D", color="tab:green", label="ZeroShotClassifier(TextEncoder()): 0 labels")
        ax.annotate(f"{zero_shot:.3f}", (at, zero_shot), textcoords="offset points", xytext=(6, -12), fontsize=8)
    ax.set_xscale("log")
    # Ticks at the measured sizes, in plain numbers; the zero-shot point sits at "0".
    ticks = ([sizes[0] / 2] if zero_shot is not None else []) + sizes
    ax.set_xticks(ticks, (["0"] if zero_shot is not None else []) + [str(size) for size in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled training sentences (log scale)")
    ax.set_ylabel(f"SST-2 test accuracy ({n_test} sentences)")
    ax.set_title("Transfer learning with little labelled data")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    # Under the axes, where it can cover no point whatever the curves do.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def plot(rows, path: Path, model: str, n_test: int, zero_shot: float | None = None) -> None:
    """Save :func:`figure` as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(rows, model, n_test, zero_shot)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "sst2",
                        help="folder with stsa.binary.train and stsa.binary.test (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 1000, 10**9],
                        help="training-set sizes; a size beyond the training set means all of it")
    parser.add_argument("--draws", type=int, default=5, help="random draws per size (default: %(default)s)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="TextEncoder model (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only a stratified random N training and N test sentences (quick check)")
    parser.add_argument("--finetune-sizes", type=int, nargs="*", default=[100],
                        help="sizes at which FineTuningClassifier is fitted too (default: %(default)s; none: skip)")
    parser.add_argument("--finetune-draws", type=int, default=1, help="fine-tuned draws per size (default: %(default)s)")
    parser.add_argument("--finetune-unfreeze", default="auto",
                        help='FineTuningClassifier(unfreeze=...): "auto" (the default recipe) or a number of top layers')
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="FineTuningClassifier(max_epochs=...) (default: the recipe's)")
    parser.add_argument("--output", type=Path, default=Path("output") / "sst2_learning_curve.png",
                        help="where to save the plot (default: %(default)s)")
    args = parser.parse_args(argv)

    train_file, test_file = args.data / "stsa.binary.train", args.data / "stsa.binary.test"
    if not (train_file.exists() and test_file.exists()):
        print(f"SST-2 not found in {args.data} (need stsa.binary.train and stsa.binary.test). "
              "Pass --data DIR or set SKTRANSFER_DATA to the folder that holds sst2/.", file=sys.stderr)
        return 2
    train_texts, y_train = read_sst2(train_file)
    test_texts, y_test = read_sst2(test_file)
    if args.limit:
        train_texts, y_train = subsample(train_texts, y_train, args.limit, args.seed)
        test_texts, y_test = subsample(test_texts, y_test, args.limit, args.seed)
    print(f"SST-2: {len(train_texts)} training and {len(test_texts)} test sentences from {args.data}")

    cache = EmbeddingCache(tempfile.mkdtemp(prefix="sktransfer-demo-cache-"))
    encoder = TextEncoder(model=args.model, precision=args.precision, show_progress=True, cache=cache)
    start = time.perf_counter()
    encoder.fit(train_texts)
    E_train = encoder.transform(train_texts)
    E_test = encoder.transform(test_texts)
    elapsed = time.perf_counter() - start
    # Zero labels: the label texts closest to each test sentence (its vectors come from the cache).
    zero_shot = ZeroShotClassifier(encoder, labels=ZERO_SHOT_LABELS, template=None).fit(train_texts[:1])
    zero_shot_accuracy = zero_shot.score(test_texts, y_test)
    n = len(train_texts) + len(test_texts)
    print(f"Encoded {n} sentences once with TextEncoder({args.model!r}, precision={args.precision!r}) "
          f"on {encoder.device_}: {elapsed:.0f} s ({n / elapsed:.0f} sentences/s, incl. model load)")

    rows = []
    unfreeze = int(args.finetune_unfreeze) if args.finetune_unfreeze.isdigit() else args.finetune_unfreeze
    header = " | ".join(f"{name:>19}" for name in SERIES)
    print(f"\n{'train size':>10} | {'draws':>5} | {header}")
    print("-" * (21 + 22 * len(SERIES)))
    print(f"{0:>10} | {'-':>5} | {'zero-shot ' + format(zero_shot_accuracy, '.3f'):>19} |  (labels "
          f"{list(ZERO_SHOT_LABELS.values())})")
    try:
        for size, scores in learning_curve(args.sizes, args.draws, args.seed, train_texts, y_train, test_texts,
                                           y_test, E_train, E_test, encoder, set(args.finetune_sizes),
                                           args.finetune_draws,
                                           {"unfreeze": unfreeze, "max_epochs": args.finetune_epochs}):
            rows.append((size, scores))
            cells = [f"{v.mean():.3f} +/- {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}" if len(v) else "-"
                     for v in (scores[name] for name in SERIES)]
            print(f"{size:>10} | {len(scores[SERIES[0]]):>5} | " + " | ".join(f"{c:>19}" for c in cells), flush=True)
    finally:
        shutil.rmtree(cache.path, ignore_errors=True)
    plot(rows, args.output, args.model, len(test_texts), zero_shot_accuracy)
    print(f"\nLearning curve saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
