"""Learned weights as estimator state: safetensors bytes, their digest, applying them to a network.

A fine-tuned encoder is its pretrained model plus the tensors that tuning changed. Those tensors
travel with the estimator as the bytes of a safetensors file (never a pickled ``nn.Module``, which
would tie the pickle to this machine's code and device), and their SHA-256 digest enters the
encoder's identity, so the registry and the cache can never confuse tuned and pretrained vectors.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["apply_weights", "weights_digest", "weights_to_bytes", "weights_from_bytes"]


def weights_to_bytes(state: dict) -> bytes:
    """Serialise a ``{name: tensor}`` dict (moved to CPU, contiguous, float kept as is) to safetensors."""
    from safetensors.torch import save

    return save({name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()})


def weights_from_bytes(blob: bytes) -> dict:
    """The ``{name: tensor}`` dict of :func:`weights_to_bytes`, on the CPU."""
    from safetensors.torch import load

    return load(blob)


def weights_digest(blob: bytes) -> str:
    """SHA-256 of the serialised weights: what the encoder's identity records."""
    return hashlib.sha256(blob).hexdigest()


def apply_weights(module: nn.Module, state: dict, owner: str) -> None:
    """Overwrite ``module``'s tensors named in ``state``; every name must exist with its shape.

    Partial by design (only the tuned tensors are stored), but never silently: a name the module
    lacks, or a shape that differs, is a different architecture and raises.
    """
    own = module.state_dict()
    unknown = [name for name in state if name not in own]
    if unknown:
        raise ValueError(
            f"{owner}: the tuned weights name {len(unknown)} tensor(s) the pretrained model does not have "
            f"(first: {unknown[0]!r}); they were learned on another architecture. Fit again on this model."
        )
    for name, tensor in state.items():
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{owner}: tuned tensor {name!r} has shape {tuple(tensor.shape)}, the model's has "
                f"{tuple(own[name].shape)}. Fit again on this model."
            )
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)  # state_dict tensors share storage with the module's
