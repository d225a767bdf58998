"""Encode a column of a Spark DataFrame with a fitted encoder, lazily: `transform`.

Needs the ``spark`` extra (``pip install "sktransfer[spark]"``) and a Java 17+ runtime;
``import sktransfer`` does not import pyspark. How the encoder ships and the model loads:
docs/scaling_out.md#spark.
"""

from __future__ import annotations

import functools
import numbers
import os
import shutil
import sys
from collections.abc import Iterator

import numpy as np

from ._cluster import check_fitted_encoder, encode_piece
from ._device import resolve_device
from ._messages import ItemError
from ._runtime import optional_import
from .clip import ClipEncoder
from .text import TextEncoder

pyspark = optional_import("pyspark", "spark", "sktransfer.spark")
F = optional_import("pyspark.sql.functions", "spark", "sktransfer.spark")
T = optional_import("pyspark.sql.types", "spark", "sktransfer.spark")
pd = optional_import("pandas", "spark", "sktransfer.spark")  # pandas UDFs exchange pandas Series
optional_import("pyarrow", "spark", "sktransfer.spark")  # ... through Arrow: fail here, not in a worker

__all__ = ["transform", "worker_error", "java_problem"]

_HELPER = "sktransfer.spark.transform"


def transform(encoder, df, column, *, output_col="embedding", batch_size=256, as_vector=False, key=None):
    """Add a column of embeddings to a Spark DataFrame, lazily, keeping every input column.

    Parameters
    ----------
    encoder : TextEncoder, ImageEncoder or ClipEncoder
        A fitted encoder (``fit`` on a handful of items is enough). Its ``cache`` folder, if any,
        is used as a path on each executor's own disk.
    df : pyspark.sql.DataFrame
        The rows; ``column`` holds the items: texts or image paths (a string column), or image
        bytes (a binary column, e.g. ``spark.read.format("binaryFile")``'s ``content``).
    column : str
        The column to encode.
    output_col : str, default="embedding"
        The new column: ``array<float>`` (one float32 vector per row), or a
        ``pyspark.ml.linalg`` dense vector with ``as_vector=True``.
    batch_size : int, default=256
        Rows handed to ``encoder.transform`` at a time on a worker (the encoder batches its
        forward passes by its own ``batch_size``). Spark's Arrow batches
        (``spark.sql.execution.arrow.maxRecordsPerBatch``, default 10,000 rows) are split into
        pieces of this size, so memory stays bounded whatever Spark hands over.
    as_vector : bool, default=False
        Return ``output_col`` as a Spark ML vector (``pyspark.ml.functions.array_to_vector``),
        the type ``pyspark.ml`` estimators take as ``featuresCol``.
    key : str or None, default=None
        A column that identifies a row (an id, a file path): an item the encoder refuses is
        named by this column's value as well as by its partition and row there.

    Returns
    -------
    df : pyspark.sql.DataFrame
        The input's columns plus ``output_col``, rows in the input's order. Nothing runs until
        an action (``collect``, ``write``, ``count``...) needs the new column.

    Raises
    ------
    TypeError
        ``df`` is not a Spark DataFrame, ``encoder`` is not an sktransfer encoder, or ``column``
        is not a string (or, for images, binary) column.
    KeyError
        ``column`` or ``key`` is not a column of ``df``.
    ValueError
        ``output_col`` exists already, or ``batch_size`` is not a positive int.
    sklearn.exceptions.NotFittedError
        The encoder is not fitted.

    Notes
    -----
    All of these are raised here, before any Spark job runs. The fitted encoder (a small pickle
    of its identity and settings, never the weights) is broadcast once; each Python worker
    unpickles it once and loads the model once through its model registry, then keeps it for
    every task it runs (Spark reuses its Python workers: ``spark.python.worker.reuse``, on by
    default). With ``spark.task.resource.gpu.amount`` set, a task runs on the GPU Spark assigned
    it when the encoder's device is ``"auto"`` or ``"cuda"``; otherwise ``"auto"`` resolves on
    each worker. An item the encoder refuses fails the action with the encoder's own message,
    the partition, the row there and ``key``'s value.
    """
    check_fitted_encoder(encoder, _HELPER)
    if not isinstance(df, pyspark.sql.DataFrame):
        raise TypeError(f"{_HELPER} takes a pyspark.sql.DataFrame, got {type(df).__name__}; for pandas or "
                        "in-memory data call encoder.transform directly")
    fields = {field.name: field for field in df.schema.fields}
    _check_column(fields, column, "column")
    _check_type(encoder, fields[column])
    if key is not None:
        _check_column(fields, key, "key")
    if not isinstance(output_col, str) or not output_col:
        raise TypeError(f"output_col must be a non-empty column name, got {output_col!r}")
    if output_col in fields:
        raise ValueError(f"the Spark DataFrame already has a column {output_col!r}; choose another output_col=")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (rows per encoder.transform call), got {batch_size!r}")
    _check_local_workers(df.sparkSession)
    shipped = _broadcast(df.sparkSession, encoder)
    batch_size = int(batch_size)

    if key is None:
        def encode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
            return encode_partition(((items, None) for items in batches), shipped, column, None, batch_size)
        inputs = [F.col(column)]
    else:
        def encode(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
            return encode_partition(batches, shipped, column, key, batch_size)
        inputs = [F.col(column), F.col(key)]
    udf = F.pandas_udf(encode, T.ArrayType(T.FloatType(), containsNull=False))
    encoded = udf(*inputs)
    if as_vector:
        encoded = optional_import("pyspark.ml.functions", "spark", "as_vector=True").array_to_vector(encoded)
    return df.withColumn(output_col, encoded)


def _check_column(fields, name, what):
    if name not in fields:
        close = [other for other in fields if other.lower() == str(name).lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"the Spark DataFrame has no column {name!r} ({what}=){hint} columns: {list(fields)[:20]}")


def _check_type(encoder, field):
    """Strings (texts, image paths) always; bytes only where the encoder takes images."""
    texts_only = isinstance(encoder, TextEncoder) or (isinstance(encoder, ClipEncoder) and encoder.modality_ == "text")
    accepted = (T.StringType,) if texts_only else (T.StringType, T.BinaryType)
    if isinstance(field.dataType, accepted):
        return
    wanted = "a string column of texts" if texts_only else "a string column (image paths) or a binary column (image bytes)"
    raise TypeError(
        f"column {field.name!r} is {field.dataType.simpleString()}, and {type(encoder).__name__} takes {wanted}, "
        f"one item per row; select or cast the column that holds the items (e.g. F.col({field.name!r}).cast('string') "
        "for numbers written as text), or F.explode(...) an array into rows first")


def _check_local_workers(session) -> None:
    """In local mode the Python workers are started here, with ``PYSPARK_PYTHON`` (default ``python3`` on the
    PATH, often not the virtual environment this runs in): refuse now a worker that cannot import
    sktransfer, which would otherwise fail the first action with a ModuleNotFoundError deep in a traceback.
    On a cluster the executors' Python is the cluster's, not visible from here."""
    try:
        context = session.sparkContext
    except Exception:  # Spark Connect: the workers are the server's
        return
    if not str(context.master).startswith("local"):
        return
    executable = context.pythonExec
    if not _imports_sktransfer(executable):
        raise RuntimeError(
            f"this local Spark session starts its Python workers with {executable!r} (PYSPARK_PYTHON), which cannot "
            f"import sktransfer, so every task would fail. Set PYSPARK_PYTHON={sys.executable} (this interpreter) "
            "before the SparkSession is created, e.g. os.environ['PYSPARK_PYTHON'] = sys.executable")


@functools.lru_cache(maxsize=8)
def _imports_sktransfer(executable: str) -> bool:
    import subprocess

    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('sktransfer') is None)"
    try:
        return subprocess.run([executable, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _broadcast(session, encoder):
    """The pickled encoder as a broadcast variable (sent once per executor), or the encoder itself under
    Spark Connect, which has no broadcast: there it travels inside the function, as small as it is."""
    try:
        context = session.sparkContext
    except Exception:  # Spark Connect raises here (no JVM on the client); nothing to broadcast with
        return encoder
    return context.broadcast(encoder)


def encode_partition(batches, shipped, column, key, batch_size) -> Iterator:
    """The pandas UDF's body on a worker: one partition's Arrow batches in, a Series of vectors out per
    batch, ``batch_size`` rows per ``encoder.transform`` call."""
    encoder = worker_encoder(shipped)
    context = pyspark.TaskContext.get()
    partition = context.partitionId() if context is not None else "?"
    start = 0
    for items, keys in batches:
        pieces, keys = [], None if keys is None else keys.tolist()  # Python scalars: id=5, not np.int64(5)
        for offset in range(0, len(items), batch_size):
            chunk = items.iloc[offset:offset + batch_size].tolist()
            first = start + offset
            where = f"sktransfer.spark: partition {partition}, rows {first} to {first + len(chunk) - 1} there, column {column!r}"
            try:
                pieces.append(encode_piece(encoder, chunk, where, _row_label(partition, first, key, keys, offset)))
            except ItemError as exc:
                # The driver shows the worker's traceback: for a refused item, the message is the whole story.
                raise exc.with_traceback(None) from None
        start += len(items)
        vectors = np.concatenate(pieces) if pieces else np.empty((0, encoder.embedding_dim_), np.float32)
        yield pd.Series(list(vectors), index=items.index, dtype=object)


def _row_label(partition, first, key, keys, offset):
    def label(i):
        row = f"row {first + i} of partition {partition}"
        return row if key is None else f"{row} ({key}={keys[offset + i]!r:.200})"
    return label


def worker_encoder(shipped):
    """The encoder on this worker, placed on the device for this task: Spark's GPU for it when the
    scheduler assigned one (``spark.task.resource.gpu.amount``), else ``device="auto"`` resolved here."""
    encoder = shipped.value if hasattr(shipped, "value") else shipped
    context = pyspark.TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    device = task_device(str(encoder.device), list(gpus.addresses) if gpus is not None else [])
    if device is not None and device != encoder.device_:
        encoder.run_on(device)
    return encoder


def task_device(device: str, gpu_addresses: list[str]) -> str | None:
    """Where a task runs the encoder: ``cuda:<address>`` for the GPU Spark gave the task when the encoder
    runs on ``"auto"`` or ``"cuda"``; an explicit ``"cuda:N"``, ``"cpu"`` or ``"mps"`` is the user's
    (None: keep it); ``"auto"`` without a Spark GPU resolves on this worker."""
    if gpu_addresses and device in {"auto", "cuda"}:
        return f"cuda:{gpu_addresses[0]}"
    if device == "auto":
        return str(resolve_device("auto"))
    return None


def worker_error(exc: BaseException) -> str | None:
    """The message of the error a Python worker raised, from the exception a failed Spark action raised
    on the driver, or None if it holds none (a JVM-side failure, say).

    Spark re-raises a worker's error as ``pyspark.errors.PythonException`` whose text is the worker's
    traceback; for an item the encoder refused, its last line is the encoder's message with the
    partition, the row and ``key`` (what ``sktransfer embed --spark`` prints).

    Examples
    --------
    >>> try:                                                    # doctest: +SKIP
    ...     encoded.write.parquet("out/")
    ... except Exception as exc:
    ...     raise SystemExit(sktransfer.spark.worker_error(exc) or exc)
    """
    text = str(exc)
    if "Traceback (most recent call last)" not in text:
        return None
    # The traceback's last line that is not indented: "<module.Type>: <message>", possibly over several lines.
    lines = text.split("Traceback (most recent call last)")[-1].rstrip().splitlines()
    start = max((i for i, line in enumerate(lines) if line and not line[0].isspace()), default=None)
    if start is None:
        return None
    first, *rest = lines[start:]
    kind, _, message = first.partition(": ")
    return "\n".join([message or kind, *rest]).strip()


def java_problem() -> str | None:
    """Why Spark cannot start here (no Java 17+ runtime), with how to get one; None when one is found.

    Spark 4 runs on Java 17 or newer. The runtime is found as PySpark finds it: ``$JAVA_HOME/bin/java``,
    else ``java`` on the ``PATH``.
    """
    import subprocess

    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    how = ("install a Java 17+ runtime (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: "
           "brew install openjdk@17; or conda install -c conda-forge openjdk=17), or set JAVA_HOME to one")
    if not java or not os.path.exists(java):
        where = f"JAVA_HOME={home} has no bin/java" if home else "no java on the PATH and JAVA_HOME is not set"
        return f"Spark needs a Java 17+ runtime: {where}; {how}"
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Spark needs a Java 17+ runtime, and {java} -version failed ({exc}); {how}"
    version = next((word.strip('"') for line in shown.splitlines() for word in line.split()
                    if word.startswith('"') and word[1:2].isdigit()), "")
    major = version.split(".")[1] if version.startswith("1.") else version.split(".")[0].split("-")[0]
    if not major.isdigit() or int(major) < 17:
        return f"Spark needs a Java 17+ runtime, and {java} is version {version or 'unknown'}; {how}"
    return None
