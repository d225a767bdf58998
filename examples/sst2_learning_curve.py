"""What transfer learning buys with little labelled data: SST-2 sentiment, frozen MiniLM vs TF-IDF.

For each training-set size (50, 100, 200, 500, 1000 sentences, several random draws each, and
the full 6920) a LogisticRegression is trained on

* TextEncoder() features (sentence-transformers all-MiniLM-L6-v2, frozen), and
* TfidfVectorizer(ngram_range=(1, 2)) features fitted on the same training sentences,

and scored on the official SST-2 test split (1821 sentences). The first point uses no labels
at all: ``ZeroShotClassifier(TextEncoder(), labels={0: "a negative review", 1: "a positive
review"})`` picks the label text closest to each sentence. Every sentence is encoded once (the
zero-shot classifier reads the test vectors from the encoder's cache); the learning curve only
refits the logistic regressions. Prints a table and saves a PNG plot.

Run: ``make demo`` (sets everything up), or ``python examples/sst2_learning_curve.py --help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, TextEncoder, ZeroShotClassifier

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


def learning_curve(sizes, draws, seed, train_texts, y_train, test_texts, y_test, E_train, E_test):
    """Test accuracy of both models for each size; yields (size, emb_scores, tfidf_scores)."""
    rng = np.random.default_rng(seed)
    for size in sizes:
        n_draws = 1 if size >= len(train_texts) else draws
        emb_scores, tfidf_scores = [], []
        for _ in range(n_draws):
            idx = np.arange(len(train_texts)) if n_draws == 1 else rng.choice(len(train_texts), size, replace=False)
            head = LogisticRegression(max_iter=2000).fit(E_train[idx], y_train[idx])
            emb_scores.append(head.score(E_test, y_test))
            tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=2000))
            tfidf.fit([train_texts[i] for i in idx], y_train[idx])
            tfidf_scores.append(tfidf.score(test_texts, y_test))
        yield min(size, len(train_texts)), np.asarray(emb_scores), np.asarray(tfidf_scores)


def figure(rows, model: str, n_test: int, zero_shot: float | None = None):
    """The learning-curve figure: accuracy on the ``n_test`` test sentences against labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 5.2))
    for label, col, color in [(f"TextEncoder({model}) + LogisticRegression", 1, "tab:blue"),
                              ("TF-IDF (1-2 grams) + LogisticRegression", 2, "tab:orange")]:
        mean = np.array([r[col].mean() for r in rows])
        std = np.array([r[col].std() for r in rows])
        ax.plot(sizes, mean, "o-", label=label, color=color)
        ax.fill_between(sizes, mean - std, mean + std, alpha=0.2, color=color)
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
    shutil.rmtree(cache.path, ignore_errors=True)
    n = len(train_texts) + len(test_texts)
    print(f"Encoded {n} sentences once with TextEncoder({args.model!r}, precision={args.precision!r}) "
          f"on {encoder.device_}: {elapsed:.0f} s ({n / elapsed:.0f} sentences/s, incl. model load)")

    rows = []
    print(f"\n{'train size':>10} | {'draws':>5} | {'TextEncoder + LR':>18} | {'TF-IDF + LR':>18} | gain")
    print("-" * 70)
    print(f"{0:>10} | {'-':>5} | {zero_shot_accuracy:.3f} (zero-shot)  | {'-':>18} |  (labels "
          f"{list(ZERO_SHOT_LABELS.values())})")
    for size, emb, tfidf in learning_curve(args.sizes, args.draws, args.seed, train_texts, y_train,
                                           test_texts, y_test, E_train, E_test):
        rows.append((size, emb, tfidf))
        print(f"{size:>10} | {len(emb):>5} | {emb.mean():.3f} +/- {emb.std():.3f}    | "
              f"{tfidf.mean():.3f} +/- {tfidf.std():.3f}    | {emb.mean() - tfidf.mean():+.3f}")
    plot(rows, args.output, args.model, len(test_texts), zero_shot_accuracy)
    print(f"\nLearning curve saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
