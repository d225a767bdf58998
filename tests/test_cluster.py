"""sktransfer.dask and sktransfer.ray on real local clusters (2 worker processes; Ray with 2 CPUs).

Every test is bounded: a watchdog dumps the stacks and ends the run if a cluster hangs, rather
than letting CI wait for its global limit. The extras are installed by the project's set-up; the
tests skip, with the reason, only where one is missing.
"""

import faulthandler
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cluster_helpers import CountingTextEncoder, worker_load_counts  # noqa: E402

WATCHDOG_S = 300

TEXTS = [f"review {i}: the film was {'wonderful' if i % 2 else 'dreadful'}, {i * 7 % 11} stars" for i in range(48)]


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder().fit(TEXTS[:2])


@pytest.fixture(scope="module")
def local_features(text_encoder):
    return text_encoder.transform(TEXTS)


def test_import_sktransfer_imports_no_cluster_engine():
    import subprocess

    code = ("import sys, sktransfer, sktransfer.cli, sktransfer._cluster; "
            "print(sorted({'dask', 'distributed', 'ray', 'pyspark', 'py4j'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'sktransfer[dask]'")
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])})
    client = Client(cluster, timeout="60s")
    yield client
    client.close()
    cluster.close()


def test_dask_dataframe_column_matches_local_keeps_index_and_is_lazy(dask_client, text_encoder, local_features):
    import dask.dataframe as dd

    from sktransfer.dask import transform

    frame = pd.DataFrame({"text": TEXTS, "other": 1}, index=pd.Index(np.arange(1000, 1048), name="id"))
    ddf = dd.from_pandas(frame, npartitions=4)
    before = dask_client.run(worker_load_counts)
    features = transform(text_encoder, ddf, column="text")
    assert isinstance(features, dd.DataFrame)  # lazy: nothing encoded yet
    assert dask_client.run(worker_load_counts) == before
    assert features.divisions == ddf.divisions
    assert list(features.columns) == list(text_encoder.get_feature_names_out(["text"]))
    assert features.dtypes.unique().tolist() == [np.dtype("float32")]
    result = dask_client.compute(features).result(timeout=WATCHDOG_S)
    assert result.index.equals(frame.index)
    np.testing.assert_allclose(result.to_numpy(), local_features, atol=1e-5)
    # A dask Series works the same, and a second run loads nothing again: one load per worker.
    again = dask_client.compute(transform(text_encoder, ddf["text"])).result(timeout=WATCHDOG_S)
    np.testing.assert_allclose(again.to_numpy(), local_features, atol=1e-5)
    counts = dask_client.run(worker_load_counts)
    assert len(counts) == 2 and all(c == {"TextEncoder": 1} for c in counts.values()), counts


def test_dask_bag_and_array(dask_client, text_encoder, local_features):
    import dask.array as da
    import dask.bag as db

    from sktransfer.dask import transform

    bag = transform(text_encoder, db.from_sequence(TEXTS, npartitions=3))
    np.testing.assert_allclose(dask_client.compute(bag).result(timeout=WATCHDOG_S), local_features, atol=1e-5)
    array = da.from_array(np.asarray(TEXTS, dtype=object), chunks=10)
    features = transform(text_encoder, array)
    assert features.chunks == (array.chunks[0], (text_encoder.embedding_dim_,))
    np.testing.assert_allclose(dask_client.compute(features).result(timeout=WATCHDOG_S), local_features, atol=1e-5)


def test_dask_error_names_partition_and_item(dask_client, text_encoder):
    import dask.array as da
    import dask.dataframe as dd

    from sktransfer.dask import transform

    texts = list(TEXTS)
    texts[29] = None
    frame = pd.DataFrame({"text": texts}, index=np.arange(500, 548))
    with pytest.raises(ValueError, match=r"index 5 is a missing value.*partition 2 of 4; index 5 there is the row "
                                         r"with index label 529"):
        dask_client.compute(transform(text_encoder, dd.from_pandas(frame, npartitions=4), column="text")).result(
            timeout=WATCHDOG_S)
    array = da.from_array(np.asarray(texts, dtype=object), chunks=10)
    with pytest.raises(ValueError, match=r"block 2 of 5; index 9 there is row 29 of the array"):
        dask_client.compute(transform(text_encoder, array)).result(timeout=WATCHDOG_S)


def test_dask_images_match_local(dask_client, hymenoptera):
    import dask.dataframe as dd

    from sktransfer.dask import transform

    paths = hymenoptera["val"]["ants"][:6] + hymenoptera["val"]["bees"][:6]
    encoder = ImageEncoder(weights="IMAGENET1K_V1").fit(paths[:1])
    local = encoder.transform(paths)
    remote = transform(encoder, dd.from_pandas(pd.DataFrame({"photo": paths}), npartitions=3), column="photo")
    np.testing.assert_allclose(dask_client.compute(remote).result(timeout=WATCHDOG_S).to_numpy(), local, atol=1e-5)


def test_dask_refuses_bad_calls(text_encoder, monkeypatch):
    pytest.importorskip("dask", reason="the dask extra is not installed: pip install 'sktransfer[dask]'")
    import dask.dataframe as dd

    from sktransfer.dask import transform

    ddf = dd.from_pandas(pd.DataFrame({"a": ["x"], "b": ["y"]}), npartitions=1)
    with pytest.raises(NotFittedError, match="call encoder.fit"):
        transform(TextEncoder(), ddf, column="a")
    with pytest.raises(ValueError, match="choose the one to encode with column="):
        transform(text_encoder, ddf)
    with pytest.raises(KeyError, match="no column 'c'"):
        transform(text_encoder, ddf, column="c")
    with pytest.raises(TypeError, match="call encoder.transform directly"):
        transform(text_encoder, ["x", "y"])
    # Without a distributed client the local scheduler runs it (the encoder is one graph key).
    import distributed

    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "default_client", no_client)
    out = transform(text_encoder, ddf, column="a").compute(scheduler="threads")
    np.testing.assert_allclose(out.to_numpy(), text_encoder.transform(["x"]), atol=1e-6)


def test_worker_resolves_device_auto_for_itself(text_encoder):
    import pickle

    from sktransfer._cluster import prepare_on_worker

    shipped = pickle.loads(pickle.dumps(text_encoder))
    shipped.device_ = "cuda:3"  # as if fit ran on a client with GPUs, and this worker has none
    assert prepare_on_worker(shipped).device_ == "cpu"
    assert text_encoder.device_ == "cpu"
    pinned = pickle.loads(pickle.dumps(text_encoder.set_params(device="cpu")))
    assert prepare_on_worker(pinned).device_ == "cpu"
    text_encoder.set_params(device="auto")


def test_grid_search_on_dask_backend_with_cache(dask_client, sst2_sample, tmp_path):
    import joblib

    texts, labels = sst2_sample
    cache = EmbeddingCache(tmp_path / "cache")
    pipe = make_pipeline(TextEncoder(cache=cache), LogisticRegression(max_iter=1000))
    grid = {"logisticregression__C": [0.1, 1.0, 10.0]}
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(pipe, grid, cv=3, n_jobs=-1).fit(texts, labels)
    # The workers wrote into the folder's cache (one host, so one SQLite file is safe).
    assert cache.info()["entries"] == len(set(texts))
    sequential = GridSearchCV(pipe, grid, cv=3).fit(texts, labels)
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    assert remote.best_params_ == sequential.best_params_
    assert cache.stats.misses == 0  # the local run found every text the workers had encoded


def test_cluster_cache_comes_home(dask_client, text_encoder, tmp_path):
    """Workers encode into their local cache, export to shared storage, and the client imports it."""
    import dask.dataframe as dd

    from sktransfer.dask import transform

    worker_cache, shared, home = tmp_path / "worker-cache", tmp_path / "shared", EmbeddingCache(tmp_path / "home")
    encoder = TextEncoder(cache=str(worker_cache)).fit(TEXTS[:1])
    dask_client.compute(transform(encoder, dd.from_pandas(pd.DataFrame({"t": TEXTS}), npartitions=4),
                                  column="t")).result(timeout=WATCHDOG_S)
    exported = dask_client.run(lambda: EmbeddingCache(worker_cache).export(f"{shared}/"))
    assert sum(exported.values()) >= len(TEXTS) and len(list(shared.glob("part-*.parquet"))) == 2
    assert home.import_(shared) == len(TEXTS)
    local = TextEncoder(cache=home).fit(TEXTS[:1])
    local.transform(TEXTS)
    assert home.stats.last == {"hits": len(TEXTS), "misses": 0, "corrupt": 0}


def within(seconds, work):
    """``work()``'s result, or a failure after ``seconds`` (a hang must fail the test, not the run)."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_dask_transform_right_after_a_worker_died(dask_client, text_encoder, local_features):
    """Issue 28: the encoder was scattered with broadcast=True, which waited for the worker the
    nanny was restarting, and the next transform hung for minutes. Plain Dask work carries on
    under the same conditions, and so must this."""
    import signal

    import dask.bag as db
    import dask.dataframe as dd

    from sktransfer.dask import transform

    ddf = dd.from_pandas(pd.DataFrame({"text": TEXTS}), npartitions=4)
    bag = db.from_sequence(TEXTS, npartitions=3)
    victim = sorted(dask_client.scheduler_info()["workers"])[0]
    pid = dask_client.run(os.getpid, workers=[victim])[victim]
    try:
        os.kill(pid, signal.SIGKILL)  # the nanny notices, and starts a new worker process
        features = within(90, lambda: dask_client.compute(transform(text_encoder, bag)).result(timeout=90))
        np.testing.assert_allclose(features, local_features, atol=1e-5)
        frame = within(90, lambda: dask_client.compute(transform(text_encoder, ddf, column="text")).result(timeout=90))
        np.testing.assert_allclose(frame.to_numpy(), local_features, atol=1e-5)
    finally:
        dask_client.wait_for_workers(2, timeout=120)  # the other tests get their two workers back


def test_dask_empty_inputs_keep_their_columns_and_meta(dask_client, text_encoder):
    import dask.array as da
    import dask.bag as db
    import dask.dataframe as dd

    from sktransfer.dask import transform

    names = list(text_encoder.get_feature_names_out(["text"]))
    index = pd.Index(np.arange(100, 106), name="id")
    some = dd.from_pandas(pd.DataFrame({"text": TEXTS[:6]}, index=index), npartitions=3)
    nothing = dd.from_pandas(pd.DataFrame({"text": pd.Series([], dtype=object)},
                                          index=pd.Index([], dtype="int64", name="id")), npartitions=1)
    for ddf, rows in [(some[some["text"].str.startswith("review 5")], 1), (nothing, 0)]:  # empty partitions; none
        result = dask_client.compute(transform(text_encoder, ddf, column="text")).result(timeout=WATCHDOG_S)
        assert result.shape == (rows, len(names)) and list(result.columns) == names
        assert result.dtypes.unique().tolist() == [np.dtype("float32")] and result.index.name == "id"
    empties = [db.from_sequence([], npartitions=1), db.from_delayed([]),  # before: "Need array(s) to concatenate"
               db.from_sequence(TEXTS[:3], npartitions=3).filter(lambda text: False),
               da.from_array(np.asarray([], dtype=object), chunks=10)]
    for empty in empties:
        features = dask_client.compute(transform(text_encoder, empty)).result(timeout=WATCHDOG_S)
        assert features.shape == (0, len(names)) and features.dtype == np.float32


# ---------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'sktransfer[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'sktransfer[ray]'")
    log = tmp_path_factory.mktemp("ray") / "loads.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "SKTRANSFER_TEST_LOAD_LOG": str(log)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray, log
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_encoded(ray_session):
    """TEXTS and their row numbers through ``sktransfer.ray.transform``, run once (each Ray
    execution starts its actors anew, and loads the model in each)."""
    ray, _ = ray_session
    from sktransfer.ray import transform

    encoder = CountingTextEncoder().fit(TEXTS[:2])
    dataset = ray.data.from_pandas(pd.DataFrame({"text": TEXTS, "row": np.arange(len(TEXTS))}))  # one block
    return transform(encoder, dataset, column="text", batch_size=8).materialize()


def test_ray_matches_local_keeps_order_and_loads_once_per_actor(ray_session, ray_encoded, local_features):
    _, log = ray_session
    encoded = ray_encoded
    assert encoded.num_blocks() >= 2  # the single block was split so every actor gets work
    result = encoded.to_pandas()
    assert result["row"].tolist() == list(range(len(TEXTS)))  # input order
    np.testing.assert_allclose(np.stack(result["embedding"].to_numpy()), local_features, atol=1e-5)
    loads = log.read_text().split()
    assert len(loads) == len(set(loads)) == 1  # one actor (2 CPUs, one left free), one load


def test_ray_error_names_the_item(ray_session, text_encoder):
    ray, _ = ray_session
    from sktransfer.ray import transform

    texts = list(TEXTS)
    texts[13] = None
    dataset = ray.data.from_pandas(pd.DataFrame({"text": texts}))
    with pytest.raises(Exception, match=r"index 5 is a missing value.*sktransfer.ray: a batch of 8 rows of column "
                                        r"'text'; index 5 there is (None|nan)"):
        transform(text_encoder, dataset, column="text", batch_size=8).take_all()
    with pytest.raises(KeyError, match="no column 'review'"):
        transform(text_encoder, dataset, column="review")
    with pytest.raises(NotFittedError):
        transform(TextEncoder(), dataset, column="text")


def test_grid_search_on_ray_backend(ray_session, sst2_sample, tmp_path):
    import joblib
    from ray.util.joblib import register_ray

    texts, labels = sst2_sample
    register_ray()
    pipe = make_pipeline(TextEncoder(cache=tmp_path / "cache"), LogisticRegression(max_iter=1000))
    grid = {"logisticregression__C": [0.1, 10.0]}
    sequential = GridSearchCV(pipe, grid, cv=2).fit(texts, labels)
    with joblib.parallel_backend("ray"):
        remote = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(texts, labels)
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])


def test_cli_embed_on_a_dask_scheduler(dask_client, hymenoptera, tmp_path):
    """`sktransfer embed --scheduler`: Parquet partitions out, equal to a local run; bad output refused first."""
    import subprocess

    paths = hymenoptera["val"]["bees"][:5]
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")
    address = dask_client.scheduler.address

    def argv(*args):
        return ["embed", str(tmp_path / "list.txt"), "--weights", "IMAGENET1K_V1", "--no-cache", "--scheduler",
                address, *args]

    # The real entry point, in a process of its own: the client it opens and closes is not this test's.
    result = subprocess.run([sys.executable, "-m", "sktransfer", *argv("-o", str(tmp_path / "out"), "--partitions", "2")],
                            capture_output=True, text=True, timeout=WATCHDOG_S)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 2 Parquet partition(s) of image features" in result.stdout
    written = pd.read_parquet(tmp_path / "out")
    local = ImageEncoder(weights="IMAGENET1K_V1").fit(paths[:1])
    assert written["item"].tolist() == paths
    assert list(written.columns[1:]) == list(local.get_feature_names_out())
    np.testing.assert_allclose(written.iloc[:, 1:].to_numpy(), local.transform(paths), atol=1e-5)
    # Refused before any client connects, so in this process.
    from test_docs import sktransfer_in_process

    for output, message in [("out", "is not an empty folder"), ("x.npy", "not a .npy file")]:
        result = sktransfer_in_process(argv("-o", str(tmp_path / output)), {})
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_ray_refuses_actors_on_every_cpu(ray_session, text_encoder):
    ray, _ = ray_session
    from sktransfer.ray import transform

    dataset = ray.data.from_items([{"text": t} for t in TEXTS[:4]])
    with pytest.raises(ValueError, match=r"concurrency=2 actors would hold every CPU .* concurrency <= 1"):
        transform(text_encoder, dataset, column="text", concurrency=2)


def test_ray_gpus_follow_the_encoder_device(ray_session, text_encoder):
    ray, _ = ray_session
    from sktransfer.ray import _gpus_per_actor, transform

    assert _gpus_per_actor(TextEncoder(device="cuda:1"), None) == 1
    assert _gpus_per_actor(TextEncoder(device="cpu"), None) == 0
    assert _gpus_per_actor(TextEncoder(device="auto"), None) == 0  # this cluster has no GPU
    assert _gpus_per_actor(TextEncoder(device="cpu"), 0.5) == 0.5
    dataset = ray.data.from_items([{"text": t} for t in TEXTS[:4]])
    with pytest.raises(ValueError, match=r"need 1 GPU\(s\), and this Ray cluster has 0: the job would wait forever"):
        transform(text_encoder, dataset, column="text", num_gpus=1)


def test_ray_empty_dataset_keeps_its_columns(ray_session, ray_encoded, text_encoder):
    """Ray Data runs no batch of an empty dataset: the output used to have no columns at all."""
    ray, _ = ray_session
    from sktransfer.ray import transform

    some = ray.data.from_pandas(pd.DataFrame({"text": TEXTS[:3], "row": np.arange(3)}))
    expected = ray_encoded.schema()  # what a non-empty dataset of the same columns gives
    assert expected.names == ["text", "row", "embedding"]
    nothing = ray.data.from_pandas(pd.DataFrame({"text": pd.Series([], dtype=object), "row": pd.Series([], dtype="int64")}))
    from ray.data.expressions import col

    for empty in [nothing, some.filter(expr=col("row") > 100)]:
        encoded = transform(text_encoder, empty, column="text").materialize()  # runs once
        assert encoded.take_all() == []
        schema = encoded.schema()
        assert schema is not None and schema.names == expected.names
        assert schema.types[1:] == expected.types[1:]  # an empty object column has no type to keep
