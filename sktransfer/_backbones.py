"""torchvision backbones, and what every ImageEncoder source shares: preprocessing, layers, pooling. A source
(`TorchvisionSource`, `ModuleSource`, timm's) gives ``name``, ``content()``, ``location``, ``create()``,
``preprocessing`` and its `Backbone` (``build``)."""

from __future__ import annotations

import copy
import difflib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._content import digest, file_digest, module_content_hash, object_digest
from ._messages import setting
from .model_store import ModelNotFoundError

__all__ = ["Backbone", "ClassificationPreset", "DescribedPreprocess", "ModuleSource", "TorchvisionSource",
           "load_torchvision", "pool", "preprocessing_settings", "resize_side", "resolve_weights"]

#: Pooling names accepted by ImageEncoder (``None`` means flatten).
POOLINGS = {"auto", "avg", "max", "avgmax", "cls"}

#: ``weights=None`` is seeded: the same features in every process and after unpickling (one torch version).
RANDOM_INIT_SEED = 0


def random_init(model: str, make):
    """``make()`` under the seeded generator (the caller's is left alone), with a warning that says so."""
    warnings.warn(
        f"ImageEncoder(model={model!r}, weights=None) uses randomly initialised weights (seeded: the same in every "
        f"process): the features are not pretrained and carry little information. Pass {setting('weights', 'DEFAULT')}"
        " or a named checkpoint for transfer learning.", UserWarning, stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return make()


def resolve_weights(model: str, weights):
    """The torchvision weights enum member named by ``weights`` (a name, a member, ``"DEFAULT"``), or None."""
    from torchvision.models import WeightsEnum, get_model_weights, list_models

    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError):
        close = difflib.get_close_matches(model, list_models(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"model={model!r} is not a torchvision classification model.{hint} See "
                         "torchvision.models.list_models().") from None
    if weights is None:
        return None
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


def checkpoint_path(weights) -> Path:
    """Where torchvision's loader looks for the checkpoint of ``weights`` before downloading."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def offline_weights(model: str) -> list[str]:
    """Names of the weights of ``model`` whose checkpoints are already on this machine."""
    from torchvision.models import get_model_weights

    return [member.name for member in get_model_weights(model) if checkpoint_path(member).exists()]


def load_torchvision(model: str, weights) -> nn.Module:
    """A torchvision model with ``weights`` (a member, or None: seeded random init); failed downloads say what to do."""
    from torchvision.models import get_model

    if weights is None:
        return random_init(model, lambda: get_model(model, weights=None))
    try:
        return get_model(model, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a corrupt file a RuntimeError
        local = [name for name in offline_weights(model) if name != weights.name]
        also = (f" Weights of {model!r} available offline here: {', '.join(local)} (pass {setting('weights', local[0])}"
                "; 'sktransfer models' lists what is on this machine)." if local else "")
        raise ModelNotFoundError(
            f"Could not load {weights} for {model!r}: {type(exc).__name__}: {exc}. Remedies: (1) give this "
            f"machine network access to {weights.url.split('/')[2]} so torchvision downloads it once, or "
            f"(2) place the official checkpoint file at {checkpoint_path(weights)}.{also}") from None


def last_linear(module: nn.Module):
    """The name of the last ``nn.Linear`` in ``module`` (a torchvision model's classifier head), or None."""
    return next((name for name, child in reversed(list(module.named_modules())) if isinstance(child, nn.Linear)), None)


def set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _classification(crop_size: int, crop: float, **preset):
    """torchvision's evaluation preset: resize the shorter side to ``crop_size / crop``, centre-crop ``crop_size``."""
    return ClassificationPreset(crop_size=crop_size, resize_size=int(round(crop_size / crop)), **preset)


class TorchvisionSource:
    """A torchvision classification model by name, with its weights (an enum member) or None."""

    def __init__(self, model: str, weights):
        self.model, self.weights = model, resolve_weights(model, weights)
        self.name = model if self.weights is None else f"{model} {self.weights}"

    @property
    def location(self) -> str:
        return "a seeded random initialisation" if self.weights is None else str(checkpoint_path(self.weights))

    def content(self) -> str:
        """The checkpoint's digest (fetched if absent) and torchvision's version, or the seeded random init's."""
        import torchvision

        versions = {"torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0]}
        if self.weights is None:
            return digest({"model": self.model, "random_init_seed": RANDOM_INIT_SEED, **versions})
        path = checkpoint_path(self.weights)
        if not path.exists():
            self.create()  # downloads it once, or raises ModelNotFoundError
        return digest({"model": self.model, "checkpoint": file_digest(path), "torchvision": versions["torchvision"]})

    def create(self) -> nn.Module:
        return load_torchvision(self.model, self.weights)

    def preprocessing(self, image_size, crop):
        """The weights' own preset (random init: the DEFAULT weights'), never a fixed 224."""
        from torchvision.models import get_model_weights

        preset = (self.weights or get_model_weights(self.model).DEFAULT).transforms()
        ratio = float(crop) if crop is not None else preset.crop_size[0] / preset.resize_size[0]
        return _classification(int(image_size or preset.crop_size[0]), ratio, mean=tuple(preset.mean),
                               std=tuple(preset.std), interpolation=preset.interpolation)

    def build(self, network: nn.Module, layers) -> Backbone:
        return build_backbone(network, layers, head=True)


class ModuleSource:
    """The user's own module: used as given (its output, pooled if spatial), told apart by its content."""

    location = "the module passed as model"

    def __init__(self, module: nn.Module):
        self.module = module
        self.name = f"<module {type(module).__module__}.{type(module).__qualname__}>"

    def content(self) -> str:
        return module_content_hash(self.module)

    def create(self) -> nn.Module:
        """A deep copy to run frozen: the estimator's parameter is never modified in place."""
        shared = {}  # state that cannot be copied is shared: the module vouched for its identity
        for child in self.module.modules():
            for name, value in vars(child).items():
                if name not in ("_parameters", "_buffers", "_modules"):
                    try:
                        copy.deepcopy(value)
                    except Exception:  # a lock, an open file
                        shared[id(value)] = value
        return copy.deepcopy(self.module, shared)

    def preprocessing(self, image_size, crop):
        return _classification(int(image_size or 224), crop or 0.875)  # ImageNet's

    def build(self, network: nn.Module, layers) -> Backbone:
        return build_backbone(network, layers, head=False)


class DescribedPreprocess:
    """A preprocessing that describes itself for the identity (`settings`); ``resize_size``: ``[side]`` or None."""

    resize_size = None

    def settings(self) -> dict:
        raise NotImplementedError

    # Two presets are the same when they describe the same preprocessing: the identity's own test
    # (a pickle would compare tensor storages, which differ between equal copies).
    def __eq__(self, other):
        return type(other) is type(self) and other.settings() == self.settings()

    def __hash__(self):  # equal presets share a type, so this is consistent with __eq__
        return hash(type(self).__qualname__)


class ClassificationPreset(DescribedPreprocess):
    """torchvision's evaluation preset (``weights.transforms()``: resize the shorter side, centre-crop, scale
    to [0, 1], normalise), with the resize on the 8-bit tensor: 1.8x as fast as PIL's on a CPU
    (benchmarks/bench_images.py), at most one 8-bit level apart, so its identity says which resize
    it ran. Takes an RGB ``PIL.Image`` or a ``(3, H, W)`` uint8 tensor."""

    antialias = True

    def __init__(self, crop_size: int, resize_size: int, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 interpolation=None):
        from torchvision.transforms import InterpolationMode

        self.crop_size, self.resize_size = [int(crop_size)], [int(resize_size)]
        self.mean, self.std = list(mean), list(std)
        self.interpolation = InterpolationMode.BILINEAR if interpolation is None else interpolation
        std_ = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add on the 8-bit values
        self._scale, self._shift = 1.0 / (255.0 * std_), -torch.tensor(self.mean).view(3, 1, 1) / std_

    def __call__(self, image) -> torch.Tensor:
        import torchvision.transforms.v2.functional as F
        from PIL import Image

        if isinstance(image, Image.Image):
            # (H, W, 3) viewed as (3, H, W): the channels-last layout torch's 8-bit resize runs fastest on
            pixels = torch.from_numpy(np.array(image.convert("RGB") if image.mode != "RGB" else image))
            pixels = pixels.permute(2, 0, 1)
        elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
            pixels = image
        else:
            raise TypeError(f"ClassificationPreset takes an RGB PIL.Image or a (3, H, W) uint8 tensor, got "
                            f"{type(image).__name__}{tuple(getattr(image, 'shape', ()))}")
        pixels = F.resize(pixels, self.resize_size, interpolation=self.interpolation, antialias=True)
        pixels = F.center_crop(pixels, self.crop_size)
        return torch.addcmul(self._shift, pixels.to(torch.float32), self._scale).contiguous()

    def settings(self) -> dict:
        return {"crop_size": self.crop_size, "resize_size": self.resize_size, "mean": self.mean, "std": self.std,
                "interpolation": str(self.interpolation), "antialias": True,
                # not PIL's resize (ImageClassification's): the rounding differs, so the vectors do
                "resize": f"uint8 tensor, torch {torch.__version__.split('+')[0]}"}

    def __repr__(self):
        interpolation = str(self.interpolation).split(".")[-1]
        return (f"ClassificationPreset(crop_size={self.crop_size[0]}, resize_size={self.resize_size[0]}, "
                f"mean={self.mean}, std={self.std}, interpolation={interpolation})")


def resize_side(preprocess) -> int | None:
    """The shorter side a torchvision preset or a `DescribedPreprocess` resizes to (draft JPEG decoding aims there)."""
    size = getattr(preprocess, "resize_size", None)
    return int(size[0]) if size else None


def preprocessing_settings(preprocess) -> dict:
    """What a preprocessing does, for the identity: its settings, or any callable's `object_digest`
    (it must give the same output twice on a probe)."""
    from torchvision.transforms._presets import ImageClassification

    if isinstance(preprocess, DescribedPreprocess):
        return preprocess.settings()
    if isinstance(preprocess, ImageClassification):
        return {"crop_size": list(preprocess.crop_size), "resize_size": list(preprocess.resize_size),
                "mean": list(preprocess.mean), "std": list(preprocess.std),
                "interpolation": str(preprocess.interpolation), "antialias": preprocess.antialias}
    name = getattr(preprocess, "__qualname__", type(preprocess).__qualname__)
    arrays = [np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float32)
              for out in (preprocess(probe_image()), preprocess(probe_image()))]
    if arrays[0].shape != arrays[1].shape or not np.array_equal(arrays[0], arrays[1]):
        raise ValueError(f"{name} returned different outputs for the same image; preprocessing must be deterministic "
                         "(move random augmentation out of the encoder's preprocess).")
    return {"callable": f"{getattr(preprocess, '__module__', '')}.{name}",
            "content": object_digest(preprocess, "preprocess")}


def preprocessing_summary(settings: dict) -> str:
    if "timm" in settings:
        config = settings["timm"]
        return (f"timm: resize {math.floor(config['input_size'][-1] / config['crop_pct'])}, crop "
                f"{config['input_size'][-1]}, {config['interpolation']}")
    if "crop_size" in settings:
        interpolation = settings["interpolation"].split(".")[-1].lower()
        return f"resize {settings['resize_size'][0]}, crop {settings['crop_size'][0]}, {interpolation}"
    return f"{settings['callable']} (content {settings['content'][:8]})"


def probe_image():
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

    def pooled(self, tensor: torch.Tensor, pooling) -> torch.Tensor:
        return pool(tensor, pooling, class_token=self.class_token, channels_last_maps=self.channels_last_maps)


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """Inference BatchNorm folded into the preceding convolution (``torch.fx``): outputs within 1e-5, no
    memory-bound pass per layer (MobileNetV2 on our CPU: 1.3x, 3.7x with channels_last)."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(network)
    except Exception:  # untraceable control flow: keep the eager module
        return network


def check_layer_names(layers, available: list, what: str, listing: str) -> None:
    """A ``ValueError`` for the first of ``layers`` not in ``available``, naming close ones."""
    missing = [name for name in layers if name not in available]
    if missing:
        close = difflib.get_close_matches(missing[0], available, n=3)
        raise ValueError(
            f"layer {missing[0]!r} is not {what}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else ".")
            + f" {listing}")


def build_backbone(network: nn.Module, layer, *, head: bool) -> Backbone:
    """``network`` frozen, returning ``layer``; by default the input of its classifier head (``head``) or its output."""
    network = network.eval().requires_grad_(False)
    class_token, channels_last_maps = hasattr(network, "class_token"), type(network).__name__.startswith("SwinTransformer")
    if layer is None:
        name = last_linear(network) if head else None
        if name is not None:  # the network was loaded for this backbone alone: editing it in place is safe
            set_submodule(network, name, nn.Identity())
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


def effective_pooling(output: torch.Tensor, pooling, class_token: bool):
    """What ``pooling`` does to one layer's output: None when it is already a vector."""
    if output.ndim == 2:
        return None
    if pooling == "auto":
        return "cls" if output.ndim == 3 and class_token else "avg"
    return "flatten" if pooling is None else pooling


def pool(tensor: torch.Tensor, pooling, *, class_token: bool, channels_last_maps: bool) -> torch.Tensor:
    """One layer's output as ``(N, features)``: maps ``(N, C, H, W)`` (Swin: ``(N, H, W, C)``), tokens ``(N, L, D)``."""
    pooling = effective_pooling(tensor, pooling, class_token)
    if pooling in (None, "flatten"):
        return tensor if pooling is None else tensor.flatten(1)
    if tensor.ndim not in (3, 4):
        raise ValueError(f"cannot pool an output of shape {tuple(tensor.shape)}; use pooling=None to flatten it")
    dims = (1,) if tensor.ndim == 3 else (1, 2) if channels_last_maps else (2, 3)
    if pooling == "cls":
        if tensor.ndim != 3:
            raise ValueError(f"pooling='cls' takes the class token of a token sequence (N, L, D); this layer "
                             f"outputs shape {tuple(tensor.shape)}. Use 'avg', 'max' or 'avgmax'.")
        return tensor[:, 0]
    if pooling == "avg":
        return tensor.mean(dim=dims)
    if pooling == "max":
        return tensor.amax(dim=dims)
    return torch.cat([tensor.mean(dim=dims), tensor.amax(dim=dims)], dim=1)  # avgmax
