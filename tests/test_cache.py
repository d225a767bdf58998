"""EmbeddingCache: one encoding per distinct item, never a stale or damaged vector."""

import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder

TEXTS = ["a fine film", "a dull film", "", "an utterly forgettable sequel", "a fine film"]


@pytest.fixture
def cache(tmp_path):
    return EmbeddingCache(tmp_path / "cache")




def test_hits_return_the_same_vectors_and_skip_the_network(cache, encoded):
    enc = TextEncoder(cache=cache).fit(TEXTS)
    first = enc.transform(TEXTS)
    assert cache.stats.last == {"hits": 0, "misses": 4, "corrupt": 0}
    assert sorted(encoded) == sorted(set(TEXTS))
    encoded.clear()
    second = enc.transform(TEXTS[::-1])
    assert cache.stats.last == {"hits": 4, "misses": 0, "corrupt": 0}
    assert encoded == []
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_allclose(first, TextEncoder().fit(TEXTS).transform(TEXTS), atol=1e-6)


def test_grid_search_encodes_each_unique_sentence_exactly_once(cache, sst2_sample, encoded):
    texts, labels = sst2_sample
    pipe = make_pipeline(TextEncoder(cache=cache), LogisticRegression(max_iter=1000))
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}, cv=5)
    grid.fit(texts, labels)
    # 30 fold fits + 30 fold scores + 1 refit, yet every distinct sentence reached the network once.
    assert sorted(encoded) == sorted(set(texts))
    assert cache.stats.misses == len(set(texts))
    n = len(texts)  # 40 distinct sentences: folds of 32 training and 8 test sentences
    assert cache.stats.hits + cache.stats.misses == 30 * (n * 4 // 5) + 30 * (n // 5) + n


def test_grid_search_with_processes_shares_the_cache(cache, sst2_sample, encoded):
    texts, labels = sst2_sample
    texts, labels = texts[:24], labels[:24]
    pipe = make_pipeline(TextEncoder(cache=cache), LogisticRegression(max_iter=1000))
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2, n_jobs=2).fit(texts, labels)
    info = cache.info()
    assert info["entries"] == len(set(texts)) and len(info["fingerprints"]) == 1
    encoded.clear()
    out = TextEncoder(cache=cache).fit(texts).transform(texts)
    assert encoded == [] and cache.stats.last["misses"] == 0
    np.testing.assert_allclose(out, TextEncoder().fit(texts).transform(texts), atol=1e-6)


def test_outputs_that_differ_never_share_entries(cache):
    plain = TextEncoder(cache=cache).fit(TEXTS)
    reference = plain.transform(TEXTS)
    for params in [{"max_length": 4}, {"precision": "bf16"}]:
        other = clone(plain).set_params(**params).fit(TEXTS)
        assert other.identity_.fingerprint != plain.identity_.fingerprint
        out = other.transform(TEXTS)
        assert cache.stats.last["hits"] == 0, params
        assert not np.allclose(out, reference, atol=1e-4), params
    # parameters that do not change the vectors keep hitting (all-MiniLM-L6-v2 already ends in a
    # Normalize module, so normalize=True gives the same vectors and shares their entries)
    for params in [{"normalize": True}, {"batch_size": 1}, {"device": "cpu"}, {"show_progress": True}, {"n_threads": 1},
                   {"n_streams": 2, "batch_size": 1}]:
        clone(plain).set_params(**params).fit(TEXTS).transform(TEXTS)
        assert cache.stats.last == {"hits": 4, "misses": 0, "corrupt": 0}, params


def test_image_encoders_with_different_models_or_layers_stay_apart(cache, hymenoptera):
    photos = hymenoptera["train"]["ants"][:3]
    base = dict(weights="IMAGENET1K_V1", device="cpu", num_workers=0, cache=cache)
    default = ImageEncoder(**base).fit(photos)
    reference = default.transform(photos)
    layered = ImageEncoder(**base, layer="features.16.add").fit(photos)
    assert layered.transform(photos).shape == (3, 160) and cache.stats.last["hits"] == 0
    pooled = ImageEncoder(**base, layer="features.18", pooling="max").fit(photos)
    pooled.transform(photos)
    assert cache.stats.last["hits"] == 0
    random = ImageEncoder(**{**base, "weights": None})
    with pytest.warns(UserWarning, match="randomly initialised"):
        random.fit(photos)
    assert not np.allclose(random.transform(photos), reference, atol=1e-3)
    assert cache.stats.last["hits"] == 0
    ImageEncoder(**{**base, "batch_size": 1, "num_workers": 1}).fit(photos).transform(photos)
    assert cache.stats.last == {"hits": 3, "misses": 0, "corrupt": 0}
    assert len(cache.info()["fingerprints"]) == 4


def test_image_keys_follow_content_not_paths(cache, hymenoptera, tmp_path):
    source = hymenoptera["train"]["bees"][0]
    copy = tmp_path / "renamed.jpg"
    shutil.copy(source, copy)
    enc = ImageEncoder(weights="IMAGENET1K_V1", device="cpu", num_workers=0, cache=cache).fit([source])
    first = enc.transform([source])
    renamed = enc.transform([str(copy)])
    assert cache.stats.last == {"hits": 1, "misses": 0, "corrupt": 0}
    np.testing.assert_array_equal(renamed, first)
    with open(copy, "ab") as handle:  # an edited file is a different image
        handle.write(b"\0")
    enc.transform([str(copy)])
    assert cache.stats.last["misses"] == 1


def test_image_grid_search_encodes_each_photo_once(cache, hymenoptera):
    X = hymenoptera["train"]["ants"][:6] + hymenoptera["train"]["bees"][:6]
    y = [0] * 6 + [1] * 6
    encoder = ImageEncoder(weights="IMAGENET1K_V1", device="cpu", num_workers=0, cache=cache)
    GridSearchCV(make_pipeline(encoder, LogisticRegression()), {"logisticregression__C": [0.1, 1]}, cv=3).fit(X, y)
    assert cache.stats.misses == 12


def test_failed_images_are_not_cached(cache, hymenoptera, tmp_path):
    enc = ImageEncoder(weights="IMAGENET1K_V1", device="cpu", num_workers=0, cache=cache, on_error="nan")
    X = [hymenoptera["train"]["ants"][0], str(tmp_path / "missing.jpg")]
    enc.fit(X)
    with pytest.warns(UserWarning, match="NaN rows for 1 of 2"):
        out = enc.transform(X)
    assert np.isnan(out[1]).all() and cache.info()["entries"] == 1


def test_corrupt_rows_are_detected_and_reencoded(cache):
    enc = TextEncoder(cache=cache).fit(TEXTS)
    reference = enc.transform(TEXTS)
    db = sqlite3.connect(cache.path / "embeddings.sqlite3")
    db.execute("UPDATE embeddings SET vector = zeroblob(length(vector)) WHERE item_key = "
               "(SELECT item_key FROM embeddings LIMIT 1)")
    db.execute("UPDATE embeddings SET vector = substr(vector, 1, 100) WHERE item_key = "
               "(SELECT item_key FROM embeddings LIMIT 1 OFFSET 1)")
    db.commit()
    db.close()
    fresh = EmbeddingCache(cache.path, memory_bytes=0)  # read the damaged rows from disk
    out = clone(enc).set_params(cache=fresh).fit(TEXTS).transform(TEXTS)
    assert fresh.stats.last == {"hits": 2, "misses": 2, "corrupt": 2}
    np.testing.assert_allclose(out, reference, atol=1e-6)
    clone(enc).set_params(cache=fresh).fit(TEXTS).transform(TEXTS)
    assert fresh.stats.last["corrupt"] == 0  # rewritten


def test_killed_writer_leaves_a_readable_cache(tmp_path, sst2_sample, encoded):
    texts = [f"{t} ({i})" for i, t in enumerate(sst2_sample[0] * 25)]  # 1000 distinct sentences
    path, marker = tmp_path / "cache", tmp_path / "five-batches-stored"
    # The writer stores five batches of 8, says so, and blocks in the sixth: the kill always lands
    # mid-run, whatever the machine's speed.
    script = textwrap.dedent(
        f"""
        import os, pathlib, time
        os.environ["HF_HUB_OFFLINE"] = "1"
        from sktransfer import EmbeddingCache, TextEncoder
        original, calls = EmbeddingCache.put, []

        def put(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 6:
                pathlib.Path({str(marker)!r}).write_text("5")
                time.sleep(600)
            return original(self, *args, **kwargs)

        EmbeddingCache.put = put
        texts = {texts!r}
        TextEncoder(cache={str(path)!r}, batch_size=8, n_streams=1).fit(texts).transform(texts)
        print("finished")
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists() and writer.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists() and writer.poll() is None, writer.communicate()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    cache = EmbeddingCache(path)
    enc = TextEncoder(cache=cache).fit(texts)
    out = enc.transform(texts)
    assert cache.stats.last == {"hits": 40, "misses": len(texts) - 40, "corrupt": 0}
    assert len(encoded) == len(texts) - 40  # only the lost entries are recomputed
    np.testing.assert_allclose(out, TextEncoder(batch_size=64).fit(texts).transform(texts), atol=1e-5)


def test_info_clear_and_lru_eviction(tmp_path):
    cache = EmbeddingCache(tmp_path / "c", max_bytes=400_000)  # room for one encoder's 60 rows, not two
    a = TextEncoder(cache=cache).fit(["x"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a.transform([f"sentence {i}" for i in range(60)])
        assert [f["entries"] for f in cache.info()["fingerprints"]] == [60]
        b = TextEncoder(cache=cache, max_length=128).fit(["x"])
        b.transform([f"sentence {i}" for i in range(60)])
    info = cache.info()
    assert [f["entries"] for f in info["fingerprints"]] == [60]  # a's fingerprint was evicted
    assert info["fingerprints"][0]["fingerprint"] == b.identity_.fingerprint
    assert "max_length=128" in info["fingerprints"][0]["description"]
    assert cache.clear() == 60 and cache.info()["entries"] == 0


def test_cache_parameter_forms_and_pickling(tmp_path):
    enc = TextEncoder(cache=str(tmp_path / "by-path")).fit(TEXTS)
    enc.transform(TEXTS)
    assert EmbeddingCache(tmp_path / "by-path").stats.misses == 4  # same folder, same counters
    blob = pickle.dumps(enc)
    assert len(blob) < 5_000
    restored = pickle.loads(blob)
    restored.transform(TEXTS)
    assert EmbeddingCache(tmp_path / "by-path").stats.last["hits"] == 4
    cache = EmbeddingCache(tmp_path / "obj")
    assert pickle.loads(pickle.dumps(cache)) == cache
    with pytest.raises(Exception, match="cache"):
        TextEncoder(cache=42).fit(TEXTS)


def test_storage_holds_no_pickles(cache):
    TextEncoder(cache=cache).fit(TEXTS).transform(TEXTS)
    db = sqlite3.connect(cache.path / "embeddings.sqlite3")
    columns = [row[1] for row in db.execute("PRAGMA table_info(embeddings)")]
    assert columns == ["fingerprint_id", "item_key", "vector", "crc"]
    for (blob,) in db.execute("SELECT vector FROM embeddings"):
        assert len(blob) == 384 * 4 and not blob.startswith(b"\x80")  # raw float32, no pickle header


def test_command_line_shows_and_clears(cache):
    TextEncoder(cache=cache).fit(TEXTS).transform(TEXTS)
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "sktransfer", "cache", *args, "--path", str(cache.path)], capture_output=True, text=True
    )
    shown = run("info")
    assert shown.returncode == 0 and "4 entries" in shown.stdout and "TextEncoder(model='all-MiniLM-L6-v2'" in shown.stdout
    cleared = run("clear")
    assert cleared.returncode == 0 and "deleted 4 entries" in cleared.stdout
    assert "0 entries" in run("info").stdout
    help_text = subprocess.run([sys.executable, "-m", "sktransfer", "cache", "clear", "--help"], capture_output=True, text=True)
    assert "--fingerprint" in help_text.stdout
