"""The shared front of every reader: one column of input, in whatever container, as a list of items.
Sets and mappings have no row order and are refused; so is anything wider than one column."""

from __future__ import annotations

import math
import numbers
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, Set

import numpy as np

from ._messages import with_article

__all__ = ["column_to_list", "is_dataframe", "is_missing", "numbers_hint", "read_once", "series_name"]


def is_dataframe(X) -> bool:
    # pandas, polars and pyarrow tables alike: columns and a 2-D shape.
    return hasattr(X, "columns") and len(getattr(X, "shape", ())) == 2


def _column_names(frame) -> list:
    return list(getattr(frame, "column_names", None) or frame.columns)  # pyarrow's columns are the arrays


def _first_column(frame):
    if hasattr(frame, "iloc"):
        return frame.iloc[:, 0]  # pandas, where two columns may share a name
    if hasattr(frame, "to_series"):
        return frame.to_series(0)  # polars
    return frame.column(0)  # pyarrow


def _column_values(X) -> list | None:
    """The items of one dataframe column as Python objects, or None when ``X`` is no such column."""
    if hasattr(X, "to_numpy") and getattr(X, "ndim", None) == 1:  # a pandas Series or Index: NaN, NA kept
        return X.to_numpy(dtype=object).tolist()
    if hasattr(X, "to_list") and len(getattr(X, "shape", ())) == 1:  # a polars Series: nulls are None
        return X.to_list()
    if hasattr(X, "to_pylist") and not hasattr(X, "columns"):  # a pyarrow Array or ChunkedArray
        return X.to_pylist()
    return None


def series_name(X) -> str | None:
    """The name of a dataframe column given alone: a pandas or polars Series' non-empty name."""
    name = getattr(X, "name", None) if hasattr(X, "to_numpy") else None
    return name if isinstance(name, str) and name else None  # polars names an unnamed Series ""


def is_missing(value) -> bool:
    """Whether an item is a missing value: None, NaN, pandas.NA or NaT (without importing pandas)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in {"NAType", "NaTType"} or (
        isinstance(value, np.generic) and value.dtype.kind in "fcmM" and bool(np.isnan(value))
    )


def read_once(X):
    """``X`` as a list if it is a one-pass iterator (a generator, ``map``, ``iter(...)``), else ``X`` itself.

    A caller that reads its input twice (``fit`` then ``transform``) reads the list both times,
    instead of finding the iterator exhausted the second time.
    """
    return list(X) if isinstance(X, Iterator) else X


def _refuse_unordered(X, owner: str) -> None:
    """Sets and mappings have no row order that the output could follow back to the inputs."""
    kind = with_article(type(X).__name__)
    if isinstance(X, Mapping):
        raise TypeError(
            f"{owner} got {kind}: iterating a mapping gives its keys, so output rows would not line up with "
            "its values. Pass list(d.values()) to encode the values (in the dict's order), or list(d) for the keys."
        )
    if isinstance(X, (KeysView, ItemsView)):
        raise TypeError(
            f"{owner} got {kind}, a set-like view of a dict: output rows must map back to the inputs one by one. "
            "Pass a list of it, list(view), in the dict's order (list(d.values()) for the values)."
        )
    if isinstance(X, Set):
        raise TypeError(
            f"{owner} got {kind}, which has no order: its items would be encoded in hash order, and output rows "
            "could not be mapped back to the inputs. Pass a list in the order you need, e.g. sorted(items)."
        )


def column_to_list(X, owner: str) -> list:
    """Flatten one column of input into a list of Python objects.

    Accepts a list or tuple, a 1-D array, a 2-D array with one column, a pandas or polars Series,
    a one-column pandas or polars DataFrame, a pyarrow array or one-column table, or any other
    ordered iterable (read once). Anything wider raises a ``ValueError`` that says how to select
    a column; a set or a mapping, whose order is not the rows', raises a ``TypeError``.
    """
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{owner} does not accept sparse input: it encodes one column of items (texts, images). "
            "Pass a list, a 1-D array, a pandas Series or a one-column DataFrame."
        )
    if isinstance(X, (str, bytes)):
        raise ValueError(
            f"{owner} expects a sequence of items (one per sample), got a single {type(X).__name__}. "
            "Wrap it in a list: [item]."
        )
    if getattr(X, "ndim", None) == 2 and X.shape[1] == 0:
        raise ValueError(
            f"{owner} found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: "
            "pass the one column of items to encode."
        )
    if is_dataframe(X):
        if X.shape[1] != 1:
            raise ValueError(
                f"{owner} encodes one column, got a DataFrame with {X.shape[1]} columns "
                f"{_column_names(X)[:5]}. Select the column (df['name'] or df[['name']]), or use a "
                "ColumnTransformer with one encoder per column."
            )
        X = _first_column(X)
    values = _column_values(X)
    if values is not None:
        return values
    if type(X).__name__ == "LazyFrame" and type(X).__module__.startswith("polars"):
        # A query plan, not data: iterating it reads nothing useful. Say how to get the rows.
        raise TypeError(f"{owner} got a polars LazyFrame, a query that holds no rows yet: collect it first, "
                        "e.g. lazy.select('review').collect().")
    if isinstance(X, np.matrix):  # its rows stay 2-D when indexed: read it as the plain array it holds
        X = np.asarray(X)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            return X[:, 0].tolist()
        if X.ndim == 1:
            return X.tolist()
        raise ValueError(
            f"{owner} encodes one column, got an array of shape {X.shape}. Pass a 1-D array or a "
            "2-D array with a single column."
        )
    _refuse_unordered(X, owner)
    if not isinstance(X, Sequence):
        try:
            X = list(X)
        except TypeError:
            raise ValueError(f"{owner} expects a sequence of items, got {type(X).__name__}.") from None
    items = list(X)
    # A nested list with one value per row is a one-column 2-D input (what np.c_ or a list of rows gives).
    if items and all(isinstance(row, (list, tuple)) and len(row) == 1 for row in items):
        items = [row[0] for row in items]
    return items


def numbers_hint(bad_items: list) -> str:
    """Extra advice when the items an encoder rejects are numbers: most likely the wrong column.

    Missing values (NaN, None) alone are not numbers: a text or path column read with gaps holds them.
    """
    if any(isinstance(item, (complex, np.complexfloating)) for item in bad_items):
        return " Complex data not supported: the column holds complex numbers, not items to encode."
    if not all(is_missing(item) for item in bad_items) and \
            all(isinstance(item, (numbers.Number, np.number)) for item in bad_items):
        return " The column holds numbers (NaN and inf included), not items to encode: is it the right column?"
    return ""


