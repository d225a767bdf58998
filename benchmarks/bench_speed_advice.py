"""Does the speed advisor's recommendation, applied, give the ratio it measured? `sktransfer.speed.speed`
on a sample of one corpus, its recommendation applied to other items of that corpus and to another.

For texts (SST-2 training sentences, fashion product names) and for photos (hymenoptera, fashion
catalogue photos): the advisor measures every configuration on a sample of corpus A and names the
fastest at mean cosine >= 0.99; that configuration is then fitted and timed against torch fp32
(the baseline), alternating, in this process, on as many items of A as the advisor timed but
others (the reproduction check), on more items of A (fixed costs per call weigh less in a larger
workload), and on a sample of corpus B (how far the advice travels). Each corpus is A once
and B once. The machine's noise is the spread of the per-round ratios (round r: torch fp32's time
over the configuration's, both in that round): a ratio reproduces when the applied run's range of
per-round ratios overlaps the advisor's.

Usage: python benchmarks/bench_speed_advice.py [--advise 200] [--apply 1000] [--repeats 3] [--kind text image]
Writes docs/speed_advice.json (the run docs/cpu_speed.md quotes).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, hymenoptera_files, read_sst2, summary, time_alternating  # noqa: E402

from sktransfer import ImageEncoder, TextEncoder  # noqa: E402
from sktransfer._quantize import fidelity  # noqa: E402
from sktransfer.speed import machine_description, speed  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "speed_advice.json"


def corpora(kind: str) -> dict:
    if kind == "text":
        with open(DATA_DIR / "fashion_products" / "styles.csv", newline="", encoding="utf-8") as handle:
            names = [row["productDisplayName"] for row in csv.DictReader(handle) if row["productDisplayName"]]
        return {"SST-2 sentences": list(read_sst2(DATA_DIR / "sst2" / "stsa.binary.train")[0]),
                "fashion product names": names}
    photos = sorted(str(p) for p in (DATA_DIR / "fashion_products" / "images").glob("*.jpg"))
    return {"hymenoptera photos": hymenoptera_files(), "fashion catalogue photos": photos}


def sample_rows(n_items: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct row numbers out of ``n_items`` (all of them if fewer), in order."""
    return np.sort(np.random.default_rng(seed).choice(n_items, min(n, n_items), replace=False))


def round_ratios(baseline: list, candidate: list) -> list:
    """Torch fp32's seconds over the candidate's, round by round (the two ran back to back)."""
    return [round(b / c, 3) for b, c in zip(baseline, candidate)]


def overlaps(a: list, b: list) -> bool:
    return min(a) <= max(b) and min(b) <= max(a)


def apply(kind: str, row: dict, items: list, repeats: int) -> dict:
    """The recommended configuration and torch fp32 on ``items``, alternating; its ratio and cosine."""
    cls = TextEncoder if kind == "text" else ImageEncoder
    params = {"device": "cpu", **({"weights": "IMAGENET1K_V1"} if kind == "image" else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline = cls(**params).fit(items)
        advised = cls(**params, backend=row["backend"], precision=row["precision"], **row["params"]).fit(items)
    expected, found = baseline.transform(items), advised.transform(items)  # warm-up, and the cosine
    times = time_alternating({"torch fp32": lambda: baseline.transform(items),
                              "advised": lambda: advised.transform(items)}, repeats)
    ratio = float(np.median(times["torch fp32"]) / np.median(times["advised"]))
    return {"n_items": len(items), "torch fp32": summary(times["torch fp32"]), "advised": summary(times["advised"]),
            "seconds": times, "ratio": round(ratio, 3), "round_ratios": round_ratios(times["torch fp32"],
                                                                                   times["advised"]),
            **fidelity(expected, found)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advise", type=int, default=200, help="items the advisor measures on (default 200)")
    parser.add_argument("--apply", type=int, default=1000, help="texts the recommendation is timed on (default "
                        "1000; photos: 400)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kind", nargs="+", default=["text", "image"], choices=["text", "image"])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    machine = machine_description()
    print(f"machine: {machine}")
    results = {"date": datetime.date.today().isoformat(), "machine": machine, "command":
               "python benchmarks/bench_speed_advice.py " + " ".join(argv or sys.argv[1:]), "runs": []}
    for kind in args.kind:
        found = corpora(kind)
        names = list(found)
        for a, b in [(names[0], names[1]), (names[1], names[0])]:
            chosen = sample_rows(len(found[a]), args.advise, 0)
            report = speed([found[a][i] for i in chosen], kind=kind, repeats=args.repeats, show_progress=False,
                           **({"weights": "IMAGENET1K_V1"} if kind == "image" else {}))
            print(report)
            row = report.recommended[0.99]
            if row is None:
                print(f"{kind}: nothing reaches mean cosine 0.99 on {a}")
                continue
            advised = round_ratios(report.rows[0]["seconds"], row["seconds"])
            n_apply = args.apply if kind == "text" else min(args.apply, 400)
            unseen = np.setdiff1d(np.arange(len(found[a])), chosen)  # items of A the advisor did not time
            # As many unseen items as the advisor timed (the reproduction check), then more of them
            # (how the ratio grows with the workload: fixed costs per call weigh less).
            same = apply(kind, row, [found[a][i] for i in unseen[sample_rows(len(unseen), len(chosen), 1)]],
                         args.repeats)
            more = apply(kind, row, [found[a][i] for i in unseen[sample_rows(len(unseen), n_apply, 2)]],
                         args.repeats)
            other = apply(kind, row, [found[b][i] for i in sample_rows(len(found[b]), n_apply, 1)], args.repeats)
            same["reproduced"] = overlaps(advised, same["round_ratios"])

            def rounds(ratios):
                return f"rounds {min(ratios):.2f}-{max(ratios):.2f}"

            line = (f"{kind}: advised on {a} ({report.n_items}): {row['configuration']} at {row['ratio']:.2f}x torch "
                    f"fp32 ({rounds(advised)}); applied on {same['n_items']} other items of {a}: {same['ratio']:.2f}x "
                    f"({rounds(same['round_ratios'])}, {'within' if same['reproduced'] else 'outside'} the noise); on "
                    f"{more['n_items']} other items: {more['ratio']:.2f}x ({rounds(more['round_ratios'])}); on {b} "
                    f"({other['n_items']}): {other['ratio']:.2f}x, cosine min {other['min_cosine']:.4f} mean "
                    f"{other['mean_cosine']:.4f}")
            print(line)
            results["runs"].append({"kind": kind, "advised_on": a, "applied_on": b, "report": report.to_dict(),
                                    "python": report.python(row), "advised_round_ratios": advised,
                                    "applied_same_corpus": same, "applied_same_corpus_larger": more,
                                    "applied": other, "line": line})
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
