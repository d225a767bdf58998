"""Cache faults with real processes: the cache never serves or keeps a wrong vector.

Another process runs only where one is the point (a concurrent writer, processes racing to create
a cache, a fresh process reading what was written). A cache folder this process has never opened
starts from fresh process state, so everything else runs here, on such a folder.
"""

import gc
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

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


@pytest.fixture(scope="module")
def written_cache(tmp_path_factory):
    """A cache of FIRST filled by a separate process, which closes it cleanly (no WAL left behind).

    Tests take a copy (``copy_of``): one process start for all of them.
    """
    path = tmp_path_factory.mktemp("written") / "cache"
    write_cache(path, FIRST)
    return path


def copy_of(written, path):
    shutil.copytree(written, path)
    return path


def write_cache(path, texts):
    script = f"from sktransfer import TextEncoder\nTextEncoder(cache={str(path)!r}, device='cpu').fit(['x']).transform({texts!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def encode_through(path, texts, **cache_params):
    """Encode ``texts`` through a cache of ``path`` here; returns (features, its stats, every warning's text)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = EmbeddingCache(path, **cache_params)
        out = TextEncoder(cache=cache, device="cpu").fit(["x"]).transform(texts)
    return out, cache.stats.last, " | ".join(str(w.message) for w in caught)


def run_encoder(path, texts, out, **cache_params):
    """Encode ``texts`` through the cache in a fresh process; returns (features, its stats as printed)."""
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
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out), result.stdout


def cli(*args):
    """``sktransfer ARGS`` in this process (tests/test_cache.py and test_cli.py run the real entry point)."""
    from test_docs import sktransfer_in_process

    return sktransfer_in_process(list(args), {})


@pytest.mark.parametrize("damage", ["zeroed header", "truncated", "garbage"])
def test_a_damaged_database_is_named_and_recoverable(written_cache, tmp_path, damage):
    path = copy_of(written_cache, tmp_path / "cache")
    database = path / "embeddings.sqlite3"
    data = database.read_bytes()
    damaged = {"zeroed header": b"\0" * 100 + data[100:], "truncated": data[:50],
               "garbage": b"this is not a database file" * 100}[damage]
    database.write_bytes(damaged)
    reference = TextEncoder(device="cpu").fit(["x"]).transform(FIRST)
    out, _, warned = encode_through(path, FIRST)
    np.testing.assert_allclose(out, reference, atol=1e-6)  # encoded, never read from the damaged file
    assert f"the embedding cache at {database} is damaged" in warned and "encoding without the cache" in warned
    for command in (["info"], ["clear"]):
        shown = cli("cache", *command, "--path", str(path))
        assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
        assert str(database) in shown.stderr and f"sktransfer cache clear --cache {path} --force" in shown.stderr
    assert cli("cache", "clear", "--path", str(path), "--force").returncode == 0
    if damage != "zeroed header":
        return  # recovery is the same whatever the damage: checked once
    _, stats, _ = encode_through(path, FIRST)  # usable again: stored, and a fresh process reads it back
    assert stats["misses"] == 4
    out, stats = run_encoder(path, FIRST, tmp_path / "out.npy")
    assert "'hits': 4" in stats
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_a_full_disk_keeps_the_features_and_says_why_they_were_not_stored(tmp_path, capfd):
    # A database that may not grow fails exactly as a full disk does (SQLITE_FULL).
    many = [f"a new review that needs room on disk, number {i}" for i in range(200)]
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = TextEncoder(cache=cache, device="cpu").fit(["x"])
    encoder.transform(FIRST)
    db = cache._store.connection()
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")  # no room left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = encoder.transform(many)
    warned = " | ".join(str(w.message) for w in caught)
    assert "is full (database or disk is full)" in warned and "returned but not stored" in warned
    assert "cannot rollback" not in warned + "".join(capfd.readouterr())
    assert cache.info()["entries"] == len(FIRST)  # nothing half-written
    np.testing.assert_allclose(out, TextEncoder(device="cpu").fit(["x"]).transform(many), atol=1e-5)


def test_a_read_only_cache_serves_hits_and_writes_nothing(written_cache, tmp_path):
    path = copy_of(written_cache, tmp_path / "cache")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()}
    out, stats, warned = encode_through(path, FIRST + LATER, read_only=True)
    assert (stats["hits"], stats["misses"]) == (4, 4), (stats, warned)
    np.testing.assert_allclose(out, TextEncoder(device="cpu").fit(["x"]).transform(FIRST + LATER), atol=1e-6)
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()} == before
    with pytest.raises(Exception, match="read_only=True; it cannot be cleared"):
        EmbeddingCache(path, read_only=True).clear()
    _, _, warned = encode_through(tmp_path / "absent", FIRST, read_only=True)
    assert "no embedding cache at" in warned and "encoding without the cache" in warned


def test_a_cache_folder_deleted_underneath_is_recreated(tmp_path):
    folder = tmp_path / "cache"
    cache = EmbeddingCache(folder)
    encoder = TextEncoder(cache=cache, device="cpu").fit(["x"])
    encoder.transform(FIRST)
    shutil.rmtree(folder)  # the folder goes while the encoder holds the cache
    encoder.transform(LATER)
    info = cache.info()
    encoder.transform(LATER)
    assert (info["entries"], info["bytes"] > 0, cache.stats.last["hits"]) == (len(LATER), True, len(LATER))
    assert (folder / "embeddings.sqlite3").exists()  # a real file, not an unlinked one


def test_embed_with_a_damaged_cache_warns_and_writes_the_features(written_cache, tmp_path):
    path = copy_of(written_cache, tmp_path / "cache")
    (path / "embeddings.sqlite3").write_bytes(b"\0" * 4096)
    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(FIRST) + "\n")
    result = cli("embed", str(listing), "-o", str(tmp_path / "f.npy"), "--cache", str(path), "--quiet")
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
        gc.collect()  # the test's caches, and with them their open files on the mount (umount: busy)
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], check=False)  # never leave a mount behind


def test_a_cache_on_read_only_storage_is_named_or_served(read_only_storage, written_cache, tmp_path):
    mount, remount_read_only = read_only_storage
    path = copy_of(written_cache, mount / "cache")
    remount_read_only()
    out, _, warned = encode_through(path, FIRST)  # opened writable, as by default
    np.testing.assert_allclose(out, TextEncoder(device="cpu").fit(["x"]).transform(FIRST), atol=1e-6)
    assert f"cannot write the embedding cache at {path / 'embeddings.sqlite3'}" in warned
    assert "read_only=True" in warned and "encoding without the cache" in warned
    _, stats = run_encoder(path, FIRST, tmp_path / "out.npy", read_only=True)  # a process that opens it read-only
    assert "'hits': 4, 'misses': 0" in stats
