"""Learned weights as estimator state: the tensors tuning changed, as safetensors bytes (never a
pickled ``nn.Module``, tied to this machine's code and device) whose digest enters the identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_weights", "weights_to_bytes", "weights_from_bytes"]


def weights_to_bytes(state: dict) -> bytes:
    """Serialise a ``{name: tensor}`` dict (moved to CPU, contiguous, float kept as is) to safetensors."""
    from safetensors.torch import save

    return save({name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()})


def weights_from_bytes(blob: bytes) -> dict:
    """The ``{name: tensor}`` dict of `weights_to_bytes`, on the CPU."""
    from safetensors.torch import load

    return load(blob)


#: Suffixes of a low-rank (LoRA) update of the weight ``<name>``: ``W += scale * B @ A``.
LORA_SUFFIXES = (".lora_A", ".lora_B", ".lora_scale")


def _split_low_rank(state: dict) -> tuple[dict, dict]:
    """Separate plain tensors from low-rank updates ``{weight name: (A, B, scale)}``."""
    plain, low_rank = {}, {}
    for name, tensor in state.items():
        if name.endswith(LORA_SUFFIXES):
            base, _, part = name.rpartition(".")
            low_rank.setdefault(base, {})[part] = tensor
        else:
            plain[name] = tensor
    return plain, {name: (parts["lora_A"], parts["lora_B"], parts["lora_scale"]) for name, parts in low_rank.items()}


def apply_weights(module: nn.Module, state: dict, owner: str) -> None:
    """Overwrite ``module``'s tensors named in ``state`` (a name it lacks or another shape raises);
    low-rank updates (``<weight>.lora_A``, ``.lora_B``, ``.lora_scale``) are merged into their weight."""
    own = module.state_dict()
    state, low_rank = _split_low_rank(state)
    for name, (a, b, scale) in low_rank.items():
        if name not in own or tuple(own[name].shape) != (b.shape[0], a.shape[1]):
            raise ValueError(f"{owner}: the tuned low-rank update of {name!r} does not fit the pretrained model. "
                             "Fit again on this model.")
        state[name] = own[name].float() + float(scale) * (b.float() @ a.float())
    unknown = [name for name in state if name not in own]
    if unknown:
        raise ValueError(f"{owner}: the tuned weights name {len(unknown)} tensor(s) the pretrained model does not "
                         f"have (first: {unknown[0]!r}); they were learned on another architecture. Fit again on "
                         "this model.")
    for name, tensor in state.items():
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{owner}: tuned tensor {name!r} has shape {tuple(tensor.shape)}, the model's has "
                             f"{tuple(own[name].shape)}. Fit again on this model.")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)  # state_dict tensors share storage with the module's
