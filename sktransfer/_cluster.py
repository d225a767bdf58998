"""What the Dask and Ray helpers share: checking the encoder on the client, preparing it on a worker,
encoding one partition, and naming the failing item in the input's own terms.

Nothing here imports dask or ray: `sktransfer.dask` and `sktransfer.ray` do, and
``import sktransfer`` imports neither.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._device import resolve_device
from .base import BaseEncoder

_POSITION = re.compile(r"at index (\d+)")


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


def feature_names(encoder, column_name) -> list[str]:
    """Output column names: the encoder's, prefixed with the input column's name when it has one."""
    if isinstance(column_name, str):
        return list(encoder.get_feature_names_out([column_name]))
    return list(encoder.get_feature_names_out())


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


def encode_items(encoder, items) -> np.ndarray:
    """``encoder.transform(items)`` as a float32 array, whatever ``set_output`` the encoder has."""
    if len(items) == 0:
        return np.empty((0, encoder.embedding_dim_), dtype=np.float32)
    return np.asarray(encoder.transform(items), dtype=np.float32)


def locate_error(exc: BaseException, where: str, label_of=None) -> BaseException:
    """Add where a failing item sits in the whole input to the encoder's own message.

    The encoder names the item's position within the piece it was given ("at index 3"); a user
    needs the position (or index label) in the whole column, and which partition failed.
    ``label_of(position)`` turns a position within the piece into that label. The exception keeps
    its type (and stays picklable: only ``args`` changes), so ``except ValueError`` still works on
    the client.
    """
    message = str(exc.args[0]) if exc.args else str(exc)
    match = _POSITION.search(message)
    note = where
    if match is not None and label_of is not None:
        position = int(match.group(1))
        note += f"; index {position} there is {label_of(position)}"
    exc.args = (f"{message} [{note}]", *exc.args[1:])
    return exc
