"""What sktransfer.dask and sktransfer.ray share (importing neither): `check_fitted_encoder` on the client,
`encode_piece` on a worker, and `locate_error`, which names a failing item in the whole input's terms."""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._device import resolve_device
from ._messages import ItemError
from .base import BaseEncoder


def check_fitted_encoder(encoder, helper: str) -> None:
    """Refuse anything but a fitted sktransfer encoder before a graph is built, not on a worker."""
    if not isinstance(encoder, BaseEncoder):
        raise TypeError(f"{helper} takes a fitted sktransfer encoder (TextEncoder, ImageEncoder), "
                        f"got {type(encoder).__name__}")
    try:
        check_is_fitted(encoder, "identity_")
    except NotFittedError:
        raise NotFittedError(
            f"{helper} needs a fitted {type(encoder).__name__}: call encoder.fit(...) first (on a few items: "
            "fit learns nothing from the data, it resolves the model and the settings that are shipped to workers)."
        ) from None
    encoder.check_unchanged()


def prepare_on_worker(encoder):
    """``device="auto"`` was resolved where ``fit`` ran (often a client without a GPU): use this worker's best."""
    if encoder.device == "auto":
        encoder.run_on(str(resolve_device("auto")))
    return encoder


def encode_piece(encoder, items, where: str, label_of) -> np.ndarray:
    """One piece of the input encoded on a worker, float32 whatever ``set_output`` says; errors via `locate_error`."""
    encoder = prepare_on_worker(encoder)
    try:
        if len(items) == 0:
            return np.empty((0, encoder.embedding_dim_), dtype=np.float32)
        return np.asarray(encoder.transform(items), dtype=np.float32)
    except Exception as exc:
        locate_error(exc, where, label_of)
        raise


def locate_error(exc: BaseException, where: str, label_of) -> BaseException:
    """Append ``where`` (the piece) and, for an `ItemError`, ``label_of(its index in the piece)`` to the message;
    the exception keeps its type and stays picklable (only ``args`` changes)."""
    if isinstance(exc, ItemError):
        at = exc.index
        return exc.located(where if at is None else f"{where}; index {at} there is {label_of(at)}")
    exc.args = (f"{exc.args[0] if exc.args else exc} [{where}]", *exc.args[1:])
    return exc
