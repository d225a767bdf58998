"""Which template `ZeroShotClassifier(TextEncoder())` uses by default: SST-2 accuracy per template.

Every candidate (none, and four text templates, CLIP's photo template among them for contrast) on
two label styles, scored on the SST-2 dev split, where the default was chosen; the test split is
printed beside it, to be read once after the choice, never to make it. all-MiniLM-L6-v2, the
sentences encoded once through a cache.

Usage: python benchmarks/bench_zero_shot_templates.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, machine_description, read_sst2  # noqa: E402

from sktransfer import EmbeddingCache, TextEncoder, ZeroShotClassifier  # noqa: E402

LABELS = {"names": {0: "negative", 1: "positive"},
          "descriptions": {0: "a negative review", 1: "a positive review"}}
TEMPLATES = [None, "This example is {}.", "This text is {}.", "It is {}.", "a photo of a {}."]


def main() -> int:
    print(f"machine: {machine_description()}")
    dev, y_dev = read_sst2(DATA_DIR / "sst2" / "stsa.binary.dev")
    test, y_test = read_sst2(DATA_DIR / "sst2" / "stsa.binary.test")
    with tempfile.TemporaryDirectory() as folder:
        encoder = TextEncoder(device="cpu", cache=EmbeddingCache(folder))
        for style, labels in LABELS.items():
            for template in TEMPLATES:
                classifier = ZeroShotClassifier(encoder, labels=labels, template=template).fit(list(dev[:1]))
                scores = [np.mean(classifier.predict(list(x)) == np.asarray(y)) for x, y in ((dev, y_dev),
                                                                                             (test, y_test))]
                print(f"{style:12s} template={template!r:24s} dev {scores[0]:.4f}  test {scores[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
