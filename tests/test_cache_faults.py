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


def write_cache(path, texts):
    """Fill a cache from a separate process, which closes it cleanly (no WAL left behind)."""
    script = f"from sktransfer import TextEncoder\nTextEncoder(cache={str(path)!r}, device='cpu').fit(['x']).transform({texts!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def run_encoder(path, texts, out=None, **cache_params):
    """Encode ``texts`` through the cache in a fresh process; returns (features, stdout, stderr)."""
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from sktransfer import EmbeddingCache, TextEncoder
        cache = EmbeddingCache({str(path)!r}, **{cache_params!r})
        out = TextEncoder(cache=cache, device="cpu").fit(["x"]).transform({texts!r})
        np.save(sys.argv[1], out)
        print(cache.stats.last)
        """
    )
    target = out or path.parent / "out.npy"
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(target), result.stdout, result.stderr


def cli(*args):
    """``sktransfer cache ARGS`` in this process (tests/test_cache.py runs the real entry point)."""
    from test_docs import sktransfer_in_process

    return sktransfer_in_process(["cache", *args], {})


@pytest.mark.parametrize("damage", ["zeroed header", "truncated", "garbage"])
def test_a_damaged_database_is_named_and_recoverable(tmp_path, damage):
    path = tmp_path / "cache"
    write_cache(path, FIRST)
    database = path / "embeddings.sqlite3"
    data = database.read_bytes()
    damaged = {"zeroed header": b"\0" * 100 + data[100:], "truncated": data[:50],
               "garbage": b"this is not a database file" * 100}[damage]
    database.write_bytes(damaged)
    reference = TextEncoder(device="cpu").fit(["x"]).transform(FIRST)
    out, _, stderr = run_encoder(path, FIRST)
    np.testing.assert_allclose(out, reference, atol=1e-6)  # encoded, never read from the damaged file
    assert f"the embedding cache at {database} is damaged" in stderr and "encoding without the cache" in stderr
    for command in (["info"], ["clear"]):
        shown = cli(*command, "--path", str(path))
        assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
        assert str(database) in shown.stderr and f"sktransfer cache clear --cache {path} --force" in shown.stderr
    assert cli("clear", "--path", str(path), "--force").returncode == 0
    if damage != "zeroed header":
        return  # recovery is the same whatever the damage: checked once
    write_cache(path, FIRST)  # usable again
    out, stats, _ = run_encoder(path, FIRST)
    assert "'hits': 4" in stats


def run_script(body, *args):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(body), *map(str, args)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_full_disk_keeps_the_features_and_says_why_they_were_not_stored(tmp_path):
    # A database that may not grow fails exactly as a full disk does (SQLITE_FULL).
    many = [f"a new review that needs room on disk, number {i}" for i in range(200)]
    result = run_script(
        f"""
        import sys, warnings, numpy as np
        from sktransfer import EmbeddingCache, TextEncoder
        cache = EmbeddingCache(sys.argv[1])
        encoder = TextEncoder(cache=cache, device="cpu").fit(["x"])
        encoder.transform({FIRST!r})
        db = cache._store.connection()
        db.execute(f"PRAGMA max_page_count = {{db.execute('PRAGMA page_count').fetchone()[0]}}")  # no room left
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = encoder.transform({many!r})
        print(" | ".join(str(w.message) for w in caught))
        np.save(sys.argv[2], out)
        print("entries", cache.info()["entries"])
        """,
        tmp_path / "cache", tmp_path / "out.npy",
    )
    assert "is full (database or disk is full)" in result.stdout and "returned but not stored" in result.stdout
    assert "cannot rollback" not in result.stdout + result.stderr
    assert f"entries {len(FIRST)}" in result.stdout  # nothing half-written
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), TextEncoder(device="cpu").fit(["x"]).transform(many),
                               atol=1e-5)


def test_a_read_only_cache_serves_hits_and_writes_nothing(tmp_path):
    path = tmp_path / "cache"
    write_cache(path, FIRST)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()}
    out, stats, stderr = run_encoder(path, FIRST + LATER, read_only=True)
    assert "'hits': 4, 'misses': 4" in stats, stats + stderr
    np.testing.assert_allclose(out, TextEncoder(device="cpu").fit(["x"]).transform(FIRST + LATER), atol=1e-6)
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()} == before
    with pytest.raises(Exception, match="read_only=True; it cannot be cleared"):
        EmbeddingCache(path, read_only=True).clear()
    _, _, stderr = run_encoder(tmp_path / "absent", FIRST, read_only=True)
    assert "no embedding cache at" in stderr and "encoding without the cache" in stderr


def test_a_cache_folder_deleted_underneath_is_recreated(tmp_path):
    result = run_script(
        f"""
        import shutil, sys
        from sktransfer import EmbeddingCache, TextEncoder
        cache = EmbeddingCache(sys.argv[1])
        encoder = TextEncoder(cache=cache, device="cpu").fit(["x"])
        encoder.transform({FIRST!r})
        shutil.rmtree(sys.argv[1])  # the folder goes while the encoder holds the cache
        encoder.transform({LATER!r})
        info = cache.info()
        encoder.transform({LATER!r})
        print(info["entries"], info["bytes"] > 0, cache.stats.last["hits"])
        """,
        tmp_path / "cache",
    )
    assert result.stdout.split() == [str(len(LATER)), "True", str(len(LATER))]  # a real file, not an unlinked one
    assert (tmp_path / "cache" / "embeddings.sqlite3").exists()


def test_embed_with_a_damaged_cache_warns_and_writes_the_features(tmp_path):
    path = tmp_path / "cache"
    write_cache(path, FIRST)
    (path / "embeddings.sqlite3").write_bytes(b"\0" * 4096)
    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(FIRST) + "\n")
    result = subprocess.run([sys.executable, "-m", "sktransfer", "embed", str(listing), "-o", str(tmp_path / "f.npy"),
                             "--cache", str(path), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "sktransfer: warning:" in result.stderr and "is damaged" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "f.npy"), TextEncoder(device="cpu").fit(["x"]).transform(FIRST),
                               atol=1e-6)


@pytest.fixture
def read_only_storage(tmp_path):
    """A small tmpfs that the test can remount read-only (skips where mounting is not allowed)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (the check of real read-only storage)")

    def remount_read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    try:
        yield mount, remount_read_only
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_cache_on_read_only_storage_is_named_or_served(read_only_storage, tmp_path):
    mount, remount_read_only = read_only_storage
    path = mount / "cache"
    write_cache(path, FIRST)
    remount_read_only()
    out, _, stderr = run_encoder(path, FIRST, out=tmp_path / "out.npy")  # opened writable, as by default
    np.testing.assert_allclose(out, TextEncoder(device="cpu").fit(["x"]).transform(FIRST), atol=1e-6)
    assert f"cannot write the embedding cache at {path / 'embeddings.sqlite3'}" in stderr
    assert "read_only=True" in stderr and "encoding without the cache" in stderr
    _, stats, _ = run_encoder(path, FIRST, out=tmp_path / "out.npy", read_only=True)
    assert "'hits': 4, 'misses': 0" in stats
