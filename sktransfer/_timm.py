"""timm backbones for ImageEncoder (``model="timm:<name>"``): the source `TimmSource`.

``timm.create_model(name, pretrained=..., num_classes=0)`` with timm's own data config for
preprocessing (`TimmPreprocess`); layers are ``feature_info`` stages via ``forward_intermediates``.
timm is imported only here.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import torch
from torch import nn

from ._backbones import RANDOM_INIT_SEED, Backbone, DescribedPreprocess, check_layer_names, random_init
from ._content import digest, file_digest, module_content_hash
from ._runtime import optional_import
from .model_store import ModelNotFoundError

__all__ = ["PREFIX", "TimmPreprocess", "TimmSource", "is_timm"]

PREFIX = "timm:"


def is_timm(model) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def _timm():
    return optional_import("timm", "timm", 'ImageEncoder("timm:...")')


def _pretrained_cfg(name: str):
    return _timm().models.get_pretrained_cfg(name)


def resolve_name(model: str, weights) -> tuple[str, bool]:
    """The timm name (``architecture.tag``; ``"DEFAULT"``: timm's default tag) and whether it is pretrained."""
    timm = _timm()
    architecture, tag = timm.models.split_model_name_tag(model[len(PREFIX):].strip())
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
        default = _pretrained_cfg(architecture)
        tag = default.tag if default is not None else ""
    full = f"{architecture}.{tag}" if tag else architecture
    try:
        known = _pretrained_cfg(full) is not None
    except RuntimeError:  # "Invalid pretrained tag"
        known = False
    if not known:
        tags = timm.models.get_arch_pretrained_cfgs(architecture)
        raise ValueError(f"{full!r} has no pretrained weights in timm; its tags are: {', '.join(tags) or 'none'}.")
    return full, True


class TimmSource:
    """A timm network by name and pretrained tag (or seeded random init), with timm's own data config."""

    def __init__(self, model: str, weights):
        self.timm_name, self.pretrained = resolve_name(model, weights)
        self.name = PREFIX + self.timm_name + ("" if self.pretrained else " (random init)")

    @property
    def location(self) -> str:
        if not self.pretrained:
            return "timm's random initialisation"
        return str(self.weight_file() or f"timm's pretrained weights of {self.timm_name!r}")

    def weight_file(self) -> Path | None:
        """The pretrained weight file timm would load, if it is on this machine."""
        cfg = _pretrained_cfg(self.timm_name)
        if cfg is None:
            return None
        if cfg.file:
            return Path(cfg.file) if Path(cfg.file).exists() else None
        if cfg.hf_hub_id:
            from huggingface_hub import try_to_load_from_cache

            repo, _, revision = cfg.hf_hub_id.partition("@")
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else [
                "model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str):
                    return Path(found)
        if cfg.url:
            path = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
            return path if path.exists() else None
        return None

    def content(self) -> str:
        """The weight file's digest (fetched first if absent) and timm's version (its architecture code)."""
        name = self.timm_name
        versions = {"timm": _timm().__version__, "torch": torch.__version__.split("+")[0]}
        if not self.pretrained:
            return digest({"timm": name, "random_init_seed": RANDOM_INIT_SEED, **versions})
        path = self.weight_file()
        if path is None:
            self.create()  # downloads it once through timm, or raises ModelNotFoundError
            path = self.weight_file()
        if path is None:
            return digest({"timm": name, "module": module_content_hash(self.create()), **versions})
        return digest({"timm": name, "checkpoint": file_digest(path), "timm_version": versions["timm"]})

    def create(self) -> nn.Module:
        """``timm.create_model(name, pretrained, num_classes=0)``; a failed download names the remedies."""
        timm, name = _timm(), self.timm_name
        if not self.pretrained:
            return random_init(PREFIX + name, lambda: timm.create_model(name, pretrained=False, num_classes=0))
        try:
            return timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:  # hub errors, missing files, corrupt checkpoints
            cfg = _pretrained_cfg(name)
            where = f"the Hugging Face repository {cfg.hf_hub_id!r}" if cfg and cfg.hf_hub_id else (cfg.url if cfg else "")
            raise ModelNotFoundError(
                f"Could not load timm's pretrained weights for {name!r}: {type(exc).__name__}: {exc}. Remedies: (1) "
                f"give this machine network access so timm downloads them once from {where}, or (2) place the file "
                "in the Hugging Face cache under that repository (huggingface-cli download), or (3) pass your own "
                "network as ImageEncoder(model=timm.create_model(..., pretrained_cfg_overlay=dict(file=...), "
                "num_classes=0)).") from None

    def preprocessing(self, image_size, crop) -> TimmPreprocess:
        from timm.data import resolve_data_config

        cfg = _pretrained_cfg(self.timm_name) or _pretrained_cfg(self.timm_name.split(".")[0])
        config = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg else {}, use_test_size=True)
        if image_size:
            config["input_size"] = (3, int(image_size), int(image_size))
        if crop is not None:
            config["crop_pct"] = float(crop)
        return TimmPreprocess(config)

    def build(self, network: nn.Module, layers) -> Backbone:
        """The pooled pre-logits features, or the named feature stages."""
        network = network.eval().requires_grad_(False)
        if layers is None:
            return Backbone(network, ("penultimate",), False, False)
        stages = [info["module"] for info in network.feature_info]
        check_layer_names(layers, stages, "a feature stage of this timm model",
                          f"Its stages (model.feature_info) are: {stages}.")
        if not hasattr(network, "forward_intermediates"):
            raise ValueError(f"{type(network).__name__} has no forward_intermediates in this timm version: use "
                             "layer=None.")
        return Backbone(_Intermediates(network, [stages.index(name) for name in layers], tuple(layers)),
                        tuple(layers), False, False)


class TimmPreprocess(DescribedPreprocess):
    """timm's evaluation transform for one data config, described by it."""

    def __init__(self, config: dict):
        from timm.data import create_transform

        self.config = dict(config)
        self.transform = create_transform(**self.config, is_training=False)
        side = self.config["input_size"][-1]
        self.resize_size = [math.floor(side / self.config["crop_pct"])] if self.config["crop_mode"] == "center" else None

    def __call__(self, image):
        return self.transform(image)

    def settings(self) -> dict:
        return {"timm": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.config.items())}}

    def __repr__(self):
        return f"TimmPreprocess({self.config})"


class _Intermediates(nn.Module):
    """The named ``feature_info`` stages of a timm network."""

    def __init__(self, network: nn.Module, indices: list, names: tuple):
        super().__init__()
        self.network, self.indices, self.names = network, list(indices), names

    def forward(self, x):
        maps = self.network.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        return dict(zip(self.names, maps))
