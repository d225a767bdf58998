"""Which text fine-tuning recipe pays, per CPU second? Chosen on SST-2 **dev**, never on test.

For each recipe and random draw of ``--n`` training sentences, the tuner FineTuningClassifier uses
trains on all of them (no validation split, no decision: the recipe itself is what is measured).
Frozen all-MiniLM-L6-v2 and the tuned encoder each get the same tuned head (``sktransfer.heads.tuned_head``,
C chosen by CV on the training sentences only), scored on the 872 dev sentences. The baseline
(frozen + tuned head) and the candidates run in one process on the same draws; the report is the
gain in points per draw and the fit's wall time with the CPU class named.

Usage: python benchmarks/bench_text_recipe.py [--n 100] [--draws 3] [--recipes NAME ...] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description  # noqa: E402
from sst2_learning_curve import DEFAULT_DATA, read_sst2, subsample  # noqa: E402

from sktransfer import TextEncoder  # noqa: E402
from sktransfer import _tune_text  # noqa: E402
from sktransfer.heads import tuned_head  # noqa: E402

#: name -> (objective, unfreeze, epochs, learning rate, pair rounds)
RECIPES = {
    "contrastive-all-2ep-5r": ("contrastive", "all", 2, 2e-5, 5),  # the default before this benchmark
    "contrastive-all-3ep-2r-lr5e-5": ("contrastive", "all", 3, 5e-5, 2),  # the default it chose
    "contrastive-all-2ep-2r": ("contrastive", "all", 2, 2e-5, 2),
    "contrastive-all-1ep-5r": ("contrastive", "all", 1, 2e-5, 5),
    "contrastive-all-3ep-2r": ("contrastive", "all", 3, 2e-5, 2),
    "contrastive-all-2ep-2r-lr5e-5": ("contrastive", "all", 2, 5e-5, 2),
    "contrastive-all-2ep-1r-lr1e-4": ("contrastive", "all", 2, 1e-4, 1),
    "classification-all-8ep": ("classification", "all", 8, 3e-5, 0),
    "contrastive-top2-2ep-5r": ("contrastive", 2, 2, 5e-5, 5),
}


def run(recipe, encoder, texts, labels, seed):
    objective, unfreeze, epochs, lr, rounds = RECIPES[recipe]
    tuner = _tune_text.TextTuner(encoder, objective=objective, unfreeze=unfreeze, learning_rate=lr, batch_size=16,
                                 max_epochs=epochs, precision="fp32", seed=seed,
                                 pair_rounds=rounds or _tune_text.PAIR_ROUNDS)
    start = time.perf_counter()
    tuner.start(texts, np.arange(len(texts)), labels)
    for epoch in range(1, epochs + 1):
        tuner.train_epoch(epoch, lambda batches: batches)
    return tuner, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--first-draw", type=int, default=0)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--dev-size", type=int, default=None, help="score on the first N dev sentences only")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    train, y_train = read_sst2(DEFAULT_DATA / "sst2" / "stsa.binary.train")
    dev, y_dev = read_sst2(DEFAULT_DATA / "sst2" / "stsa.binary.dev")
    dev, y_dev = dev[: args.dev_size], y_dev[: args.dev_size]
    print(f"# {machine_description()}, cpu capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    rows = []
    for draw in range(args.first_draw, args.first_draw + args.draws):
        texts, labels = subsample(train, y_train, args.n, seed=draw)
        encoder = TextEncoder(device="cpu").fit(texts)
        head = tuned_head(labels).fit(encoder.transform(texts), labels)
        frozen = accuracy_score(y_dev, head.predict(encoder.transform(dev)))
        for recipe in args.recipes:
            tuner, seconds = run(recipe, encoder, list(texts), labels, seed=draw)
            tuner.model.eval()
            features, _ = encoder.encode_texts(tuner.model, list(texts) + list(dev), None)
            head = tuned_head(labels).fit(features[: len(texts)], labels)
            tuned = accuracy_score(y_dev, head.predict(features[len(texts):]))
            rows.append({"n": args.n, "draw": draw, "recipe": recipe, "frozen": frozen, "tuned": tuned,
                         "gain_points": 100 * (tuned - frozen), "fit_seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\nrecipe: mean gain (points), worst draw, mean fit s")
    for recipe in args.recipes:
        mine = [r for r in rows if r["recipe"] == recipe]
        gains = [r["gain_points"] for r in mine]
        print(f"  {recipe:32s} {np.mean(gains):+5.1f}  {min(gains):+5.1f}  {np.mean([r['fit_seconds'] for r in mine]):6.0f}"
              f"   tuned {np.mean([r['tuned'] for r in mine]):.3f} frozen {np.mean([r['frozen'] for r in mine]):.3f}")
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_description(),
                                           "cpu": torch.backends.cpu.get_cpu_capability(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
