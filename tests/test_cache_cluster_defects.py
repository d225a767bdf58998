"""Issue 28, cache part: bad imported rows are never served nor crash a transform, and a cache
folder that is gone is created again only when something is written."""

import pickle
import re
import shutil
import sqlite3
import stat
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sktransfer import CacheError, EmbeddingCache, TextEncoder
from sktransfer.cache import forget_process_state

TEXTS = ["a fine film", "a dull film", "an odd film"]


@pytest.fixture(scope="module")
def plain():
    """The vectors without any cache, and the encoder's fingerprint."""
    encoder = TextEncoder(device="cpu").fit(TEXTS[:1])
    return encoder.transform(TEXTS), encoder.identity_.fingerprint


def write_export(path, fingerprint, vectors, keys=None, vector_type=None):
    from sktransfer._content import text_key

    keys = keys if keys is not None else [text_key(t) for t in TEXTS[: len(vectors)]]
    vector = pa.array([list(v) for v in vectors], vector_type) if vector_type else [list(map(float, v)) for v in vectors]
    pq.write_table(pa.table({"fingerprint": [fingerprint] * len(keys), "description": [""] * len(keys),
                             "item_key": pa.array(keys, pa.binary()), "vector": vector}), path)


def dims(cache):
    return {f["fingerprint"]: f["dim"] for f in cache.info()["fingerprints"]}


# ------------------------------------------------------------------------------ imported widths
def test_rows_of_another_width_imported_into_a_fresh_cache_are_damaged_not_a_crash(tmp_path, plain):
    features, fingerprint = plain
    write_export(tmp_path / "narrow.parquet", fingerprint, features[:, :383])
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.import_(tmp_path / "narrow.parquet") == 3  # nothing here says 384: the lookup protects
    encoder = TextEncoder(device="cpu", cache=cache).fit(TEXTS[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # before: RuntimeError "stores 383-d vectors, not 384-d"
        served = encoder.transform(TEXTS)
    np.testing.assert_allclose(served, features, atol=1e-6)
    assert cache.stats.last == {"hits": 0, "misses": 3, "corrupt": 3}
    assert dims(cache) == {fingerprint: 384}  # the encoder's width, and its vectors, replaced the import's
    np.testing.assert_allclose(encoder.transform(TEXTS), features, atol=1e-6)
    assert cache.stats.last == {"hits": 3, "misses": 0, "corrupt": 0}
    # An import now knows the width from the cache's own rows, and refuses the narrow ones.
    with pytest.raises(CacheError, match="stores 384-d vectors, not 383-d; this export does not match"):
        cache.import_(tmp_path / "narrow.parquet")


def test_a_partly_narrow_fingerprint_keeps_its_good_rows_and_drops_the_others(tmp_path, plain):
    features, fingerprint = plain
    write_export(tmp_path / "narrow.parquet", fingerprint, features[:2, :383])
    cache = EmbeddingCache(tmp_path / "cache", memory_bytes=0)
    cache.import_(tmp_path / "narrow.parquet")
    encoder = TextEncoder(device="cpu", cache=cache).fit(TEXTS[:1])
    np.testing.assert_allclose(encoder.transform(TEXTS[2:]), features[2:], atol=1e-6)  # writes a 384-d row
    with sqlite3.connect(cache.path / "embeddings.sqlite3") as db:  # the narrow rows can never be served
        assert db.execute("SELECT length(vector) FROM embeddings").fetchall() == [(4 * 384,)]
    np.testing.assert_allclose(encoder.transform(TEXTS), features, atol=1e-6)
    assert cache.stats.last == {"hits": 1, "misses": 2, "corrupt": 0}


def test_read_only_cache_with_narrow_rows_counts_them_damaged(tmp_path, plain):
    features, fingerprint = plain
    write_export(tmp_path / "narrow.parquet", fingerprint, features[:, :383])
    EmbeddingCache(tmp_path / "cache").import_(tmp_path / "narrow.parquet")
    forget_process_state(tmp_path / "cache")  # as a worker that only reads it would find it
    cache = EmbeddingCache(tmp_path / "cache", read_only=True)
    encoder = TextEncoder(device="cpu", cache=cache).fit(TEXTS[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(encoder.transform(TEXTS), features, atol=1e-6)
    assert cache.stats.last == {"hits": 0, "misses": 3, "corrupt": 3}


@pytest.mark.parametrize("vector_type, message", [
    (pa.list_(pa.int64()), r"column 'vector' holds list<\w+: int64>, not a list of floats"),
    (pa.list_(pa.string()), r"column 'vector' holds list<\w+: string>, not a list of floats"),
    (pa.list_(pa.bool_()), r"column 'vector' holds list<\w+: bool>, not a list of floats"),
])
def test_import_refuses_vectors_that_are_not_floats(tmp_path, plain, vector_type, message):
    _, fingerprint = plain
    values = {pa.list_(pa.string()): [["1", "2"]], pa.list_(pa.bool_()): [[True, False]]}.get(vector_type, [[1, 0]])
    write_export(tmp_path / "bad.parquet", fingerprint, values, vector_type=vector_type)
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(CacheError, match=message) as info:  # before: strings were parsed as numbers
        cache.import_(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(info.value)
    assert not (tmp_path / "cache").exists()  # refused before anything was written


def test_import_refuses_keys_that_are_not_bytes(tmp_path, plain):
    _, fingerprint = plain
    pq.write_table(pa.table({"fingerprint": [fingerprint], "description": [""], "item_key": ["a fine film"],
                             "vector": [[1.0, 2.0]]}), tmp_path / "bad.parquet")
    with pytest.raises(CacheError, match="column 'item_key' holds string"):  # before: a TypeError
        EmbeddingCache(tmp_path / "cache").import_(tmp_path / "bad.parquet")


def test_float64_exports_are_read_as_float32_and_overflow_is_non_finite(tmp_path, plain):
    features, fingerprint = plain
    write_export(tmp_path / "wide.parquet", fingerprint, features.astype(np.float64), vector_type=pa.list_(pa.float64()))
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.import_(tmp_path / "wide.parquet") == 3
    encoder = TextEncoder(device="cpu", cache=cache).fit(TEXTS[:1])
    np.testing.assert_array_equal(encoder.transform(TEXTS), features)
    assert cache.stats.last["hits"] == 3
    huge = features[:1].astype(np.float64)
    huge[0, 0] = 1e300  # finite in float64, inf in float32
    write_export(tmp_path / "huge.parquet", fingerprint, huge, vector_type=pa.list_(pa.float64()))
    with pytest.raises(CacheError, match="row 0 holds a non-finite value"):
        EmbeddingCache(tmp_path / "other").import_(tmp_path / "huge.parquet")


def test_an_imported_vector_is_trusted_as_documented(tmp_path, plain):
    """The checksum detects damage to stored bytes; it cannot say whether a vector belongs to its
    key. An import computes it over whatever it is given, so a forged vector of the right width is
    served: the documented policy is to import only exports you trust (docs/errors.md)."""
    features, fingerprint = plain
    write_export(tmp_path / "forged.parquet", fingerprint, features[::-1])  # right width, wrong items
    cache = EmbeddingCache(tmp_path / "cache")
    cache.import_(tmp_path / "forged.parquet")
    served = TextEncoder(device="cpu", cache=cache).fit(TEXTS[:1]).transform(TEXTS)
    np.testing.assert_array_equal(served, features[::-1])
    assert "Import only exports you trust" in EmbeddingCache.import_.__doc__


# ------------------------------------------------------------------------------ a folder that is gone
def fitted_pickle(folder, **cache_options):
    encoder = TextEncoder(device="cpu", cache=EmbeddingCache(folder, **cache_options)).fit(TEXTS[:1])
    if not cache_options.get("read_only"):
        encoder.transform(TEXTS[:1])
    return pickle.dumps(encoder)


def test_a_loaded_pickle_whose_cache_folder_is_gone_warns_once_and_creates_it_only_to_write(tmp_path, plain):
    features, _ = plain
    folder = tmp_path / "cache"
    blob = fitted_pickle(folder)
    assert folder.is_dir()
    shutil.rmtree(folder)  # this process still holds the store (and a connection) of the folder
    with pytest.warns(UserWarning, match=f"{re.escape(str(folder))} of this loaded object does not exist.*created "
                                         "when something is written"):
        encoder = pickle.loads(blob)
    assert not folder.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = pickle.loads(blob)  # once per folder and process
        assert not folder.exists()
        cache = encoder.cache
        assert cache.info()["entries"] == 0 and cache.clear() == 0  # looking is not writing
        cache.export(tmp_path / "nothing.parquet")
        assert not folder.exists()
        np.testing.assert_allclose(encoder.transform(TEXTS), features, atol=1e-6)  # misses, then writes
    assert cache.stats.last == {"hits": 0, "misses": 3, "corrupt": 0}
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    again.transform(TEXTS)
    assert cache.stats.last == {"hits": 3, "misses": 0, "corrupt": 0}


def test_a_read_only_cache_that_is_gone_is_never_created(tmp_path, plain):
    features, _ = plain
    folder = tmp_path / "shipped"
    EmbeddingCache(folder).put("f", [b"k"], np.ones((1, 2), np.float32))
    blob = fitted_pickle(folder, read_only=True)
    shutil.rmtree(folder)
    encoder = pickle.loads(blob)
    with pytest.warns(UserWarning, match="no embedding cache at"):
        np.testing.assert_allclose(encoder.transform(TEXTS), features, atol=1e-6)
    assert not folder.exists()


def test_a_new_cache_folder_is_created_by_the_first_write_only(tmp_path, plain):
    features, _ = plain
    folder = tmp_path / "deep" / "cache"
    cache = EmbeddingCache(folder)
    assert cache.get("f", [b"k"], 2)[1].tolist() == [False]
    assert cache.info()["fingerprints"] == [] and not (tmp_path / "deep").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh cache (and its copies) is not a lost one
        copy = pickle.loads(pickle.dumps(cache))
    np.testing.assert_allclose(TextEncoder(device="cpu", cache=copy).fit(TEXTS[:1]).transform(TEXTS), features,
                               atol=1e-6)
    assert folder.is_dir() and cache.info()["entries"] == 3


def test_a_store_whose_database_was_deleted_forgets_what_it_read(tmp_path):
    folder = tmp_path / "cache"
    cache = EmbeddingCache(folder)
    cache.put("f", [b"k"], np.ones((1, 2), np.float32))
    assert cache.get("f", [b"k"], 2)[1].all()
    shutil.rmtree(folder)
    assert not cache.get("f", [b"l"], 2)[1].any()  # notices the file is gone, and does not recreate it
    assert not folder.exists()
    assert not cache.get("f", [b"k"], 2)[1].any()  # nor serves the deleted file's vectors from memory
