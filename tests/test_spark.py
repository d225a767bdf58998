"""sktransfer.spark and ``sktransfer embed --spark`` on a real local Spark session (``local[2]``, one
JVM and session shared by every test here; the CLI test runs in this process and reuses it).

Spark needs pyspark (the ``spark`` extra, installed by the project's set-up) and a Java 17+ runtime:
either missing fails these tests with the fix, it does not skip them.
"""

import faulthandler
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cluster_helpers import CountingTextEncoder  # noqa: E402

WATCHDOG_S = 300
TEXTS = [f"review {i}: the film was {'wonderful' if i % 2 else 'dreadful'}, {i * 7 % 11} stars" for i in range(48)]

try:
    import pyspark  # noqa: F401
except ImportError as exc:  # a failure, not a skip: CI must run these
    raise ImportError('the Spark tests need pyspark: pip install "sktransfer[spark]" (make setup installs it)') from exc

from sktransfer.spark import java_problem, task_device, transform, worker_error  # noqa: E402


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    problem = java_problem()
    assert problem is None, problem
    from pyspark.sql import SparkSession

    log = tmp_path_factory.mktemp("spark") / "loads.txt"
    # The Python workers run this interpreter (PYSPARK_PYTHON, read when the context starts); they import
    # cluster_helpers and CountingTextEncoder logs its loads through the executor environment, which
    # reaches them whether or not an earlier session (a docs page's) launched the JVM.
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    try:
        session = (SparkSession.builder.master("local[2]").appName("sktransfer tests")
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.executorEnv.SKTRANSFER_TEST_LOAD_LOG", str(log))
                   .config("spark.executorEnv.PYTHONPATH", str(HERE))
                   .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    finally:
        os.environ.pop("PYSPARK_PYTHON") if saved is None else os.environ.__setitem__("PYSPARK_PYTHON", saved)
    session.sparkContext.setLogLevel("FATAL")  # a refused item is the point of some tests, not log noise
    yield session, log
    session.stop()


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder().fit(TEXTS[:2])


@pytest.fixture(scope="module")
def local_features(text_encoder):
    return text_encoder.transform(TEXTS)


def reviews(session, rows=None, partitions=3):
    rows = [(i, TEXTS[i]) for i in range(len(TEXTS))] if rows is None else rows
    return session.createDataFrame(rows, "id long, text string").repartition(partitions)


def test_vectors_order_keys_and_one_load_per_worker(spark, local_features):
    session, log = spark
    encoder = CountingTextEncoder().fit(TEXTS[:2])
    frame = reviews(session)
    encoded = transform(encoder, frame, "text", key="id", batch_size=8)
    assert encoded.columns == ["id", "text", "embedding"]
    assert encoded.schema["embedding"].dataType.simpleString() == "array<float>"
    rows = encoded.collect()
    assert [row["id"] for row in rows] == [row["id"] for row in frame.collect()]  # the input's order
    assert sorted(row["id"] for row in rows) == list(range(len(TEXTS)))
    assert all(row["text"] == TEXTS[row["id"]] for row in rows)  # every input column kept, row by row
    np.testing.assert_allclose(np.array([row["embedding"] for row in rows]),
                               local_features[[row["id"] for row in rows]], atol=1e-6)
    loads = log.read_text().split()
    assert 1 <= len(loads) == len(set(loads)) <= 2  # local[2]: at most 2 Python workers, one load each
    encoded.select("embedding").collect()  # a second action, on the same workers
    assert log.read_text().split() == loads  # the workers kept their models


def test_as_vector_and_empty_partitions(spark, text_encoder, local_features):
    session, _ = spark
    from pyspark.ml.linalg import DenseVector

    frame = reviews(session, [(i, TEXTS[i]) for i in range(3)], partitions=6)  # at least 3 empty partitions
    rows = transform(text_encoder, frame, "text", output_col="features", as_vector=True).collect()
    assert transform(text_encoder, frame, "text", as_vector=True).schema["embedding"].dataType.typeName() == "vectorudt"
    assert all(isinstance(row["features"], DenseVector) for row in rows)
    np.testing.assert_allclose(np.array([row["features"].toArray() for row in rows]),
                               local_features[[row["id"] for row in rows]], atol=1e-6)
    empty = transform(text_encoder, reviews(session, []), "text").collect()
    assert empty == []


def test_refused_items_name_partition_row_and_key(spark, text_encoder):
    session, _ = spark
    from pyspark.errors import PythonException

    rows = [(100 + i, text) for i, text in enumerate(TEXTS[:5])] + [(105, None)]
    frame = session.createDataFrame(rows, "id long, text string").coalesce(1)
    with pytest.raises(PythonException) as caught:
        transform(text_encoder, frame, "text", key="id").collect()
    message = worker_error(caught.value)
    assert message.startswith("TextEncoder expects strings, but the item at index 5 is a missing value")
    assert message.endswith("[sktransfer.spark: partition 0, rows 0 to 5 there, column 'text'; index 5 there "
                            "is row 5 of partition 0 (id=105)]")
    assert str(caught.value).count("File ") == 1  # the worker's traceback is the one line that raised
    # The encoder's own policy still holds on the workers.
    nan = TextEncoder(on_error="nan").fit(TEXTS[:2])
    vectors = {row["id"]: row["embedding"] for row in transform(nan, frame, "text").collect()}
    assert np.isnan(vectors[105]).all() and np.isfinite(vectors[100]).all()
    assert worker_error(ValueError("no traceback in this one")) is None


def test_bad_calls_are_refused_before_any_job(spark, text_encoder, monkeypatch):
    session, _ = spark
    context = session.sparkContext
    frame = session.createDataFrame(
        [(1, "a text", b"\x89PNG", ("x", 2), ["a", "b"])],
        "id long, text string, raw binary, pair struct<name:string,n:int>, words array<string>")
    context.setJobGroup("refusals", "nothing here may start a job")
    cases = [
        (lambda: transform(TextEncoder(), frame, "text"), NotFittedError, "needs a fitted TextEncoder"),
        (lambda: transform(text_encoder, pd.DataFrame({"text": ["a text"]}), "text"), TypeError, "takes a pyspark.sql.DataFrame"),
        (lambda: transform(text_encoder, frame, "Text"), KeyError, "did you mean 'text'"),
        (lambda: transform(text_encoder, frame, "pair"), TypeError, "'pair' is struct<name:string,n:int>"),
        (lambda: transform(text_encoder, frame, "words"), TypeError, "F.explode"),
        (lambda: transform(text_encoder, frame, "raw"), TypeError, "takes a string column of texts"),
        (lambda: transform(text_encoder, frame, "text", key="ident"), KeyError, "(key=)"),
        (lambda: transform(text_encoder, frame, "text", output_col="id"), ValueError, "already has a column 'id'"),
        (lambda: transform(text_encoder, frame, "text", batch_size=0), ValueError, "positive int"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))
    # Local workers that could not import sktransfer are refused with the fix, not at the first task.
    monkeypatch.setattr(context, "pythonExec", "/nonexistent/python3")
    with pytest.raises(RuntimeError, match="PYSPARK_PYTHON="):
        transform(text_encoder, frame, "text")
    monkeypatch.undo()
    assert list(context.statusTracker().getJobIdsForGroup("refusals")) == []
    context.setJobGroup("after", "")


def test_images_from_paths_and_binary_files(spark, hymenoptera):
    session, _ = spark
    paths = hymenoptera["val"]["ants"][:3] + hymenoptera["val"]["bees"][:3]
    encoder = ImageEncoder(weights="IMAGENET1K_V1").fit(paths[:1])
    local = encoder.transform(paths)
    by_path = transform(encoder, session.createDataFrame([(p,) for p in paths], "photo string").repartition(2),
                        "photo", key="photo").collect()
    np.testing.assert_allclose(np.array([row["embedding"] for row in by_path]),
                               local[[paths.index(row["photo"]) for row in by_path]], atol=1e-5)
    # Spark's own reader of image files: the bytes, with "file:" paths.
    files = session.read.format("binaryFile").load(paths)
    by_bytes = {row["path"].removeprefix("file:"): row["embedding"]
                for row in transform(encoder, files, "content", key="path").select("path", "embedding").collect()}
    np.testing.assert_allclose(np.array([by_bytes[p] for p in paths]), local, atol=1e-5)


def test_executor_cache_serves_a_local_transform(spark, tmp_path):
    session, _ = spark
    folder = tmp_path / "executor-cache"  # local mode: the executors' disk is this one
    encoder = TextEncoder(cache=str(folder)).fit(TEXTS[:1])
    transform(encoder, reviews(session), "text").collect()
    cache = EmbeddingCache(folder)
    TextEncoder(cache=cache).fit(TEXTS[:1]).transform(TEXTS)
    assert cache.stats.last == {"hits": len(TEXTS), "misses": 0, "corrupt": 0}


def test_task_device_follows_spark_gpus():
    assert task_device("auto", ["1"]) == "cuda:1"
    assert task_device("cuda", ["0", "1"]) == "cuda:0"
    assert task_device("cuda:3", ["0"]) is None  # an explicit GPU is the user's
    assert task_device("cpu", ["0"]) is None
    assert task_device("auto", []) in {"cpu", "cuda", "mps"} or task_device("auto", []).startswith("cuda")


def test_java_problem_says_how_to_get_java(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    problem = java_problem()
    assert f"JAVA_HOME={tmp_path} has no bin/java" in problem and "openjdk-17-jre-headless" in problem
    old = tmp_path / "bin" / "java"
    old.parent.mkdir()
    old.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    old.chmod(0o755)
    assert "is version 11.0.2" in java_problem()


def test_cli_embed_on_spark(spark, hymenoptera, tmp_path):
    """`sktransfer embed --spark`: Parquet partitions with a local run's column names; Parquet input read by
    the executors; errors in one line; bad output refused first."""
    from test_docs import sktransfer_in_process

    paths = hymenoptera["val"]["bees"][:4]
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")

    def embed(*args):
        return sktransfer_in_process(["embed", *args, "--no-cache", "--spark", "local[2]"], {})

    result = embed(str(tmp_path / "list.txt"), "--weights", "IMAGENET1K_V1", "-o", str(tmp_path / "photos"),
                   "--partitions", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 2 Parquet partition(s) of image features" in result.stdout
    written = pd.read_parquet(tmp_path / "photos")
    local = ImageEncoder(weights="IMAGENET1K_V1").fit(paths[:1])
    assert sorted(written["item"]) == sorted(paths)
    assert list(written.columns[1:]) == list(local.get_feature_names_out())
    order = [paths.index(p) for p in written["item"]]
    np.testing.assert_allclose(written.iloc[:, 1:].to_numpy(), local.transform(paths)[order], atol=1e-5)

    table = tmp_path / "reviews.parquet"
    pd.DataFrame({"id": range(6), "review": TEXTS[:5] + [None]}).to_parquet(table)
    result = embed(str(table), "--column", "review", "--keep", "id", "-o", str(tmp_path / "bad"))
    assert result.returncode == 1 and "Traceback" not in result.stderr and "py4j" not in result.stderr
    assert "the item at index" in result.stderr and "column 'review'" in result.stderr, result.stderr
    result = embed(str(table), "--column", "review", "--keep", "id", "-o", str(tmp_path / "texts"),
                   "--on-error", "nan")
    assert result.returncode == 0, result.stderr[-2000:]
    texts = pd.read_parquet(tmp_path / "texts").sort_values("id")
    assert list(texts.columns[:2]) == ["item", "id"]
    np.testing.assert_allclose(texts.iloc[:5, 2:].to_numpy(), TextEncoder().fit(TEXTS[:1]).transform(TEXTS[:5]),
                               atol=1e-6)
    assert texts.iloc[5, 2:].isna().all()
    # Refused before Spark is reached; --overwrite replaces a Spark output folder (with its .crc files).
    for args, message in [(["-o", str(tmp_path / "texts")], "is not an empty folder"),
                          (["-o", str(tmp_path / "x.npy")], "not a .npy file"),
                          (["-o", str(tmp_path / "y"), "--scheduler", "tcp://nowhere:1"], "two clusters")]:
        result = embed(str(table), "--column", "review", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert any(entry.suffix == ".crc" for entry in (tmp_path / "texts").iterdir())
    result = embed(str(table), "--column", "review", "--on-error", "nan", "-o", str(tmp_path / "texts"), "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
