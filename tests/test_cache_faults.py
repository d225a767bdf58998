"""Cache faults with real processes: the cache never serves or keeps a wrong vector."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sktransfer import EmbeddingCache, TextEncoder

FIRST = [f"the first batch of reviews, number {i}" for i in range(4)]
LATER = [f"a later review, written after the clear, number {i}" for i in range(4)]


def wait_for(path, process, seconds=300):
    deadline = time.time() + seconds
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.communicate()


def test_clear_while_another_process_encodes_never_crosses_configurations(tmp_path):
    """Process W encodes with one configuration, this process clears the cache and encodes with
    another, then W writes again: before fingerprint ids were never reused, W's later vectors
    landed under the other configuration's id (and the other's were served to W's)."""
    path = tmp_path / "cache"
    started, go, done = tmp_path / "started", tmp_path / "go", tmp_path / "done"
    script = textwrap.dedent(
        f"""
        import pathlib, time
        from sktransfer import TextEncoder
        encoder = TextEncoder(cache={str(path)!r}, device="cpu").fit(["x"])
        encoder.transform({FIRST!r})
        pathlib.Path({str(started)!r}).write_text("")
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.05)
        encoder.transform({LATER!r})  # still holds the fingerprint id it had before the clear
        pathlib.Path({str(done)!r}).write_text("")
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(started, writer)
    cache = EmbeddingCache(path, memory_bytes=0)
    assert cache.clear() == len(FIRST)
    other = TextEncoder(cache=cache, device="cpu", max_length=8).fit(["x"])  # another configuration
    other.transform(FIRST)
    go.write_text("")
    wait_for(done, writer)
    assert writer.wait() == 0, writer.communicate()

    own = TextEncoder(device="cpu", max_length=8).fit(["x"]).transform(LATER)
    served = other.transform(LATER)  # W's vectors must not be served to this configuration
    assert cache.stats.last["hits"] == 0
    np.testing.assert_allclose(served, own, atol=1e-6)
    writer_config = TextEncoder(cache=cache, device="cpu").fit(["x"])
    hit = writer_config.transform(LATER)  # W's vectors are where W's configuration finds them
    assert cache.stats.last["hits"] == len(LATER)
    np.testing.assert_allclose(hit, TextEncoder(device="cpu").fit(["x"]).transform(LATER), atol=1e-6)
    # Every stored row belongs to a listed fingerprint, so info() shows it and clear() removes it.
    import sqlite3

    with sqlite3.connect(path / "embeddings.sqlite3") as db:
        stored = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert cache.info()["entries"] == stored == 3 * len(LATER)


def test_a_cache_of_the_old_layout_is_rebuilt(tmp_path):
    import sqlite3

    path = tmp_path / "cache"
    path.mkdir()
    with sqlite3.connect(path / "embeddings.sqlite3") as db:  # the layout that reused ids
        db.execute("CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, "
                   "description TEXT NOT NULL, dim INTEGER NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL)")
        db.execute("CREATE TABLE embeddings (fingerprint_id INTEGER NOT NULL, item_key BLOB NOT NULL, "
                   "vector BLOB NOT NULL, crc INTEGER NOT NULL, PRIMARY KEY (fingerprint_id, item_key)) WITHOUT ROWID")
        db.execute("INSERT INTO fingerprints VALUES (1, 'old', '', 384, 0, 0)")
    cache = EmbeddingCache(path)
    assert cache.info()["entries"] == 0 and cache.info()["fingerprints"] == []
    TextEncoder(cache=cache).fit(["x"]).transform(["a film"])
    with sqlite3.connect(path / "embeddings.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'fingerprints'").fetchone()[0]
    assert "AUTOINCREMENT" in sql


@pytest.mark.parametrize("n_writers", [2])
def test_processes_opening_a_new_cache_together_agree_on_its_layout(tmp_path, n_writers):
    path = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import sys
        from sktransfer import EmbeddingCache
        import numpy as np
        cache = EmbeddingCache({str(path)!r})
        cache.put("fp" + sys.argv[1], [b"k"], np.ones((1, 3), dtype=np.float32))
        """
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(i)], stderr=subprocess.PIPE) for i in range(n_writers)]
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read().decode()[-2000:]
    assert EmbeddingCache(path).info()["entries"] == n_writers
