"""Encode a column of a Ray Dataset with a pool of actors, in the input's order: `transform`.

Needs the ``ray`` extra (``pip install "sktransfer[ray]"``); ``import sktransfer`` does not import
ray. What it does beyond a plain ``map_batches``: docs/scaling_out.md.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._cluster import check_fitted_encoder, encode_piece, prepare_on_worker
from ._runtime import optional_import

ray = optional_import("ray", "ray", "sktransfer.ray")
optional_import("ray.data", "ray", "sktransfer.ray")  # Ray Data is an extra of ray: fail here, not on first use

__all__ = ["transform"]

_HELPER = "sktransfer.ray.transform"


def transform(encoder, dataset, *, column, output_column="embedding", batch_size=256, concurrency=None,
              num_gpus=None):
    """Add a column of embeddings to a Ray Dataset, lazily, keeping the rows' order.

    Parameters
    ----------
    encoder : TextEncoder or ImageEncoder
        A fitted encoder (``fit`` on a handful of items is enough). Its ``cache`` folder, if any,
        is used as a path on each node's own disk.
    dataset : ray.data.Dataset
        The rows; ``column`` holds the items (texts, image paths or image bytes).
    column : str
        The column to encode.
    output_column : str, default="embedding"
        The new column: one float32 vector (a tensor column) per row.
    batch_size : int, default=256
        Rows per Ray Data batch handed to an actor (the encoder batches its forward passes by its
        own ``batch_size``). Blocks larger than this are split, so every actor gets work.
    concurrency : int or None, default=None
        Number of actors. ``None``: one per GPU when GPUs are requested, else one per CPU of the
        cluster but one (at least 1), which leaves a CPU for reading and writing.
    num_gpus : float or None, default=None
        GPUs per actor. ``None``: 1 when the encoder's ``device`` is ``"cuda"``/``"cuda:N"``, or
        ``"auto"`` on a cluster that has GPUs; 0 otherwise.

    Returns
    -------
    dataset : ray.data.Dataset
        The input's columns plus ``output_column``, in the input's row order (an empty input keeps
        them in its schema). Nothing runs until it is consumed (``take``, ``to_pandas``, ...).

    Notes
    -----
    Order is kept with Ray Data's ``execution_options.preserve_order``, set on the returned dataset's
    own context only. An item the encoder refuses fails the job with the encoder's own message plus
    the item itself.
    """
    check_fitted_encoder(encoder, _HELPER)
    if not ray.is_initialized():
        ray.init()  # what Ray Data would do on first use; needed here for the cluster's resources
    if not isinstance(dataset, ray.data.Dataset):
        raise TypeError(f"{_HELPER} takes a ray.data.Dataset, got {type(dataset).__name__}; "
                        "for Dask collections use sktransfer.dask.transform")
    schema = dataset.schema()
    names = schema.names if schema is not None else []
    if column not in names:
        raise KeyError(f"the Ray Dataset has no column {column!r}; columns: {names[:20]}")
    if output_column in names:
        raise ValueError(f"the Ray Dataset already has a column {output_column!r}; choose another output_column=")
    resources = ray.cluster_resources()
    cpus, available_gpus = resources.get("CPU", 1), resources.get("GPU", 0)
    gpus = _gpus_per_actor(encoder, num_gpus)
    if concurrency is None:
        concurrency = max(1, int(available_gpus) if gpus else int(cpus) - 1)
    for name, value, what in [("batch_size", batch_size, ""), ("concurrency", concurrency, " (number of actors)")]:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int{what}, got {value!r}")
    if gpus and gpus * concurrency > available_gpus:
        raise ValueError(
            f"{concurrency} actor(s) x num_gpus={gpus:g} need {gpus * concurrency:g} GPU(s), and this Ray cluster "
            f"has {available_gpus:g}: the job would wait forever. Lower concurrency or num_gpus, or set the "
            "encoder's device to 'cpu' (or 'auto', which uses GPUs only where the cluster has them).")
    if concurrency >= cpus:  # the stage that splits blocks needs a CPU too (ray-project/ray#44687)
        raise ValueError(
            f"concurrency={concurrency} actors would hold every CPU of this Ray cluster ({cpus:g}), leaving none "
            f"for the stage that feeds them, and the job would hang. Use concurrency <= {max(1, int(cpus) - 1)}, "
            "or start Ray with more CPUs.")
    encoded = dataset.repartition(target_num_rows_per_block=batch_size).map_batches(
        # The encoder pickles to a few hundred bytes (never the weights): it travels inline.
        _EncodeBatches, fn_constructor_args=(encoder, column, output_column), batch_format="numpy",
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1, num_gpus=gpus)
    # Ray Data calls no UDF on an empty block: one empty block built like the actors' output keeps the columns.
    empty = _empty_output(schema, output_column, encoder.embedding_dim_)
    if empty is not None:
        encoded = encoded.union(empty)
    encoded.context.execution_options.preserve_order = True  # this dataset's copy of the context
    return encoded


def _empty_output(schema, output_column, dim):
    """A no-row dataset with the actors' batch schema, or None: the input's columns take the batches' round
    trip through NumPy (Python objects come back as null, which unifies with any type); the embedding column
    is built as a tensor column, since Ray would store an empty 2-D array as Python objects."""
    import pyarrow as pa
    from ray.data.block import BlockAccessor, BlockType
    from ray.data.extensions import ArrowTensorArray

    def arrow_type(kind):  # a pandas-backed dataset lists numpy dtypes and Python classes too
        if isinstance(kind, pa.DataType):
            return kind
        try:
            return pa.from_numpy_dtype(np.dtype(kind))
        except (TypeError, NotImplementedError):
            return pa.null()

    fields = [(name, arrow_type(kind)) for name, kind in zip(schema.names, schema.types)]
    typed = [name for name, kind in fields if not pa.types.is_null(kind)]
    try:
        converted = pa.schema(fields).empty_table().select(typed)
        if typed:
            batch = BlockAccessor.for_block(converted).to_batch_format("numpy")
            converted = BlockAccessor.batch_to_block(batch, block_type=BlockType.ARROW)
    except (pa.ArrowException, TypeError, ValueError):
        return None  # a column NumPy cannot hold empty: an empty input then keeps no schema, as Ray's own
    columns = {name: converted.column(name) if name in typed else pa.array([], pa.null()) for name, _ in fields}
    columns[output_column] = ArrowTensorArray.from_numpy(np.empty((0, dim), dtype=np.float32))
    return ray.data.from_arrow(pa.table(columns))


def _gpus_per_actor(encoder, num_gpus) -> float:
    if num_gpus is not None:
        return num_gpus
    device = str(encoder.device)
    return int(device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0))


class _EncodeBatches:
    """A Ray Data actor: one copy of the encoder and one loaded model per actor process."""

    def __init__(self, encoder, column, output_column):
        self.encoder, self.column, self.output_column = prepare_on_worker(encoder), column, output_column
        self.encoder.loaded_model()  # load now: the first batch should not pay for it

    def __call__(self, batch: dict) -> dict:
        items = list(batch[self.column])
        features = encode_piece(self.encoder, items, f"sktransfer.ray: a batch of {len(items)} rows of column "
                                f"{self.column!r}", lambda i: f"{items[i]!r:.200}")
        return {**batch, self.output_column: features}
