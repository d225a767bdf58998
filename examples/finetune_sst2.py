"""Does fine-tuning pay with few labels? SST-2: frozen MiniLM + a tuned head vs FineTuningClassifier.

For each training-set size (50, 100, 200, 500 sentences) and several random draws, on the same
sentences:

* frozen + tuned head: ``TextEncoder()`` and ``sktransfer.heads.tuned_head`` (StandardScaler +
  LogisticRegressionCV, C chosen by CV on the training sentences only): the baseline at its best;
* fine-tuned: ``FineTuningClassifier(TextEncoder())`` with its defaults (SetFit-style contrastive
  tuning of all-MiniLM-L6-v2; frozen and tuned judged with the same tuned head on 3 validation
  splits of the training sentences, tuning kept only when it wins beyond their spread, then
  retrained on all the sentences);
* the recipe alone: the same tuning on all the sentences, kept whatever it does
  (``validation_fraction=0``), which is what a kept tuning gives. When the fine-tuned fit kept
  tuning for every epoch, it is that model, and is not fitted twice.

Each is scored on the official SST-2 test split (1821 sentences) and on the dev split (872
sentences). The decision rules are replayed from each fit's ``history_`` on the **dev** scores
only (where this project makes its choices); the test scores are the report. Prints tables, and
writes the figures to a JSON file and a PNG plot.

``--default-sizes`` limits the fits with the defaults (3 splits, then the final run when tuning is
kept) to some sizes, and ``--add`` merges a run into the runs already in ``--output`` (the sizes it
does not refit stay, with their commands, under ``commands``).

Run: ``python examples/finetune_sst2.py`` (every size with the defaults takes hours on 2 cores; the
fit time of every run is in the JSON), or ``--help``.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sst2_learning_curve import DEFAULT_DATA, read_sst2, subsample  # noqa: E402

from sktransfer import FineTuningClassifier, TextEncoder  # noqa: E402
from sktransfer.heads import tuned_head  # noqa: E402
from sktransfer.speed import machine_description  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def per_split(history: list, epoch: int, key: str) -> np.ndarray:
    rows = sorted((h["split"], h[key]) for h in history if h["split"] is not None and h["epoch"] == epoch)
    return np.array([value for _, value in rows])


def replay(history: list) -> dict:
    """Which encoder each decision rule keeps, from the splits' validation scores in ``history``.

    ``accuracy``: the mean accuracy gain over the splits above its standard error (FineTuningClassifier's
    rule); ``log-loss``: the same on the validation log loss; ``both``: the log-loss rule and a mean
    accuracy gain of at least 0; ``not-worse``: tuned unless its mean accuracy gain is below minus its
    standard error (the burden of proof reversed)."""
    epochs = sorted({h["epoch"] for h in history if h["split"] is not None and h["epoch"] > 0})
    if not epochs:
        return {}
    means = {e: (per_split(history, e, "val_accuracy").mean(), -per_split(history, e, "val_log_loss").mean())
             for e in epochs}
    epoch = max(means, key=means.get)
    accuracy = per_split(history, epoch, "val_accuracy") - per_split(history, 0, "val_accuracy")
    log_loss = per_split(history, 0, "val_log_loss") - per_split(history, epoch, "val_log_loss")

    def error(gains):
        return gains.std(ddof=1) / math.sqrt(len(gains))

    return {"epoch": epoch, "accuracy_gains": accuracy.tolist(), "log_loss_gains": log_loss.tolist(),
            "accuracy": bool(accuracy.mean() > error(accuracy)), "log-loss": bool(log_loss.mean() > error(log_loss)),
            "both": bool(log_loss.mean() > error(log_loss) and accuracy.mean() >= 0),
            "not-worse": bool(accuracy.mean() >= -error(accuracy))}


RULES = ["never", "always", "accuracy", "log-loss", "both", "not-worse"]


def report(rows: list, sizes: list) -> tuple[list, dict]:
    """Print and return the per-size summary (test) and the decision rules replayed on dev."""
    summary = [summarise([r for r in rows if r["n"] == n], n) for n in sizes]
    print("\nmean over draws (test accuracy):")
    for s in summary:
        line = f"  n={s['n']:>4} ({s['draws']} draws): frozen + tuned head {s['frozen_mean']:.3f} +- {s['frozen_std']:.3f}"
        if "tuned_mean" in s:
            line += (f"; defaults {s['tuned_mean']:.3f} +- {s['tuned_std']:.3f} ({s['mean_gain_points']:+.1f} points, "
                     f"worst {s['worst_gain_points']:+.1f}; tuning kept {s['kept_tuned']}/{s['draws']}, fit "
                     f"{s['fit_seconds_mean']:.0f} s)")
        if "alone_mean" in s:
            line += (f"; the recipe alone {s['alone_mean']:.3f} +- {s['alone_std']:.3f} ({s['alone_gain_points']:+.1f}, "
                     f"worst {s['alone_worst_gain_points']:+.1f})")
        print(line)
    print("\ndecision rules replayed on the DEV split: mean gain over frozen + tuned head (points), worst, kept tuned")
    replayed = [r for r in rows if r["alone"] and r.get("rules")]
    for s in summary:  # each size's own replay, in its summary entry
        here = [r for r in replayed if r["n"] == s["n"]]
        if here:
            s["dev_rules"] = replay_rules(here)
            print(f"  n={s['n']}: " + ", ".join(f"{rule} {v['mean_gain_points']:+.2f} ({v['kept']}/{v['fits']})"
                                               for rule, v in s["dev_rules"].items()))
            s["unless_worse_on_test"] = unless_worse_on_test(here)
    rules = replay_rules(replayed)
    if len({r["n"] for r in replayed}) > 1:
        print("  all sizes together:")
    for rule, v in rules.items():
        print(f"  {rule:9s} {v['mean_gain_points']:+5.2f} {v['worst_gain_points']:+5.2f}  {v['kept']}/{v['fits']}")
    return summary, rules


def unless_worse_on_test(replayed: list) -> dict:
    """``keep_tuned="unless_worse"`` replayed on the TEST split, approximately: where it keeps tuning, the
    defaults' test accuracy if they kept tuning too, else the recipe alone's (a kept model trains for the
    judged epochs, not always the recipe's); the frozen one where it keeps frozen."""
    gains = []
    for r in replayed:
        kept = r["tuned"] if r.get("kept_tuned") else r["alone"]
        gains.append(100 * ((kept if r["rules"].get("not-worse") else r["frozen"])["test"] - r["frozen"]["test"]))
    return {"mean_gain_points": float(np.mean(gains)), "worst_gain_points": float(min(gains)),
            "kept": int(sum(bool(r["rules"].get("not-worse")) for r in replayed)), "per_draw": gains}


def replay_rules(replayed: list) -> dict:
    """Each rule's dev gain over frozen + tuned head (points) on ``replayed`` fits: the recipe's dev accuracy
    where the rule keeps tuning, the frozen one where it does not."""
    rules = {}
    for rule in RULES if replayed else []:
        keep = [rule == "always" or (rule != "never" and r["rules"].get(rule, False)) for r in replayed]
        gains = [100 * ((r["alone"] if k else r["frozen"])["dev"] - r["frozen"]["dev"]) for r, k in zip(replayed, keep)]
        rules[rule] = {"mean_gain_points": float(np.mean(gains)), "worst_gain_points": float(min(gains)),
                       "kept": int(sum(keep)), "fits": len(replayed)}
    return rules


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding sst2/ (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--draws", type=int, nargs="+", default=[5], help="random training sets per size: one "
                        "number, or one per size")
    parser.add_argument("--alone-sizes", type=int, nargs="*", default=None, help="sizes at which the recipe alone "
                        "is fitted where the fine-tuned fit does not give it (default: every size)")
    parser.add_argument("--default-sizes", type=int, nargs="*", default=None, help="sizes at which "
                        "FineTuningClassifier is fitted with its defaults (default: every size); at the others only "
                        "frozen + tuned head and the recipe alone")
    parser.add_argument("--add", action="store_true", help="keep the runs already in --output whose size is not "
                        "in --sizes, and add this run's")
    parser.add_argument("--unfreeze", default="auto", help='FineTuningClassifier(unfreeze=...): "auto", "all", '
                        '"lora" or a number of top layers (default: %(default)s)')
    parser.add_argument("--test-size", type=int, default=None, help="score on the first N test and dev sentences")
    parser.add_argument("--output", type=Path, default=DOCS / "finetune_sst2.json", help="JSON results")
    parser.add_argument("--replay", action="store_true", help="fit nothing: replay the decision rules and rewrite "
                        "the summary of the runs already in --output")
    parser.add_argument("--plot", type=Path, default=DOCS / "img" / "finetune_sst2.png", help="PNG plot")
    parser.add_argument("--table", action="store_true", help="fit nothing: print the learning-curve table of "
                        "--output as markdown (the one docs/adapting.md shows)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.output.read_text())["summary"]))
        return 0
    if args.replay:
        result = json.loads(args.output.read_text())
        for r in result["runs"]:
            if r.get("history"):  # runs without the defaults, or logged without history, keep theirs
                r["rules"] = replay(r["history"])
        sizes = sorted({r["n"] for r in result["runs"]})
        result["summary"], result["dev_rules"] = report(result["runs"], sizes)
        args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
        plot(result["summary"], args.plot)
        return 0
    earlier = json.loads(args.output.read_text()) if args.add and args.output.exists() else None
    if earlier is not None:  # checked before hours of fitting, not after
        clash = [f"{key} {earlier.get(key)!r} there, {mine!r} here" for key, mine in
                 [("cpu_capability", torch.backends.cpu.get_cpu_capability()), ("test_size", args.test_size)]
                 if earlier.get(key) != mine]
        if clash:
            print(f"--add: the runs in {args.output} were measured differently ({'; '.join(clash)}); figures of "
                  "two CPU classes or two test sets are not mixed: write to another --output", file=sys.stderr)
            return 2
    folder = args.data / "sst2"
    if not (folder / "stsa.binary.train").exists():
        print(f"SST-2 not found under {folder}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    draws = dict(zip(args.sizes, args.draws * len(args.sizes) if len(args.draws) == 1 else args.draws))
    train_texts, train_labels = read_sst2(folder / "stsa.binary.train")
    scored = {split: read_sst2(folder / f"stsa.binary.{split}") for split in ("test", "dev")}
    scored = {split: (texts[: args.test_size], labels[: args.test_size]) for split, (texts, labels) in scored.items()}
    unfreeze = int(args.unfreeze) if args.unfreeze.isdigit() else args.unfreeze
    machine = machine_description()
    print(f"# {machine}")

    def scores(model) -> dict:
        return {split: float(model.score(texts, labels)) for split, (texts, labels) in scored.items()}

    rows = []
    print(f"{'n':>5} {'draw':>4} {'frozen':>7} {'tuned':>7} {'gain':>6} {'kept':>7} {'fit s':>6} {'alone':>7} "
          f"{'gain':>6}   (test accuracy)")
    for n in args.sizes:
        for draw in range(draws[n]):
            X, y = subsample(train_texts, train_labels, n, seed=draw)
            encoder = TextEncoder(device="cpu").fit(X)
            head = tuned_head(y).fit(encoder.transform(X), y)
            # accuracy_score, not head.score: LogisticRegressionCV scores by its scoring (log loss here)
            frozen = {split: float(accuracy_score(labels, head.predict(encoder.transform(texts))))
                      for split, (texts, labels) in scored.items()}
            clf = tuned = fit_s = None
            if args.default_sizes is None or n in args.default_sizes:
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # small validation splits; frozen kept
                    clf = FineTuningClassifier(TextEncoder(device="cpu"), unfreeze=unfreeze, random_state=draw,
                                               show_progress=False).fit(X, y)
                fit_s = round(time.perf_counter() - start, 1)
                tuned = scores(clf)
            if clf is not None and clf.tuned_ and clf.best_epoch_ == clf.recipe_["max_epochs"]:
                alone, alone_s = tuned, None  # the final run is the recipe alone on all the sentences
            elif args.alone_sizes is not None and n not in args.alone_sizes:
                alone, alone_s = None, None
            else:
                start = time.perf_counter()
                alone = scores(FineTuningClassifier(TextEncoder(device="cpu"), unfreeze=unfreeze, validation_fraction=0,
                                                    random_state=draw, show_progress=False).fit(X, y))
                alone_s = round(time.perf_counter() - start, 1)
            row = {"n": n, "draw": draw, "frozen": frozen, "tuned": tuned, "alone": alone, "fit_seconds": fit_s,
                   "alone_fit_seconds": alone_s}
            if clf is not None:
                row.update(kept_tuned=clf.tuned_, best_epoch=clf.best_epoch_, max_epochs=clf.recipe_["max_epochs"],
                           decision=clf.decision_, rules=replay(clf.history_), pickle_bytes=len(pickle.dumps(clf)),
                           history=clf.history_)
            rows.append(row)
            with open(args.output.with_suffix(".partial.jsonl"), "a") as partial:  # each fit as it ends
                partial.write(json.dumps(rows[-1], default=float) + "\n")
            f = frozen["test"]
            shown = f"{alone['test']:>7.3f} {100 * (alone['test'] - f):>+6.1f}" if alone else f"{'-':>7} {'-':>6}"
            default = (f"{tuned['test']:>7.3f} {100 * (tuned['test'] - f):>+6.1f} "
                       f"{'tuned' if clf.tuned_ else 'frozen':>7} {fit_s:>6.0f}") if clf else f"{'-':>7} {'-':>6} {'-':>7} {'-':>6}"
            print(f"{n:>5} {draw:>4} {f:>7.3f} {default} {shown}", flush=True)

    command = "python examples/finetune_sst2.py " + " ".join(argv if argv is not None else sys.argv[1:])
    commands = [command]
    if earlier is not None:  # the earlier runs of the other sizes stay, with their commands
        rows = [r for r in earlier["runs"] if r["n"] not in args.sizes] + rows
        commands = earlier.get("commands", [earlier["command"]]) + commands
    sizes = sorted({r["n"] for r in rows})
    summary, rules = report(rows, sizes)
    result = {"command": command, "commands": commands,
              "date": time.strftime("%Y-%m-%d"), "machine": machine,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "test_size": args.test_size,
              "test_sentences": len(scored["test"][0]), "dev_sentences": len(scored["dev"][0]),
              "summary": summary, "dev_rules": rules, "runs": rows}
    if earlier is not None:  # what the earlier file says of its own runs stays beside them
        result = {**{k: v for k, v in earlier.items() if k not in result}, **result}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
    args.output.with_suffix(".partial.jsonl").unlink(missing_ok=True)  # the whole run is in the JSON now
    plot(summary, args.plot)
    print(f"\nwrote {args.output} and {args.plot}")
    return 0


def summarise(rows: list, n: int) -> dict:
    """Test accuracy over the draws of size ``n``: frozen + tuned head, the defaults where they were fitted at
    every draw, the recipe alone where it was."""
    frozen = np.array([r["frozen"]["test"] for r in rows])
    entry = {"n": n, "draws": len(rows), "frozen_mean": frozen.mean(), "frozen_std": frozen.std()}
    if all(r["tuned"] for r in rows):
        tuned = np.array([r["tuned"]["test"] for r in rows])
        gains = 100 * (tuned - frozen)
        entry.update(tuned_mean=tuned.mean(), tuned_std=tuned.std(), mean_gain_points=gains.mean(),
                     worst_gain_points=gains.min(), kept_tuned=int(sum(r["kept_tuned"] for r in rows)),
                     fit_seconds_mean=float(np.mean([r["fit_seconds"] for r in rows])))
    if all(r["alone"] for r in rows):
        alone = np.array([r["alone"]["test"] for r in rows])
        entry.update(alone_mean=alone.mean(), alone_std=alone.std(), alone_gain_points=100 * (alone - frozen).mean(),
                     alone_worst_gain_points=100 * (alone - frozen).min())
        seconds = [r["alone_fit_seconds"] for r in rows if r["alone_fit_seconds"] is not None]
        if seconds:
            entry["alone_fit_seconds_mean"] = float(np.mean(seconds))
    return entry


def markdown_table(summary: list) -> str:
    """The per-size summary as a markdown table: test accuracy, gains over frozen + tuned head in points."""
    def mean(s, key):
        return f"{s[f'{key}_mean']:.3f} ± {s[f'{key}_std']:.3f}"

    lines = ["| labels | draws | frozen + tuned head | `FineTuningClassifier()` | gain (worst) | tuning kept | "
             "the recipe alone | gain (worst) | fit s: defaults, recipe alone |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summary:
        cells = [str(s["n"]), str(s["draws"]), mean(s, "frozen")]
        if "tuned_mean" in s:
            cells += [mean(s, "tuned"), f"{s['mean_gain_points']:+.1f} ({s['worst_gain_points']:+.1f})",
                      f"{s['kept_tuned']} of {s['draws']}"]
        else:
            cells += ["not fitted", "", ""]
        if "alone_mean" in s:
            cells += [mean(s, "alone"), f"{s['alone_gain_points']:+.1f} ({s['alone_worst_gain_points']:+.1f})"]
        else:
            cells += ["not fitted", ""]
        seconds = [f"{s[key]:.0f}" if key in s else "—" for key in ("fit_seconds_mean", "alone_fit_seconds_mean")]
        cells.append(", ".join(seconds))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [s["n"] for s in summary]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, label in [("frozen", "frozen MiniLM + tuned head"), ("tuned", "FineTuningClassifier (defaults)"),
                       ("alone", "the recipe alone (always kept)")]:
        shown = [s for s in summary if f"{key}_mean" in s]
        ax.errorbar([s["n"] for s in shown], [s[f"{key}_mean"] for s in shown], yerr=[s[f"{key}_std"] for s in shown],
                    marker="o", capsize=3, label=label, ls="--" if key == "alone" else "-")
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
