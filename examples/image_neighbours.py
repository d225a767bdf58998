"""What ImageEncoder sees: each query photo beside its nearest neighbours among the others.

Encodes the hymenoptera validation photos (ants and bees, the PyTorch transfer-learning
tutorial's data) with ``ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1")``, frozen, and
draws a grid: one row per query photo, then the photos whose vectors are closest by cosine,
each titled with its class and cosine similarity (green when its class is the query's). No
label is used to find the neighbours: the classes only colour the titles. The figure on the image
encoder page is this script's output.

Run: ``python examples/image_neighbours.py`` (``--help`` for the data folder, the number of
queries and neighbours, and the output path).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from sktransfer import ImageEncoder

DEFAULT_DATA = Path(os.environ.get("SKTRANSFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def neighbours(vectors: np.ndarray, queries: list[int], k: int) -> list[list[tuple[int, float]]]:
    """For each query row, the ``k`` other rows of highest cosine similarity, best first."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit[queries] @ unit.T
    rows = []
    for query, scores in zip(queries, similarity):
        order = [int(i) for i in np.argsort(-scores, kind="stable") if i != query][:k]
        rows.append([(i, float(scores[i])) for i in order])
    return rows


def figure(photos: list[Path], classes: list[str], queries: list[int], found):
    """The grid: query photo, then its neighbours, one row per query."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    k = len(found[0])
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(2.0 * (k + 1), 2.2 * len(queries)), squeeze=False)
    for row, (query, hits) in enumerate(zip(queries, found)):
        cells = [(query, None)] + hits
        for column, (index, score) in enumerate(cells):
            ax = axes[row][column]
            with Image.open(photos[index]) as image:
                image.thumbnail((256, 256))
                ax.imshow(image.convert("RGB"))
            ax.set_xticks([])
            ax.set_yticks([])
            if score is None:
                ax.set_title(f"query: {classes[index]}", fontsize=9, fontweight="bold")
            else:
                same = classes[index] == classes[query]
                ax.set_title(f"{classes[index]}, cos {score:.2f}", fontsize=9,
                             color="tab:green" if same else "tab:red")
    fig.suptitle("ImageEncoder(\"mobilenet_v2\", weights=\"IMAGENET1K_V1\"): nearest neighbours by cosine",
                 fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "hymenoptera" / "val",
                        help="folder with ants/ and bees/ photo folders (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=4, help="query photos, half ants, half bees")
    parser.add_argument("--neighbours", type=int, default=4, help="neighbours shown per query")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos of each class")
    parser.add_argument("--output", type=Path, default=Path("output") / "hymenoptera_neighbours.jpg",
                        help="where to save the figure (default: %(default)s)")
    args = parser.parse_args(argv)

    by_class = {name: sorted((args.data / name).glob("*.jpg"))[:args.limit] for name in ("ants", "bees")}
    if not all(by_class.values()):
        print(f"hymenoptera photos not found in {args.data} (need ants/*.jpg and bees/*.jpg). "
              "Pass --data DIR or set SKTRANSFER_DATA.", file=sys.stderr)
        return 2
    photos = by_class["ants"] + by_class["bees"]
    classes = ["ant"] * len(by_class["ants"]) + ["bee"] * len(by_class["bees"])
    vectors = ImageEncoder("mobilenet_v2", weights="IMAGENET1K_V1").fit_transform(photos)
    # Evenly spaced queries in each class: a fixed choice, not the ones that look best.
    half = args.queries // 2
    queries = [int(i) for i in np.linspace(0, len(by_class["ants"]) - 1, args.queries - half)]
    queries += [len(by_class["ants"]) + int(i) for i in np.linspace(0, len(by_class["bees"]) - 1, half)]
    found = neighbours(vectors, queries, args.neighbours)
    agree = sum(classes[i] == classes[q] for q, hits in zip(queries, found) for i, _ in hits)
    print(f"{len(photos)} photos; {agree} of the {len(queries) * args.neighbours} neighbours shown share "
          "their query's class")
    fig = figure(photos, classes, queries, found)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # Photos compress far better as JPEG than as PNG (the figure on the docs page is ~10x smaller).
    fig.savefig(args.output, dpi=90, pil_kwargs={"quality": 85})
    print(f"Figure saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
