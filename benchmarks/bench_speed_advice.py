"""Does the speed advisor's recommendation hold on other data? `sktransfer.speed.speed` on one corpus,
its recommendation applied to another.

For texts (SST-2 training sentences, fashion product names) and for photos (hymenoptera, fashion
catalogue photos): the advisor measures every configuration on a sample of corpus A and names the
fastest at mean cosine >= 0.99; that configuration is then fitted on corpus B and timed against
torch fp32 (the baseline) on a larger sample of B, alternating, in this process. Each corpus is A
once and B once. Reported: the ratio the advisor measured on A, the ratio measured on B, and the
cosine on B.

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


def sample(items: list, n: int, seed: int) -> list:
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), min(n, len(items)), replace=False))
    return [items[i] for i in chosen]


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
            "seconds": times, "ratio": round(ratio, 3), **fidelity(expected, found)}


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
            report = speed(sample(found[a], args.advise, 0), kind=kind, repeats=args.repeats, show_progress=False,
                           **({"weights": "IMAGENET1K_V1"} if kind == "image" else {}))
            print(report)
            row = report.recommended[0.99]
            if row is None:
                print(f"{kind}: nothing reaches mean cosine 0.99 on {a}")
                continue
            n_apply = args.apply if kind == "text" else min(args.apply, 400)
            applied = apply(kind, row, sample(found[b], n_apply, 1), args.repeats)
            line = (f"{kind}: advised on {a} ({report.n_items}): {row['configuration']} at {row['ratio']:.2f}x torch "
                    f"fp32; applied on {b} ({applied['n_items']}): {applied['ratio']:.2f}x, cosine min "
                    f"{applied['min_cosine']:.4f} mean {applied['mean_cosine']:.4f}")
            print(line)
            results["runs"].append({"kind": kind, "advised_on": a, "applied_on": b, "report": report.to_dict(),
                                    "python": report.python(row), "applied": applied, "line": line})
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
