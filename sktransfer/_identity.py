"""What makes an encoder's vectors: the `EncoderIdentity` every fitted encoder resolves once in ``fit``.

The model registry key and the cache fingerprint are both derived here and nowhere else, so they
can never disagree. The resolved folder is a fact about this machine: in neither key nor pickles.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

from ._content import digest

__all__ = ["EncoderIdentity", "ModelMismatchError"]

#: Bumped when sktransfer itself changes what vectors a configuration produces (input decoding,
#: pooling code...): every older cache entry then stops matching.
VECTOR_FORMAT = 2


class ModelMismatchError(RuntimeError):
    """The model found by name is not the one the encoder was fitted with."""


def _canonical(value: Any) -> Any:
    """A JSON-stable form of a setting (tuples become lists, numpy scalars Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"identity settings must be plain values, got {type(value).__name__}: {value!r}")


@dataclasses.dataclass(frozen=True)
class EncoderIdentity:
    """What makes one fitted encoder's vectors.

    Parameters
    ----------
    encoder : str
        The encoder class name.
    model : str
        The model as the user named it (a name, a hub id, a path, or a description of a module):
        how it is found again after unpickling.
    content : str
        Hash of what computes the vectors (model files, checkpoint, module tensors and structure).
    settings : dict
        Every output-changing setting, with effective values.
    model_settings : tuple of str
        The names in ``settings`` that shape the loaded model itself (e.g. bfloat16 weights, the
        layers a backbone returns); other settings apply around a shared model.
    location : str or None
        Where the model was found on this machine. Not part of either key, not pickled.
    summary : dict
        Shorter, readable forms of some settings for `describe` (not part of either key).
    """

    encoder: str
    model: str
    content: str
    settings: dict
    model_settings: tuple = ()
    location: str | None = dataclasses.field(default=None, compare=False)
    summary: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "settings", _canonical(dict(self.settings)))
        unknown = set(self.model_settings) - set(self.settings)
        if unknown:
            raise ValueError(f"model_settings {sorted(unknown)} are not among the settings")

    @functools.cached_property
    def fingerprint(self) -> str:
        """Cache key of this configuration: equal exactly when the vectors are."""
        return digest({"encoder": self.encoder, "format": VECTOR_FORMAT, "content": self.content,
                        "settings": self.settings})

    def registry_key(self, device: str) -> tuple:
        """Key of the loaded model: its content and the settings that shape it, on ``device``."""
        shaping = {name: self.settings[name] for name in self.model_settings}
        return (self.encoder, self.content, json.dumps(shaping, sort_keys=True), str(device))

    def describe(self) -> str:
        """Readable summary, shown by ``EmbeddingCache.info()`` and in errors."""
        shown = ", ".join(f"{k}={self.summary.get(k, v)!r}" for k, v in sorted(self.settings.items()))
        return f"{self.encoder}(model={self.model!r}, {shown})"

    def __repr__(self) -> str:
        # scikit-learn's HTML repr cuts at 30 characters; str() and describe() give every setting.
        return f"<{self.encoder} {self.fingerprint[:12]}>"

    def __str__(self) -> str:
        return f"{self.fingerprint} {self.describe()}"

    def portable(self) -> EncoderIdentity:
        """The identity without this machine's location: what a pickle stores."""
        return dataclasses.replace(self, location=None)

    def check_content(self, found: str, where: str) -> None:
        """Raise `ModelMismatchError` unless ``found`` is this identity's content hash."""
        if found != self.content:
            raise ModelMismatchError(
                f"{self.encoder} was fitted with model {self.model!r} of content {self.content[:12]}, but "
                f"the model found under that name ({where}) has content {found[:12]}: it is a different "
                "model, whose vectors would not match the fitted ones. Restore the original model files, "
                "or fit the encoder again (and the estimators after it) on this model."
            )

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("fingerprint", None)  # a cached_property: recomputed on demand
        return state
