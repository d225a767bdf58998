"""timm backbones for ImageEncoder: ``model="timm:<name>"``.

Networks come from ``timm.create_model(name, pretrained=..., num_classes=0)``, so the output is
timm's own pooled pre-logits features, and preprocessing is timm's own data config
(``resolve_data_config`` + ``create_transform``: the model's interpolation, crop fraction, mean
and std), never torchvision's defaults. Pretrained weights load through timm's ordinary path (the
Hugging Face cache, then the hub); the content hash is that weight file's. Intermediate layers
go through ``forward_intermediates`` and are named as in the model's ``feature_info``.

timm is an optional dependency (``pip install "sktransfer[timm]"``), imported only here.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import torch
from torch import nn

from .model_store import ModelNotFoundError

__all__ = ["PREFIX", "is_timm", "resolve_name", "content", "create", "preprocessing", "build"]

PREFIX = "timm:"
RANDOM_INIT_SEED = 0


def is_timm(model) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError('ImageEncoder("timm:...") needs the timm package: pip install "sktransfer[timm]"') from None
    return timm


def resolve_name(model: str, weights) -> tuple[str, bool]:
    """The timm model name (``architecture.tag``) and whether pretrained weights are asked for.

    ``weights="DEFAULT"`` means timm's default pretrained tag (or the tag in the name),
    ``None`` a seeded random initialisation, any other string a pretrained tag such as ``"in1k"``.
    """
    timm = _timm()
    name = model[len(PREFIX):].strip()
    architecture, tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(f"model={model!r}: {architecture!r} is not a timm model.{hint} See timm.list_models().")
    if weights is None:
        return architecture, False
    if not isinstance(weights, str):
        raise ValueError(f"weights={weights!r}: a timm model takes 'DEFAULT', a pretrained tag (e.g. 'in1k') or None.")
    if weights != "DEFAULT":
        if tag and tag != weights:
            raise ValueError(f"model={model!r} names tag {tag!r} and weights={weights!r} another; give the tag once.")
        tag = weights
    if not tag:  # timm's default tag, named, so that both spellings share one identity
        default = timm.models.get_pretrained_cfg(architecture)
        tag = default.tag if default is not None else ""
    full = f"{architecture}.{tag}" if tag else architecture
    try:
        known = timm.models.get_pretrained_cfg(full) is not None
    except RuntimeError:  # "Invalid pretrained tag"
        known = False
    if not known:
        tags = timm.models.get_arch_pretrained_cfgs(architecture)
        raise ValueError(f"{full!r} has no pretrained weights in timm; its tags are: {', '.join(tags) or 'none'}.")
    return full, True


def _pretrained_cfg(name: str):
    return _timm().models.get_pretrained_cfg(name)


def weight_file(name: str) -> Path | None:
    """The pretrained weight file timm would load for ``name``, if it is on this machine."""
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file:
        return Path(cfg.file) if Path(cfg.file).exists() else None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "open_clip_model.safetensors",
                                                                   "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        return path if path.exists() else None
    return None


def content(name: str, pretrained: bool) -> str:
    """Content hash before loading: the weight file's bytes, timm's version (its architecture code)."""
    import timm

    from ._content import digest, file_digest

    versions = {"timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    if not pretrained:
        return digest({"timm": name, "random_init_seed": RANDOM_INIT_SEED, **versions})
    path = weight_file(name)
    if path is None:
        create(name, True)  # downloads it once through timm, or raises ModelNotFoundError
        path = weight_file(name)
    if path is None:
        from ._content import module_content_hash

        return digest({"timm": name, "module": module_content_hash(create(name, True)), **versions})
    return digest({"timm": name, "checkpoint": file_digest(path), "timm_version": versions["timm"]})


def create(name: str, pretrained: bool) -> nn.Module:
    """``timm.create_model(name, pretrained, num_classes=0)``; a failed download names the remedies."""
    timm = _timm()
    if not pretrained:
        import warnings

        warnings.warn(
            f"ImageEncoder(model='timm:{name}', weights=None) uses randomly initialised weights (seeded): the "
            "features are not pretrained. Pass weights='DEFAULT' for transfer learning.", UserWarning, stacklevel=5)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(name, pretrained=False, num_classes=0)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # hub errors, missing files, corrupt checkpoints
        cfg = _pretrained_cfg(name)
        where = f"the Hugging Face repository {cfg.hf_hub_id!r}" if cfg and cfg.hf_hub_id else (cfg.url if cfg else "")
        raise ModelNotFoundError(
            f"Could not load timm's pretrained weights for {name!r}: {type(exc).__name__}: {exc}. Remedies: (1) give "
            f"this machine network access so timm downloads them once from {where}, or (2) place the file in the "
            "Hugging Face cache under that repository (huggingface-cli download), or (3) pass your own network "
            "as ImageEncoder(model=timm.create_model(..., pretrained_cfg_overlay=dict(file=...), num_classes=0))."
        ) from None


class TimmPreprocess:
    """timm's evaluation transform for one data config, described by that config.

    Parameters
    ----------
    config : dict
        timm's data config (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
        ``crop_mode``), as ``timm.data.resolve_data_config`` returns it.
    """

    def __init__(self, config: dict):
        from timm.data import create_transform

        self.config = dict(config)
        self.transform = create_transform(**self.config, is_training=False)
        side = self.config["input_size"][-1]
        # The shorter side the transform resizes to (timm floors it), for draft JPEG decoding.
        self.resize_size = [math.floor(side / self.config["crop_pct"])] if self.config["crop_mode"] == "center" else None

    def __call__(self, image):
        return self.transform(image)

    def settings(self) -> dict:
        return {"timm": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.config.items())}}

    def __repr__(self):
        return f"TimmPreprocess({self.config})"


def preprocessing(name: str, image_size, crop) -> TimmPreprocess:
    """timm's data config of the model's pretrained weights, with optional overrides."""
    from timm.data import resolve_data_config

    architecture = name.split(".")[0]
    cfg = _pretrained_cfg(name) or _pretrained_cfg(architecture)
    config = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg else {}, use_test_size=True)
    if image_size:
        config["input_size"] = (3, int(image_size), int(image_size))
    if crop is not None:
        config["crop_pct"] = float(crop)
    return TimmPreprocess(config)


class _Intermediates(nn.Module):
    """Returns the named ``feature_info`` stages of a timm network, via ``forward_intermediates``."""

    def __init__(self, network: nn.Module, indices: list, names: tuple):
        super().__init__()
        self.network, self.indices, self.names = network, list(indices), names

    def forward(self, x):
        maps = self.network.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        return dict(zip(self.names, maps))


def build(network: nn.Module, layers):
    """A Backbone: the pooled pre-logits features, or the named feature stages."""
    from ._backbones import Backbone, check_layer_names

    network = network.eval().requires_grad_(False)
    if layers is None:
        return Backbone(network, ("penultimate",), False, False)
    stages = [info["module"] for info in network.feature_info]
    check_layer_names(layers, stages, "a feature stage of this timm model",
                      f"Its stages (model.feature_info) are: {stages}.")
    if not hasattr(network, "forward_intermediates"):
        raise ValueError(f"{type(network).__name__} has no forward_intermediates in this timm version: use layer=None.")
    return Backbone(_Intermediates(network, [stages.index(name) for name in layers], tuple(layers)),
                    tuple(layers), False, False)
