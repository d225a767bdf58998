"""Encode a Dask collection lazily, on the cluster that holds it: `transform`.

Needs the ``dask`` extra (``pip install "sktransfer[dask]"``); ``import sktransfer`` does not import
dask. How the encoder ships and the model loads: docs/scaling_out.md.
"""

from __future__ import annotations

import uuid

import numpy as np

from ._cluster import check_fitted_encoder, encode_piece
from ._messages import with_article
from ._runtime import optional_import

dask, da, db, dd, pd = (optional_import(name, "dask", "sktransfer.dask")
                        for name in ("dask", "dask.array", "dask.bag", "dask.dataframe", "pandas"))

__all__ = ["transform"]

_HELPER = "sktransfer.dask.transform"


def transform(encoder, data, *, column=None):
    """Encode a Dask collection of items with a fitted encoder, lazily.

    Parameters
    ----------
    encoder : TextEncoder or ImageEncoder
        A fitted encoder (``fit`` on a handful of items is enough). Its ``cache`` folder, if any,
        is used as a path on each worker's own disk.
    data : dask DataFrame, dask Series, dask Bag or 1-D dask Array
        The items: texts, image paths or image bytes, one per row.
    column : str or None, default=None
        The column of a dask DataFrame to encode; optional when it has one column.

    Returns
    -------
    features : dask DataFrame or dask Array
        For a DataFrame or Series: a dask DataFrame of float32 columns named by
        ``encoder.get_feature_names_out([column])``, with the input's index and divisions. For a
        Bag or an Array: a float32 dask Array (n_items, n_features), chunked like the input.

    Raises
    ------
    TypeError
        ``data`` is not one of the collections above, or ``encoder`` is not an sktransfer encoder.
    sklearn.exceptions.NotFittedError
        The encoder is not fitted.

    Notes
    -----
    An item the encoder refuses raises, when the result is computed, the encoder's own error (same
    type and message) with the partition and the item's index label (or global row) appended.
    """
    check_fitted_encoder(encoder, _HELPER)
    if isinstance(data, dd.DataFrame):
        data = _column_of(data, column)
    elif column is not None:
        raise TypeError(f"column= selects a column of a dask DataFrame; {_HELPER} got {with_article(type(data).__name__)}")
    for collection, encode in [(dd.Series, _transform_series), (db.Bag, _transform_bag), (da.Array, _transform_array)]:
        if isinstance(data, collection):
            return encode(encoder, data)
    raise TypeError(
        f"{_HELPER} takes a dask DataFrame (with column=), Series, Bag or 1-D Array, got {type(data).__name__}; "
        "for in-memory data call encoder.transform directly")


def _column_of(frame, column):
    if column is None and len(frame.columns) != 1:
        raise ValueError(f"the dask DataFrame has {len(frame.columns)} columns {list(frame.columns)[:8]}; "
                         "choose the one to encode with column=")
    column = frame.columns[0] if column is None else column
    if column not in frame.columns:
        raise KeyError(f"the dask DataFrame has no column {column!r}; columns: {list(frame.columns)[:20]}")
    return frame[column]


def _ship(encoder):
    """The encoder as one key of the graph: not ``Client.scatter(broadcast=True)``, which waits for every
    worker, so one its nanny was restarting stalled the call for minutes."""
    return dask.delayed(encoder, name=f"sktransfer-encoder-{uuid.uuid4().hex}")


def _transform_series(encoder, series):
    names = list(encoder.get_feature_names_out([series.name] if isinstance(series.name, str) else None))
    meta = pd.DataFrame(np.empty((0, len(names)), dtype=np.float32), columns=names,
                        index=dd.utils.make_meta(series).index)
    return series.map_partitions(_encode_partition, _ship(encoder), names, series.npartitions,
                                 meta=meta, align_dataframes=False)


def _encode_partition(series, encoder, names, n_partitions, partition_info=None):
    number = partition_info["number"] if partition_info else "?"
    index = series.index
    features = encode_piece(encoder, series, f"sktransfer.dask: partition {number} of {n_partitions}",
                            lambda i: f"the row with index label {index[i:i + 1].tolist()[0]!r}")
    return pd.DataFrame(features, index=index, columns=names)


def _transform_bag(encoder, bag):
    shipped, dim = _ship(encoder), encoder.embedding_dim_
    encode = dask.delayed(_encode_bag_partition, pure=True)
    parts = [da.from_delayed(encode(part, shipped, number, bag.npartitions), shape=(np.nan, dim), dtype=np.float32)
             for number, part in enumerate(bag.to_delayed())]
    if not parts:  # a bag of no partitions (db.from_delayed([])): nothing to concatenate
        return da.empty((0, dim), dtype=np.float32, chunks=((0,), (dim,)))
    return da.concatenate(parts, axis=0)


def _encode_bag_partition(items, encoder, number, n_partitions):
    items = list(items)
    return encode_piece(encoder, items, f"sktransfer.dask: bag partition {number} of {n_partitions}",
                        lambda i: f"item {i} of that partition ({items[i]!r:.80})")


def _transform_array(encoder, array):
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{_HELPER} takes a 1-D dask Array of items (or one column), got shape {array.shape}")
    dim = encoder.embedding_dim_
    return da.map_blocks(_encode_array_block, array, _ship(encoder), len(array.chunks[0]),
                         dtype=np.float32, chunks=(array.chunks[0], (dim,)), new_axis=1,
                         meta=np.empty((0, dim), dtype=np.float32))


def _encode_array_block(block, encoder, n_blocks, block_info=None):
    location = block_info[0] if block_info else {}
    number = location.get("chunk-location", ("?",))[0]
    start = location.get("array-location", [(0, 0)])[0][0]
    return encode_piece(encoder, list(block), f"sktransfer.dask: block {number} of {n_blocks}",
                        lambda i: f"row {start + i} of the array")
