"""Moving cache entries between machines: EmbeddingCache.export / import_ and the CLI around them."""

import sqlite3
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sktransfer import CacheError, EmbeddingCache, TextEncoder

TEXTS = ["a fine film", "a dull film", "an odd film"]


@pytest.fixture
def filled(tmp_path):
    cache = EmbeddingCache(tmp_path / "source")
    encoder = TextEncoder(cache=cache).fit(TEXTS[:1])
    return cache, encoder, encoder.transform(TEXTS)


def test_round_trip_serves_the_same_vectors(filled, tmp_path):
    source, encoder, features = filled
    assert source.export(tmp_path / "out.parquet") == len(TEXTS)
    home = EmbeddingCache(tmp_path / "home")
    assert home.import_(tmp_path / "out.parquet") == len(TEXTS)
    assert home.import_(tmp_path / "out.parquet") == 0  # already there: nothing new
    again = TextEncoder(cache=home).fit(TEXTS[:1]).transform(TEXTS)
    assert home.stats.last == {"hits": 3, "misses": 0, "corrupt": 0}
    np.testing.assert_array_equal(again, features)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["fingerprint", "description", "item_key", "vector"]
    assert set(table.column("fingerprint").to_pylist()) == {encoder.identity_.fingerprint}


def test_export_folder_gets_one_part_per_writer_and_fsspec_urls_work(filled, tmp_path):
    source, encoder, _ = filled
    other = EmbeddingCache(tmp_path / "other")
    TextEncoder(cache=other, max_length=64).fit(TEXTS[:1]).transform(TEXTS[:2])
    # Two "workers" export into one dataset on an object store (fsspec's in-memory file system).
    url = f"memory://sktransfer-test-{tmp_path.name}/cache/"
    assert source.export(url) == 3 and other.export(url) == 2
    import fsspec

    fs = fsspec.filesystem("memory")
    assert len(fs.glob(f"{url.removeprefix('memory://')}part-*.parquet")) == 2
    home = EmbeddingCache(tmp_path / "home")
    assert home.import_(url) == 5
    assert sorted(f["entries"] for f in home.info()["fingerprints"]) == [2, 3]
    # One fingerprint only.
    with pytest.raises(ValueError, match="matches 0 fingerprints"):
        other.export(tmp_path / "one.parquet", fingerprint=encoder.identity_.fingerprint[:10])
    assert source.export(tmp_path / "one.parquet", fingerprint=encoder.identity_.fingerprint[:10]) == 3


def test_damaged_rows_are_left_out_of_an_export(filled, tmp_path):
    source, _, _ = filled
    with sqlite3.connect(source.path / "embeddings.sqlite3") as db:
        db.execute("UPDATE embeddings SET crc = crc + 1 WHERE item_key = (SELECT item_key FROM embeddings LIMIT 1)")
    with pytest.warns(UserWarning, match="left out 1 damaged entries"):
        assert source.export(tmp_path / "out.parquet") == 2


def write(path, rows):
    pq.write_table(pa.table(rows), path)


@pytest.mark.parametrize("rows, message", [
    ({"fingerprint": ["f"], "item_key": [b"k"]}, r"not an sktransfer cache export: it has no column\(s\) "
                                                 r"\['description', 'vector'\]"),
    ({"fingerprint": ["f", "f"], "description": ["", ""], "item_key": [b"k", b"l"],
      "vector": [[1.0, 2.0], [1.0]]}, "row 1 holds a 1-d vector where fingerprint f has 2-d ones"),
    ({"fingerprint": ["f", "f"], "description": ["", ""], "item_key": [b"k", None],
      "vector": [[1.0], [1.0]]}, "row 1 has no fingerprint, item_key or vector"),
    ({"fingerprint": ["f"], "description": [""], "item_key": [b"k"], "vector": [[float("nan")]]},
     "row 0 holds a non-finite value"),
])
def test_malformed_exports_are_refused_naming_file_and_row(tmp_path, rows, message):
    write(tmp_path / "bad.parquet", rows)
    with pytest.raises(CacheError, match=message) as info:
        EmbeddingCache(tmp_path / "cache").import_(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(info.value)


def test_import_refuses_other_dimensions_missing_paths_and_read_only(filled, tmp_path):
    source, encoder, _ = filled
    fingerprint = encoder.identity_.fingerprint
    write(tmp_path / "other_dim.parquet", {"fingerprint": [fingerprint], "description": [""], "item_key": [b"k"],
                                           "vector": [[1.0, 2.0]]})
    with pytest.raises(CacheError, match="stores 384-d vectors, not 2-d; this export does not match"):
        source.import_(tmp_path / "other_dim.parquet")
    with pytest.raises(CacheError, match="nothing to import"):
        source.import_(tmp_path / "missing.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match=r"no \*.parquet files"):
        source.import_(tmp_path / "empty")
    with pytest.raises(CacheError, match="read_only=True"):
        EmbeddingCache(source.path, read_only=True).import_(tmp_path / "other_dim.parquet")


def test_cli_export_and_import(filled, tmp_path):
    source, _, _ = filled

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "sktransfer", "cache", *args], capture_output=True, text=True,
                              timeout=300)

    result = cli("export", f"{tmp_path}/dataset/", "--path", str(source.path))
    assert result.returncode == 0 and "exported 3 entries" in result.stdout, result.stderr
    result = cli("import", str(tmp_path / "dataset"), "--path", str(tmp_path / "home"))
    assert result.returncode == 0 and "imported 3 new entries" in result.stdout, result.stderr
    result = cli("import", str(tmp_path / "nothing.parquet"), "--path", str(tmp_path / "home"))
    assert result.returncode == 1 and result.stderr.startswith("sktransfer: error: nothing to import")
