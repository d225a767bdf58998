"""Helpers shared by the identity tests (test_identity.py, test_identity_content.py)."""

import json

import numpy as np
import torch
from PIL import Image

from sktransfer import ImageEncoder

WEIGHTS = "IMAGENET1K_V1"


def image_encoder(**params):
    return ImageEncoder(**{"weights": WEIGHTS, "device": "cpu", "num_workers": 0, **params})


def textured(size=(96, 72), seed=0):
    """An RGB image with texture in every channel, so that every pixel matters."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def tensor_preprocess(size):
    """A preprocessing closure: every size gives a callable of the same name and source."""

    def preprocess(image):
        pixels = np.asarray(image.resize((size, size)), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    return preprocess


def changed(a, b, atol=1e-5):
    return a.shape != b.shape or not np.allclose(a, b, atol=atol, rtol=0)


def use_cls_pooling(folder):
    """Edit a sentence-transformers folder in place: CLS pooling instead of mean pooling."""
    config = folder / "1_Pooling" / "config.json"
    settings = json.loads(config.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config.write_text(json.dumps(settings, indent=2))
