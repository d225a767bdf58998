"""torchvision backbones as frozen feature extractors: weights, preprocessing, layers, pooling."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model_store import ModelNotFoundError

__all__ = ["Backbone", "build_backbone", "load_torchvision", "pool", "preprocessing_for", "resolve_weights", "network_content", "preprocessing_settings"]

#: Pooling names accepted by ImageEncoder (``None`` means flatten).
POOLINGS = {"auto", "avg", "max", "avgmax", "cls"}


def resolve_weights(model: str, weights):
    """Return the torchvision weights enum member named by ``weights`` (or None)."""
    from torchvision.models import WeightsEnum, get_model_weights

    if weights is None:
        return None
    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError):
        raise ValueError(_unknown_model_message(model)) from None
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"weights={weights} do not belong to model {model!r} ({enum.__name__}).")
        return weights
    name = str(weights).split(".")[-1]  # accept "IMAGENET1K_V1" and "MobileNet_V2_Weights.IMAGENET1K_V1"
    try:
        return enum[name]
    except KeyError:
        choices = ", ".join(["DEFAULT", *(member.name for member in enum)])
        raise ValueError(f"weights={weights!r} is not available for {model!r}; choose one of: {choices}, or None.") from None


def _unknown_model_message(model: str) -> str:
    import difflib

    from torchvision.models import list_models

    names = list_models()
    close = difflib.get_close_matches(model, names, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"model={model!r} is not a torchvision classification model.{hint} See torchvision.models.list_models()."


def checkpoint_path(weights) -> Path:
    """Where torchvision's loader looks for the checkpoint of ``weights`` before downloading."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def offline_weights(model: str) -> list[str]:
    """Names of the weights of ``model`` whose checkpoints are already on this machine."""
    from torchvision.models import get_model_weights

    return [member.name for member in get_model_weights(model) if checkpoint_path(member).exists()]


def preprocessing_for(weights, model: str, image_size, crop):
    """Build the weights' own preprocessing, with optional overrides.

    ``image_size`` is the side of the square the network sees; ``crop`` the fraction of the
    shorter side kept by the centre crop. Defaults come from the weights (224/256 for most
    ImageNet models, 299/342 for Inception v3, 384/384 for some ViTs), never a fixed 224.
    """
    from torchvision.models import get_model_weights
    from torchvision.transforms._presets import ImageClassification

    reference = weights
    if reference is None:  # random init: still use the architecture's usual input geometry
        reference = get_model_weights(model).DEFAULT
    preset = reference.transforms()
    crop_size = int(image_size or preset.crop_size[0])
    ratio = float(crop) if crop is not None else preset.crop_size[0] / preset.resize_size[0]
    return ImageClassification(
        crop_size=crop_size,
        resize_size=int(round(crop_size / ratio)),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation,
    )


def default_preprocessing(image_size, crop):
    """ImageNet preprocessing for a user's own module when no callable is given."""
    from torchvision.transforms._presets import ImageClassification

    crop_size = int(image_size or 224)
    return ImageClassification(crop_size=crop_size, resize_size=int(round(crop_size / (crop or 0.875))))


def last_linear(module: nn.Module):
    last = None
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            last = name
    return last


def set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


#: Random initialisation (``weights=None``) is seeded, so the same encoder gives the same
#: features in every process and after unpickling (for one torch version).
RANDOM_INIT_SEED = 0


def network_content(model: str, weights) -> str:
    """Content hash of a torchvision network before loading it: the checkpoint file's bytes.

    With ``weights=None`` the network is the seeded random initialisation of that torch and
    torchvision version. Architecture code is torchvision's, so its version is part of the hash.
    A missing checkpoint is fetched (or reported) by torchvision's own loader first.
    """
    import torchvision

    from ._content import digest, file_digest

    versions = {"torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0]}
    if weights is None:
        return digest({"model": model, "random_init_seed": RANDOM_INIT_SEED, **versions})
    path = checkpoint_path(weights)
    if not path.exists():
        load_torchvision(model, weights)  # downloads it once, or raises ModelNotFoundError
    return digest({"model": model, "checkpoint": file_digest(path), "torchvision": versions["torchvision"]})


def preprocessing_settings(preprocess) -> dict:
    """What a preprocessing callable does, for the encoder's identity.

    torchvision presets and timm's preprocessing are described by their settings. Any other
    callable by itself: its code, closure cells, defaults, referenced globals and, for objects,
    their full state (`object_digest`), so two closures of one
    factory differ, and so does a ``Compose`` whose steps were edited. It must also give the same
    output twice on a probe image (a check of determinism, not part of the identity).
    """
    from torchvision.transforms._presets import ImageClassification

    from ._content import object_digest
    from ._timm import TimmPreprocess

    if isinstance(preprocess, TimmPreprocess):
        return preprocess.settings()
    if isinstance(preprocess, ImageClassification):
        return {
            "crop_size": list(preprocess.crop_size),
            "resize_size": list(preprocess.resize_size),
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
            "interpolation": str(preprocess.interpolation),
            "antialias": preprocess.antialias,
        }
    name = getattr(preprocess, "__qualname__", type(preprocess).__qualname__)
    first, second = (preprocess(probe_image()) for _ in range(2))
    arrays = [np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float32) for out in (first, second)]
    if arrays[0].shape != arrays[1].shape or not np.array_equal(arrays[0], arrays[1]):
        raise ValueError(
            f"{name} returned different outputs for the same image; preprocessing must be deterministic "
            "(move random augmentation out of the encoder's preprocess)."
        )
    return {"callable": f"{getattr(preprocess, '__module__', '')}.{name}",
            "content": object_digest(preprocess, "preprocess")}


def preprocessing_summary(settings: dict) -> str:
    """One readable line for `preprocessing_settings`' output."""
    if "timm" in settings:
        config = settings["timm"]
        return (f"timm: resize {math.floor(config['input_size'][-1] / config['crop_pct'])}, crop "
                f"{config['input_size'][-1]}, {config['interpolation']}")
    if "crop_size" in settings:
        interpolation = settings["interpolation"].split(".")[-1].lower()
        return f"resize {settings['resize_size'][0]}, crop {settings['crop_size'][0]}, {interpolation}"
    return f"{settings['callable']} (content {settings['content'][:8]})"


def probe_image():
    """A fixed 320x256 RGB image with structure in every channel (gradients and a block)."""
    from PIL import Image

    y, x = np.mgrid[0:256, 0:320]
    pixels = np.stack([x * 255 // 319, y * 255 // 255, (x + y) % 256], axis=-1).astype(np.uint8)
    pixels[64:128, 80:160] = (200, 30, 90)
    return Image.fromarray(pixels, "RGB")


@dataclass
class Backbone:
    """A frozen network ready to encode: returns ``{layer_name: tensor}`` for a batch."""

    network: nn.Module
    layers: tuple  # output names, in order
    class_token: bool  # ViT-style token sequences carry a class token at position 0
    channels_last_maps: bool  # Swin returns (N, H, W, C) feature maps
    output_dims: dict = field(default_factory=dict)  # (input shape, pooling) -> {layer: features}

    def __call__(self, batch: torch.Tensor) -> dict:
        out = self.network(batch)
        if isinstance(out, dict):
            return out
        if hasattr(out, "logits"):  # Inception/GoogLeNet outputs in some configurations
            out = out.logits
        return {self.layers[0]: out}


def load_torchvision(model: str, weights) -> nn.Module:
    """Load a torchvision model, turning a failed download into an actionable error."""
    from torchvision.models import get_model

    if weights is None:
        warnings.warn(
            f"ImageEncoder(model={model!r}, weights=None) uses randomly initialised weights (seeded: the "
            "same in every process): the features are not pretrained and carry little information. Pass "
            "weights='DEFAULT' or a named checkpoint for transfer learning.",
            UserWarning,
            stacklevel=4,
        )
        with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG
            torch.manual_seed(RANDOM_INIT_SEED)
            return get_model(model, weights=None)
    try:
        return get_model(model, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a corrupt file a RuntimeError
        target = checkpoint_path(weights)
        local = offline_weights(model)
        also = f" Weights of {model!r} available offline here: {', '.join(local)}." if local else ""
        raise ModelNotFoundError(
            f"Could not load {weights} for {model!r}: {type(exc).__name__}: {exc}. Remedies: (1) give this "
            f"machine network access to {weights.url.split('/')[2]} so torchvision downloads it once, or "
            f"(2) place the official checkpoint file at {target}.{also}"
        ) from None


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """Fold inference-mode BatchNorm into the preceding convolution (``torch.fx`` fusion).

    Frozen BatchNorm is an affine map, so merging it into the convolution's weights gives the
    same outputs (within 1e-5) without a separate memory-bound pass per layer: measured 1.3x on
    MobileNetV2 in NCHW and, together with channels_last, 3.7x over a plain NCHW forward on this
    project's CPU. Networks that ``torch.fx`` cannot trace are returned unchanged.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(network)
    except Exception:  # untraceable control flow: keep the eager module
        return network


def check_layer_names(layers, available: list, what: str, listing: str) -> None:
    """Raise a ``ValueError`` for the first requested layer not in ``available``, with close names."""
    missing = [name for name in layers if name not in available]
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], available, n=3)
        raise ValueError(
            f"layer {missing[0]!r} is not {what}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else ".")
            + f" {listing}"
        )


def build_backbone(network: nn.Module, layer, *, is_torchvision: bool) -> Backbone:
    """Wrap ``network`` so that it returns the requested layers (default: the penultimate one)."""
    network = network.eval().requires_grad_(False)
    class_token = hasattr(network, "class_token")
    channels_last_maps = type(network).__name__.startswith("SwinTransformer")
    if layer is None:
        head = last_linear(network) if is_torchvision else None
        if head is not None:
            # The penultimate representation is the input of the classifier head: drop the head.
            # (The network was loaded for this backbone alone, so editing it in place is safe.)
            set_submodule(network, head, nn.Identity())
            return Backbone(fold_batchnorm(network), ("penultimate",), False, channels_last_maps)
        return Backbone(fold_batchnorm(network), ("output",), class_token, channels_last_maps)
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    available = get_graph_node_names(network)[1]
    check_layer_names(layers, available, "a node of this model",
                      f"The last nodes are {available[-6:]}; list all with "
                      "torchvision.models.feature_extraction.get_graph_node_names(model)[1].")
    extractor = create_feature_extractor(network, return_nodes={name: name for name in layers})
    return Backbone(fold_batchnorm(extractor), layers, class_token, channels_last_maps)


def pool(tensor: torch.Tensor, pooling, *, class_token: bool, channels_last_maps: bool) -> torch.Tensor:
    """Reduce one layer's output to ``(N, features)``.

    4-D maps are ``(N, C, H, W)`` (``(N, H, W, C)`` for Swin); 3-D outputs are token sequences
    ``(N, L, D)``. ``"auto"`` averages maps and takes the class token of ViT-style sequences.
    """
    if tensor.ndim == 2:
        return tensor
    if pooling is None or pooling == "flatten":
        return tensor.flatten(1)
    if tensor.ndim == 4:
        dims = (1, 2) if channels_last_maps else (2, 3)
    elif tensor.ndim == 3:
        dims = (1,)
    else:
        raise ValueError(f"cannot pool an output of shape {tuple(tensor.shape)}; use pooling=None to flatten it")
    if pooling == "auto":
        pooling = "cls" if tensor.ndim == 3 and class_token else "avg"
    if pooling == "cls":
        if tensor.ndim != 3:
            raise ValueError(
                f"pooling='cls' takes the class token of a token sequence (N, L, D); this layer "
                f"outputs shape {tuple(tensor.shape)}. Use 'avg', 'max' or 'avgmax'."
            )
        return tensor[:, 0]
    if pooling == "avg":
        return tensor.mean(dim=dims)
    if pooling == "max":
        return tensor.amax(dim=dims)
    return torch.cat([tensor.mean(dim=dims), tensor.amax(dim=dims)], dim=1)  # avgmax
