"""Domain shift with skada on frozen embeddings: men's products (labelled) to women's (unlabelled).

The fashion catalogue's product names, encoded by ``TextEncoder()`` (all-MiniLM-L6-v2, frozen),
predict each product's ``usage`` (Casual, Formal, Sports, Ethnic). The labelled source domain is
the men's products; the target domain, whose labels are hidden from every fit, is the women's.
Two pipelines, both fitted on source labels and unlabelled target names, scored on the target
labels:

* no adaptation: ``make_da_pipeline(TextEncoder(), StandardScaler(), LogisticRegression())``;
* CORAL: ``make_da_pipeline(TextEncoder(), StandardScaler(), CORALAdapter(), LogisticRegression())``
  (skada aligns the source features' covariance to the target's).

Also reported: CORAL without the scaler. Writes a JSON file with the figures.

Run: ``python examples/domain_shift_fashion.py`` (about a minute on 2 cores), or ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "fashion_products",
                        help="the fashion_products folder (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="products per domain (quick runs)")
    parser.add_argument("--output", type=Path, default=DOCS / "domain_shift_fashion.json", help="JSON results")
    args = parser.parse_args(argv)
    if not (args.data / "styles.csv").exists():
        print(f"fashion_products not found under {args.data}; pass --data or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    import pandas as pd
    from skada import CORALAdapter, make_da_pipeline
    from skada.utils import source_target_merge
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from sktransfer import EmbeddingCache, TextEncoder

    products = pd.read_csv(args.data / "styles.csv")
    products = products[products["usage"].isin(["Casual", "Formal", "Sports", "Ethnic"])]
    source = products[products["gender"] == "Men"].head(args.limit)
    target = products[products["gender"] == "Women"].head(args.limit)
    target = target[target["usage"].isin(set(source["usage"]))]  # a class the source never shows cannot be learnt
    classes = sorted(set(source["usage"]))
    code = {name: i for i, name in enumerate(classes)}  # skada marks hidden target labels with -1
    X, y, sample_domain = source_target_merge(  # sample_domain: 1 for the source rows, -2 for the target's
        source["productDisplayName"].to_numpy(dtype=object), target["productDisplayName"].to_numpy(dtype=object),
        source["usage"].map(code).to_numpy(), np.full(len(target), -1),
        sample_domain=np.r_[np.ones(len(source)), -2 * np.ones(len(target))],
    )
    y_target = target["usage"].map(code).to_numpy()
    # One cache for the three pipelines, so each name is encoded once; removed at the end.
    cache_dir = tempfile.mkdtemp(prefix="sktransfer-domain-shift-")
    cache = EmbeddingCache(cache_dir)

    def encoder():
        return TextEncoder(device="cpu", cache=cache)

    pipelines = {
        "no adaptation (StandardScaler)": make_da_pipeline(encoder(), StandardScaler(), LogisticRegression(max_iter=2000)),
        "CORAL (StandardScaler, CORALAdapter)": make_da_pipeline(encoder(), StandardScaler(), CORALAdapter(),
                                                                 LogisticRegression(max_iter=2000)),
        "CORAL without the scaler": make_da_pipeline(encoder(), CORALAdapter(), LogisticRegression(max_iter=2000)),
    }
    rows = []
    target_rows = sample_domain < 0
    print(f"source: {len(source)} men's products, target: {len(target)} women's; classes "
          f"{classes}; target labels hidden from every fit")
    for name, pipeline in pipelines.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                pipeline.fit(X, y, sample_domain=sample_domain)
                predicted = pipeline.predict(X[target_rows], sample_domain=sample_domain[target_rows])
                accuracy, error = accuracy_score(y_target, predicted), None
                balanced = balanced_accuracy_score(y_target, predicted)
            except ValueError as exc:  # NaN features reach LogisticRegression
                accuracy = balanced = float("nan")
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        rows.append({"pipeline": name, "target_accuracy": accuracy, "target_balanced_accuracy": balanced,
                     "error": error, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{name:<40} target accuracy {accuracy:.3f}, balanced {balanced:.3f}" + (f"  ({error})" if error else ""))
    majority = float((y_target == code[source["usage"].mode()[0]]).mean())
    print(f"{'predict the source majority class':<40} target accuracy {majority:.3f}, balanced "
          f"{1 / len(set(y_target)):.3f}")
    result = {"command": "python examples/domain_shift_fashion.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "source_items": len(source), "target_items": len(target),
              "majority_baseline": majority, "runs": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {args.output}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
