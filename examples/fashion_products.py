"""Product categories from a mixed table: tabular columns, a product photo and a product name.

The fashion catalogue in ``fashion_products/`` (3221 products: gender, colour, season, year,
usage, a product name and a 224x224 photo). Task: predict ``subCategory`` (Topwear, Shoes,
Bags, Watches, ...) with 5-fold stratified cross-validation. Each row of the report is one
Pipeline (``make_table_encoder`` + StandardScaler + LogisticRegression) in one
``cross_validate`` call; all of them share one embedding cache, so each photo and each name is
encoded once however many folds and pipelines use it:

* tabular only: one-hot gender, baseColour, season, usage; standardised year;
* tabular + photo: adds ``ImageEncoder`` on the photo path column;
* tabular + photo + name: adds ``TextEncoder`` on ``productDisplayName``;
* for context, photo only and name only.

``masterCategory`` and ``articleType`` are left out of the features: they are coarser and finer
versions of the label itself. Categories with fewer than 5 products (10 products in 5 rare
categories) are dropped so that every fold can hold every class.

Run: ``make demo`` (sets everything up), or ``python examples/fashion_products.py --help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder, make_table_encoder

DEFAULT_DATA = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATEGORICAL = ["gender", "baseColour", "season", "usage"]
NUMERIC = ["year"]


def load_catalogue(folder: Path, min_per_class: int, limit: int | None = None) -> pd.DataFrame:
    """styles.csv with a ``photo`` column of absolute paths; rare categories dropped."""
    table = pd.read_csv(folder / "styles.csv")
    table["photo"] = [str(folder / "images" / name) for name in table["image"]]
    counts = table["subCategory"].value_counts()
    table = table[table["subCategory"].map(counts) >= min_per_class]
    if limit:  # a stratified slice for quick checks: the first `limit` rows of each category
        table = table.groupby("subCategory", group_keys=False).head(limit)
    return table.reset_index(drop=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "fashion_products",
                        help="folder with styles.csv and images/ (default: %(default)s)")
    parser.add_argument("--weights", default="IMAGENET1K_V1",
                        help="MobileNetV2 weights (default: %(default)s, the checkpoint the set-up seeds offline)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--cv", type=int, default=5, help="stratified folds (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only N products per category (quick check)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="embedding cache folder to keep between runs (default: a fresh temporary one, "
                             "so the time shows every photo and name encoded once)")
    args = parser.parse_args(argv)

    if not (args.data / "styles.csv").is_file():
        print(f"fashion_products not found in {args.data} (need styles.csv and images/). Pass --data DIR or set "
              "SKTRANSFER_DATA to the folder that holds fashion_products/.", file=sys.stderr)
        return 2
    table = load_catalogue(args.data, min_per_class=args.cv, limit=args.limit)
    y = table["subCategory"]
    print(f"fashion_products: {len(table)} products, {y.nunique()} categories "
          f"(largest {y.value_counts().iloc[0]}: {y.value_counts().index[0]})")

    cache = EmbeddingCache(args.cache or tempfile.mkdtemp(prefix="sktransfer-demo-cache-"))
    image = ImageEncoder("mobilenet_v2", weights=args.weights, precision=args.precision)
    text = TextEncoder(precision=args.precision)
    setups = {
        "tabular only": dict(categorical=CATEGORICAL, numeric=NUMERIC),
        "tabular + photo": dict(images="photo", categorical=CATEGORICAL, numeric=NUMERIC),
        "tabular + photo + name": dict(images="photo", text="productDisplayName", categorical=CATEGORICAL,
                                       numeric=NUMERIC),
        "photo only (context)": dict(images="photo", categorical=None, numeric=None),
        "name only (context)": dict(text="productDisplayName", categorical=None, numeric=None),
    }
    folds = StratifiedKFold(args.cv, shuffle=True, random_state=0)
    print(f"\n{'features':<26} {'accuracy':>16} {'n features':>11} {'time':>7}")
    print("-" * 64)
    for name, columns in setups.items():
        columns = dict(columns, text_encoder=text, image_encoder=image, cache=cache)
        pipeline = make_pipeline(make_table_encoder(**columns), StandardScaler(), LogisticRegression(max_iter=3000))
        start = time.perf_counter()
        result = cross_validate(pipeline, table, y, cv=folds, return_estimator=True)
        seconds = time.perf_counter() - start
        n_features = len(result["estimator"][0][:-2].get_feature_names_out())
        scores = result["test_score"]
        print(f"{name:<26} {scores.mean():>9.3f} ± {scores.std():.3f} {n_features:>11} {seconds:>6.0f}s")
    print(f"\n({args.cv}-fold stratified cross-validation accuracy, mean ± std; times on this machine and "
          f"include encoding where a pipeline meets a photo or name for the first time. The shared cache "
          f"encoded {cache.stats.misses} distinct photos and names and answered {cache.stats.hits} lookups.)")
    if args.cache is None:
        shutil.rmtree(cache.path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
