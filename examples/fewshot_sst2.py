"""A few labels plus the label names: FewShotClassifier on SST-2 against zero-shot and a tuned frozen head.

For each number of labelled sentences (default 8, 16, 32, 50, 100, 200; stratified random draws from the
training split), three classifiers on frozen all-MiniLM-L6-v2 embeddings are scored on the same
sentences of the chosen split (``--split test``: the official 1821 test sentences; ``--split dev``:
the 872 dev sentences, where this project made its choices):

* zero-shot: ``ZeroShotClassifier(TextEncoder(), labels=LABELS)``, no labels at all;
* frozen + tuned head: ``StandardScaler`` + ``LogisticRegressionCV`` (C by log loss, 5 folds at most,
  on the labelled sentences only), the head a careful user fits;
* ``FewShotClassifier(TextEncoder(), labels=LABELS)``: each class a blend of its label text's
  embedding and its labelled sentences' mean, the weight chosen by leave-one-out on them.

Every sentence is encoded once (an embedding cache serves the refits). Prints a table and writes
the figures to a JSON file.

Run: ``python examples/fewshot_sst2.py`` (a few minutes on 2 cores), or ``--help``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sst2_learning_curve import DEFAULT_DATA, read_sst2, subsample  # noqa: E402

from sktransfer import EmbeddingCache, FewShotClassifier, TextEncoder, ZeroShotClassifier  # noqa: E402
from sktransfer.heads import tuned_head  # noqa: E402

#: The class descriptions, fixed before any score was seen (the demo's since 2026-11).
LABELS = {0: "a negative review", 1: "a positive review"}

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding sst2/ (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 50, 100, 200])
    parser.add_argument("--draws", type=int, default=10, help="random labelled sets per size (default: %(default)s)")
    parser.add_argument("--split", choices=["dev", "test"], default="test", help="where to score (default: test)")
    parser.add_argument("--eval-size", type=int, default=None, help="score on the first N sentences only")
    parser.add_argument("--output", type=Path, default=DOCS / "fewshot_sst2.json", help="JSON results")
    args = parser.parse_args(argv)
    folder = args.data / "sst2"
    if not (folder / "stsa.binary.train").exists():
        print(f"SST-2 not found under {folder}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    train_texts, train_labels = read_sst2(folder / "stsa.binary.train")
    eval_texts, eval_labels = read_sst2(folder / f"stsa.binary.{args.split}")
    eval_texts, eval_labels = eval_texts[: args.eval_size], eval_labels[: args.eval_size]
    cache_dir = tempfile.mkdtemp(prefix="sktransfer-fewshot-")
    cache = EmbeddingCache(cache_dir)
    encoder = TextEncoder(cache=cache)
    start = time.perf_counter()
    zero_shot = ZeroShotClassifier(encoder, labels=LABELS).fit(eval_texts)
    zero_shot_accuracy = float(zero_shot.score(eval_texts, eval_labels))
    print(f"zero-shot ({zero_shot.template_!r}): {zero_shot_accuracy:.3f} on {len(eval_texts)} {args.split} "
          f"sentences ({time.perf_counter() - start:.0f} s with the encoding)", flush=True)
    fitted = zero_shot.encoder_
    E_eval = fitted.transform(eval_texts)
    rows = []
    print(f"{'labels':>6} {'draw':>4} {'tuned head':>10} {'few-shot':>8} {'alpha_':>6}")
    for n in args.sizes:
        for draw in range(args.draws):
            texts, labels = subsample(train_texts, train_labels, n, seed=1000 * n + draw)
            head = tuned_head(labels).fit(fitted.transform(texts), labels)
            frozen = float(accuracy_score(eval_labels, head.predict(E_eval)))
            clf = FewShotClassifier(encoder, labels=LABELS, random_state=draw).fit(texts, labels)
            few = float(clf.score(eval_texts, eval_labels))
            rows.append({"n": n, "draw": draw, "zero_shot": zero_shot_accuracy, "tuned_head": frozen,
                         "few_shot": few, "alpha": clf.alpha_})
            print(f"{n:>6} {draw:>4} {frozen:>10.3f} {few:>8.3f} {clf.alpha_:>6.1f}", flush=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    summary = []
    print(f"\n{'labels':>6} | zero-shot | frozen + tuned head | FewShotClassifier | vs the better of the two")
    for n in args.sizes:
        got = [r for r in rows if r["n"] == n]
        frozen, few = np.array([r["tuned_head"] for r in got]), np.array([r["few_shot"] for r in got])
        better = max(zero_shot_accuracy, frozen.mean())
        summary.append({"n": n, "draws": len(got), "zero_shot": zero_shot_accuracy,
                        "tuned_head_mean": frozen.mean(), "tuned_head_std": frozen.std(),
                        "few_shot_mean": few.mean(), "few_shot_std": few.std(),
                        "few_shot_min": few.min(), "gain_over_better": few.mean() - better})
        print(f"{n:>6} | {zero_shot_accuracy:.3f}     | {frozen.mean():.3f} +/- {frozen.std():.3f}      | "
              f"{few.mean():.3f} +/- {few.std():.3f}     | {100 * (few.mean() - better):+.1f} points")
    record = {"split": args.split, "n_eval": len(eval_texts), "labels": LABELS, "template": zero_shot.template_,
              "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(), "summary": summary, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
