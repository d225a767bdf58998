"""What the Dask and Ray helpers share: checking the encoder on the client, and encoding one piece
of the input on a worker, with a failing item named in the whole input's terms.

Nothing here imports dask or ray: `sktransfer.dask` and `sktransfer.ray` do, and
``import sktransfer`` imports neither.
"""

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
    """Adapt an encoder that arrived on a worker to that worker's hardware.

    ``device="auto"`` was resolved where ``fit`` ran (often a client without a GPU); on a worker it
    means this worker's best device, so a GPU worker uses its GPU. The device does not change the
    vectors beyond float noise and is not part of the identity, so the fingerprint is unchanged.
    The encoder is the worker's own unpickled copy; the caller's object is never touched.
    """
    if encoder.device == "auto":
        here = str(resolve_device("auto"))
        if here != encoder.device_:
            encoder.device_ = here
            encoder.__dict__.pop("model_", None)
    return encoder


def encode_piece(encoder, items, where: str, label_of) -> np.ndarray:
    """One piece of the input encoded on a worker (float32, whatever ``set_output`` says); an error
    is re-raised with ``where`` (the partition) and the item's ``label_of`` (`locate_error`)."""
    encoder = prepare_on_worker(encoder)
    try:
        if len(items) == 0:
            return np.empty((0, encoder.embedding_dim_), dtype=np.float32)
        return np.asarray(encoder.transform(items), dtype=np.float32)
    except Exception as exc:
        locate_error(exc, where, label_of)
        raise


def locate_error(exc: BaseException, where: str, label_of) -> BaseException:
    """Add where a failing item sits in the whole input to the encoder's own message.

    An `ItemError` knows the item's position within the piece the encoder was given; a user needs
    the position (or index label) in the whole column, and which partition failed.
    ``label_of(position)`` turns a position within the piece into that label; any other error gets
    ``where`` alone. The exception keeps its type (and stays picklable: only ``args`` changes), so
    ``except ValueError`` still works on the client.
    """
    if isinstance(exc, ItemError):
        at = exc.index
        return exc.located(where if at is None else f"{where}; index {at} there is {label_of(at)}")
    exc.args = (f"{exc.args[0] if exc.args else exc} [{where}]", *exc.args[1:])
    return exc
