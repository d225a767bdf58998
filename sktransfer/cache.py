"""EmbeddingCache: every distinct input is encoded once, across folds, grid points and processes.

An entry's key has two parts:

* the encoder's **fingerprint**: a hash of everything that changes the vectors (encoder class,
  a content hash of the model's weights and configuration, layer, pooling, preprocessing,
  normalisation, precision, token limit, sktransfer's major version). Parameters that do not
  change the vectors (batch_size, device, num_workers, show_progress) are left out, so changing
  them keeps hitting;
* a **content hash** of the item: a text's bytes; an image file's bytes (not its path: a renamed
  file hits, an edited file misses); a PIL image's or array's pixels.

Storage is one SQLite database per cache folder (``embeddings.sqlite3``) in WAL mode: atomic
transactions, several processes writing at once (``GridSearchCV(n_jobs=...)``), readers never
blocked by a writer, and no pickle anywhere (vectors are raw float32 bytes with a CRC32 each, so
loading a cache never executes code, and a damaged row is detected and re-encoded). An optional
in-memory layer serves repeat lookups within a process.

Faults never produce a wrong vector: a damaged database file, a full disk or a read-only folder
raise `CacheError` (or `CacheCorruptError`) naming the file and the fix; encoders
turn them into a warning and carry on without storing (the features they return are computed,
never read from a damaged file). ``read_only=True`` serves a shipped cache from read-only storage.
Only a write creates the folder: a lookup in a folder deleted underneath, or never written to,
misses and creates nothing. A row of another width than the encoder's (an import nothing could
check) is counted as damaged and re-encoded, like a row whose checksum does not match.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._folders import UnsafeFolderError, check_private_file, private_folder
from ._messages import with_article
from .model_store import sktransfer_home

__all__ = ["CacheCorruptError", "CacheError", "CacheStats", "EmbeddingCache", "default_cache_dir"]


class CacheError(RuntimeError):
    """The embedding cache could not be read or written; the message names the file and the fix."""


class CacheCorruptError(CacheError):
    """The cache's database file is damaged (truncated, overwritten, not a database)."""


_FILES = ("embeddings.sqlite3", "embeddings.sqlite3-wal", "embeddings.sqlite3-shm")

#: Version of the layout below, kept in the database's ``user_version``. Version 2: fingerprint
#: ids come from AUTOINCREMENT and are never reused, so an id that a process still holds after
#: another process cleared the cache can never point at another configuration's entries.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    fingerprint_id INTEGER NOT NULL,
    item_key BLOB NOT NULL,
    vector BLOB NOT NULL,
    crc INTEGER NOT NULL,
    PRIMARY KEY (fingerprint_id, item_key)
) WITHOUT ROWID;
"""
# SQLite limits the number of bound parameters per statement; stay well below every build's limit.
_CHUNK = 900


def default_cache_dir() -> Path:
    """``$SKTRANSFER_CACHE``, else ``<sktransfer home>/cache`` (``~/.cache/sktransfer/cache``)."""
    env = os.environ.get("SKTRANSFER_CACHE")
    return Path(env).expanduser() if env else sktransfer_home() / "cache"


@dataclass
class CacheStats:
    """Hit and miss counts; ``EmbeddingCache.stats`` accumulates, ``last`` is the latest call."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # rows whose checksum or length did not match: re-encoded
    last: dict = field(default_factory=lambda: {"hits": 0, "misses": 0, "corrupt": 0})

    def record(self, hits: int, misses: int, corrupt: int) -> None:
        self.hits += hits
        self.misses += misses
        self.corrupt += corrupt
        self.last = {"hits": hits, "misses": misses, "corrupt": corrupt}


class _MemoryLayer:
    """An LRU of recently used vectors within one process, bounded in bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.entries: OrderedDict = OrderedDict()
        self.used = 0

    def get(self, key):
        return self.entries.get(key)

    def remember(self, key, vector: np.ndarray) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = vector
        self.used += vector.nbytes
        while self.used > self.budget and self.entries:
            _, dropped = self.entries.popitem(last=False)
            self.used -= dropped.nbytes

    def forget(self, fingerprint: str | None = None) -> None:
        """Drop every entry, or those of one fingerprint."""
        if fingerprint is None:
            self.entries.clear()
            self.used = 0
            return
        for key in [k for k in self.entries if k[0] == fingerprint]:
            self.used -= self.entries.pop(key).nbytes


class _Store:
    """The per-process state of one cache folder: connection, memory layers, counters.

    Every ``EmbeddingCache`` of the folder shares the connection and the counters; each memory
    budget has its own layer, so ``EmbeddingCache(path, memory_bytes=0)`` really reads the disk
    even when another instance of the same folder keeps a memory layer.
    """

    def __init__(self, directory: Path, read_only: bool = False):
        self.directory = directory
        self.path = directory / "embeddings.sqlite3"
        self.read_only = read_only
        self._inode = None
        self.memories: dict[int, _MemoryLayer] = {}
        self.stats = CacheStats()
        self.lock = threading.RLock()
        self._connection = None
        self._pid = None
        self._fingerprint_ids: dict[str, int] = {}

    def memory(self, budget: int) -> _MemoryLayer | None:
        if budget <= 0:
            return None
        return self.memories.setdefault(budget, _MemoryLayer(budget))

    def forget(self, fingerprint: str | None = None) -> None:
        for layer in self.memories.values():
            layer.forget(fingerprint)

    # -------------------------------------------------------------- connection
    def connection(self, create: bool = True) -> sqlite3.Connection | None:
        """The open database; ``create=False`` (lookups, listings) gives None where none exists yet.

        Only a write creates the folder and its database: a lookup in a folder that is gone (a
        pickle loaded after its cache was deleted) misses without creating anything.
        """
        # A connection must not cross a fork (reconnect in a child process), nor outlive its file:
        # a database deleted or replaced underneath (the folder removed by hand) is reopened, so
        # writes never go to an unlinked file.
        forked = self._pid != os.getpid()
        if self._connection is None or forked or self._replaced():
            if self._connection is not None and not forked:
                self.forget()  # the file it was read from is gone: so is what we remember of it
            self.close()
            self._fingerprint_ids = {}
            if not create and not self.read_only and not self.path.exists():
                return None
            with self.translated():
                self._connection = self._open()
            self._pid = os.getpid()
        return self._connection

    def _replaced(self) -> bool:
        if self.read_only:
            return False
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            # Someone else's cache may be served read-only, but not one that others can still write.
            if self.directory.exists():
                private_folder(self.directory, "embedding cache folder", create=False, foreign_owner_ok=True)
                check_private_file(self.path, "embedding cache file", foreign_owner_ok=True)
            if not self.path.exists():
                raise CacheError(f"no embedding cache at {self.path} (read_only=True opens an existing cache)")
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size:
                warnings.warn(f"{wal} holds entries a read-only cache cannot see: copy a cache only after every "
                              "process writing to it has finished.", UserWarning, stacklevel=5)
            # immutable: no locks, no -shm file, nothing written (the files may be on read-only media).
            db = sqlite3.connect(self.path.as_uri() + "?immutable=1", uri=True, check_same_thread=False,
                                 isolation_level=None)
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                raise CacheError(f"the embedding cache at {self.path} has an older layout; open it once without "
                                 "read_only=True to rebuild it")
            return db
        try:
            private_folder(self.directory, "embedding cache folder")
            for name in _FILES:
                check_private_file(self.directory / name, "embedding cache file")
        except UnsafeFolderError:
            raise
        except OSError as exc:
            raise CacheError(f"cannot create the embedding cache folder {self.directory} ({exc.strerror}); "
                             "choose a writable folder, or open a shipped cache with read_only=True") from None
        db = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=60000")
        self._ensure_schema(db)
        self._inode = os.stat(self.path).st_ino
        return db

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
        self._connection = None

    @contextlib.contextmanager
    def translated(self):
        """Turn SQLite's errors into a `CacheError` that names the file and the fix."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None

    def error(self, exc: Exception) -> CacheError:
        message = str(exc)
        if any(sign in message for sign in ("not a database", "malformed", "disk image")):
            return CacheCorruptError(
                f"the embedding cache at {self.path} is damaged ({message}). Delete it with `sktransfer cache "
                f"clear --cache {self.directory} --force` (or EmbeddingCache(path).clear(force=True)); its "
                "vectors are encoded again on demand."
            )
        if "full" in message:
            return CacheError(f"the disk holding the embedding cache at {self.path} is full ({message}); free "
                              "space, or limit the cache with max_bytes")
        if "readonly" in message or "read-only" in message or "unable to open" in message:
            return CacheError(f"cannot write the embedding cache at {self.path} ({message}); on read-only storage "
                              "open it with EmbeddingCache(path, read_only=True)")
        return CacheError(f"the embedding cache at {self.path} failed: {message}")

    @staticmethod
    def _ensure_schema(db: sqlite3.Connection) -> None:
        """Create the tables, or rebuild a database of an older layout (one process at a time)."""
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")  # serialises processes that open a new cache together
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                # Older layouts reused fingerprint ids, and every fingerprint they hold predates
                # the encoder identity (no lookup can reach them): start afresh.
                db.execute("DROP TABLE IF EXISTS embeddings")
                db.execute("DROP TABLE IF EXISTS fingerprints")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def fingerprint_id(self, db: sqlite3.Connection, fingerprint: str) -> int | None:
        """The row id of ``fingerprint``, or None. Lookups check each row's width, not this row's."""
        if fingerprint not in self._fingerprint_ids:
            row = db.execute("SELECT id FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()
            if row is None:
                return None
            self._fingerprint_ids[fingerprint] = row[0]
        return self._fingerprint_ids[fingerprint]

    def writing_fingerprint_id(self, db: sqlite3.Connection, fingerprint: str, description: str, dim: int,
                               encoder_width: bool) -> int:
        """The row id of ``fingerprint`` for a write of ``dim``-d vectors, created if absent.

        Called inside the write transaction, and read afresh: another process may have cleared
        the fingerprint since. ``encoder_width``: the vectors come from an encoder, whose width
        is the fingerprint's by definition; a stored width that differs came from an import
        (nothing checked it), so it is corrected and the rows of that width, which no lookup
        serves, are deleted. Otherwise (an import) a differing width raises ``ValueError``.
        """
        row = db.execute("SELECT id, dim FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            now = time.time()
            db.execute(
                "INSERT OR IGNORE INTO fingerprints (fingerprint, description, dim, created, last_used) "
                "VALUES (?, ?, ?, ?, ?)",
                (fingerprint, description, dim, now, now),
            )
            row = db.execute("SELECT id, dim FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()
        fid, stored = row
        if stored != dim:
            if not encoder_width:
                raise ValueError(f"cache fingerprint {fingerprint[:12]} stores {stored}-d vectors, not {dim}-d")
            db.execute("UPDATE fingerprints SET dim = ? WHERE id = ?", (dim, fid))
            if description:
                db.execute("UPDATE fingerprints SET description = ? WHERE id = ?", (description, fid))
            db.execute("DELETE FROM embeddings WHERE fingerprint_id = ? AND length(vector) != ?", (fid, 4 * dim))
        self._fingerprint_ids[fingerprint] = fid
        return fid


class EmbeddingCache:
    """An on-disk cache of embeddings shared by every encoder that is given it.

    Parameters
    ----------
    path : str, os.PathLike or None, default=None
        Folder of the cache. ``None`` uses `default_cache_dir`. Several encoders (with
        different models, layers or settings) can share one folder: entries are keyed by each
        encoder's fingerprint, so they never see each other's vectors. The folder is created
        (owner-only) by the first write, not before.
    memory_bytes : int, default=256 MiB
        Size of the in-process layer that serves repeat lookups without reading the database;
        0 disables it (every lookup reads the database). Instances of one folder with the same
        budget share one layer.
    max_bytes : int or None, default=None
        Size limit of the database. When a write takes it over, whole fingerprints are evicted,
        least recently used first (never the one being written).
    read_only : bool, default=False
        Serve hits from an existing cache without writing anything (misses are encoded and
        returned, not stored), e.g. a pre-computed cache shipped to workers on read-only storage.
        The files must not change while it is open (no process writes to them).

    Attributes
    ----------
    stats : CacheStats
        Hits, misses and corrupt rows in this process, in total and for the latest lookup.

    Notes
    -----
    All ``EmbeddingCache`` objects for one folder in one process share their connection and
    counters (and, for equal ``memory_bytes``, their memory layer), so the copies that ``clone``
    and ``GridSearchCV`` make count together.
    A pickled cache stores only its settings. SQLite's locking needs a local filesystem (not NFS).

    Examples
    --------
    >>> import tempfile
    >>> from sktransfer import EmbeddingCache, TextEncoder
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> encoder = TextEncoder(cache=cache).fit(["a", "b"])
    >>> _ = encoder.transform(["a", "b", "a"])
    >>> cache.stats.last
    {'hits': 0, 'misses': 2, 'corrupt': 0}
    >>> _ = encoder.transform(["b", "a"])
    >>> cache.stats.last
    {'hits': 2, 'misses': 0, 'corrupt': 0}
    """

    _stores: dict = {}
    _stores_lock = threading.Lock()
    _warned_gone: set = set()  # folders whose loss this process has reported

    def __init__(self, path=None, *, memory_bytes: int = 256 * 2**20, max_bytes: int | None = None,
                 read_only: bool = False):
        # Absolute from the start: a relative folder must not change meaning after a chdir.
        self.path = (Path(path).expanduser() if path is not None else default_cache_dir()).absolute()
        self.memory_bytes = int(memory_bytes)
        self.max_bytes = max_bytes
        self.read_only = bool(read_only)

    def __repr__(self):
        return f"EmbeddingCache({str(self.path)!r})"

    def __eq__(self, other):
        return isinstance(other, EmbeddingCache) and self._settings() == other._settings()

    def __hash__(self):
        return hash(self._settings())

    def _settings(self):
        return (str(self.path.resolve()), self.memory_bytes, self.max_bytes, self.read_only)

    def __getstate__(self):
        return {"path": str(self.path), "memory_bytes": self.memory_bytes, "max_bytes": self.max_bytes,
                "read_only": self.read_only, "written": self._database().exists()}

    def __setstate__(self, state):
        self.__init__(state["path"], memory_bytes=state["memory_bytes"], max_bytes=state["max_bytes"],
                      read_only=state.get("read_only", False))
        # A cache that held entries where it was pickled, loaded where its folder is gone (deleted
        # since, or another machine): say so once, rather than silently starting a new one there.
        # A copy of a cache never written to (clone, GridSearchCV) has nothing to lose: no warning.
        if state.get("written", True) and not self.read_only and not self._database().exists():
            folder = str(self.path.resolve())
            with EmbeddingCache._stores_lock:
                first = folder not in EmbeddingCache._warned_gone
                EmbeddingCache._warned_gone.add(folder)
            if first:
                warnings.warn(f"the embedding cache folder {self.path} of this loaded object does not exist here "
                              "(deleted, or another machine): its entries are encoded again, and the folder is "
                              "created when something is written.", UserWarning, stacklevel=2)

    def _database(self) -> Path:
        return self.path / _FILES[0]

    @property
    def _store(self) -> _Store:
        key = (str(self.path.resolve()), self.read_only)
        with EmbeddingCache._stores_lock:
            store = EmbeddingCache._stores.get(key)
            if store is None:
                store = EmbeddingCache._stores[key] = _Store(self.path.resolve(), self.read_only)
            return store

    @property
    def stats(self) -> CacheStats:
        return self._store.stats

    # -------------------------------------------------------------- lookups and writes
    def get(self, fingerprint: str, keys: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Look up ``keys`` under ``fingerprint``.

        Returns
        -------
        vectors : ndarray of shape (len(keys), dim), float32
            Rows of the hits; other rows are undefined.
        found : ndarray of shape (len(keys),), bool
            Which keys hit.
        """
        store = self._store
        vectors = np.empty((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        corrupt = 0
        memory = store.memory(self.memory_bytes)
        with store.lock, store.translated():
            pending = {}
            for i, key in enumerate(keys):
                cached = memory.get((fingerprint, key)) if memory is not None else None
                if cached is not None:
                    vectors[i] = cached
                    found[i] = True
                else:
                    pending.setdefault(key, []).append(i)
            db = store.connection(create=False) if pending else None
            fid = store.fingerprint_id(db, fingerprint) if db is not None else None
            if fid is not None:
                wanted = list(pending)
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(
                        f"SELECT item_key, vector, crc FROM embeddings WHERE fingerprint_id = ? AND item_key IN ({marks})",
                        (fid, *chunk),
                    ).fetchall()
                    for key, blob, crc in rows:
                        # A damaged row, or one of another width (an import that nothing could check
                        # against the encoder): a miss, which the write that follows replaces.
                        if len(blob) != 4 * dim or zlib.crc32(blob) != crc:
                            corrupt += 1
                            continue
                        vector = np.frombuffer(blob, dtype=np.float32)
                        if memory is not None:
                            memory.remember((fingerprint, bytes(key)), vector)
                        for i in pending[bytes(key)]:
                            vectors[i] = vector
                            found[i] = True
                if not store.read_only:
                    db.execute("UPDATE fingerprints SET last_used = ? WHERE id = ?", (time.time(), fid))
        hits = int(found.sum())
        store.stats.record(hits, len(keys) - hits, corrupt)
        return vectors, found

    def put(self, fingerprint: str, keys: list[bytes], vectors: np.ndarray, description: str = "") -> None:
        """Store ``vectors`` (float32 rows) under ``fingerprint``, one transaction per call.

        The caller is the encoder of ``fingerprint``: the width of ``vectors`` is the width of
        that fingerprint, and stored rows of another width (imported ones) are deleted.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(keys) or self.read_only:
            return
        self._write(fingerprint, keys, vectors, description, encoder_width=True)
        if self.max_bytes is not None:
            self._evict(keep=fingerprint)

    def _write(self, fingerprint: str, keys: list[bytes], vectors: np.ndarray, description: str,
               encoder_width: bool) -> int:
        """Write rows in one transaction; rows written.

        ``encoder_width``: an encoder's vectors, which replace the rows of their keys; otherwise an
        import's, which never replace a row and must have the width already stored.
        """
        verb = "INSERT OR REPLACE" if encoder_width else "INSERT OR IGNORE"
        store = self._store
        memory = store.memory(self.memory_bytes)
        with store.lock, store.translated():
            blobs = [vector.tobytes() for vector in vectors]
            db = store.connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                # The id is read inside the write lock: a clear by another process since our last
                # write removed the fingerprint, and the rows must go under its new row.
                fid = store.writing_fingerprint_id(db, fingerprint, description, vectors.shape[1], encoder_width)
                rows = [(fid, key, blob, zlib.crc32(blob)) for key, blob in zip(keys, blobs)]
                before = db.total_changes
                db.executemany(f"{verb} INTO embeddings VALUES (?, ?, ?, ?)", rows)
                written = db.total_changes - before
                db.execute("UPDATE fingerprints SET last_used = ? WHERE id = ?", (time.time(), fid))
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): rolling back again
                # would raise "no transaction is active" and hide the real cause.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            if memory is not None and encoder_width:
                for key, vector in zip(keys, vectors):
                    memory.remember((fingerprint, key), vector.copy())
        return written

    # -------------------------------------------------------------- moving entries between caches
    def export(self, path, *, fingerprint: str | None = None) -> int:
        """Write the entries to a Parquet file, for another machine's cache to `import_`.

        Parameters
        ----------
        path : str or os.PathLike
            A local path or an fsspec URL (``s3://bucket/cache/``, ``gs://...``, ``hdfs://...``,
            ``memory://...``; remote file systems need their fsspec package, e.g. ``s3fs``). A
            path that ends with ``/`` or is an existing folder receives a new file
            ``part-<host>-<pid>-<random>.parquet``, so that many workers can export into one
            Parquet dataset without overwriting each other; any other path is the file itself.
        fingerprint : str or None, default=None
            Only this fingerprint's entries (a unique prefix is enough); None: all of them.

        Returns
        -------
        n_exported : int
            Number of entries written. Rows whose checksum does not match are left out (they
            would be re-encoded here too), with a warning.

        Notes
        -----
        Columns: ``fingerprint`` (string), ``description`` (string), ``item_key`` (binary: the
        item's content key) and ``vector`` (list of float32). Nothing in the file is code: reading
        it never executes anything.
        """
        pa, pq = _pyarrow("EmbeddingCache.export")
        fs, target = _file_system(path)
        if str(path).endswith("/") or fs.isdir(target):
            fs.makedirs(target, exist_ok=True)
            target = f"{target.rstrip('/')}/part-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        store = self._store
        exported = damaged = 0
        with store.lock, store.translated():
            db = store.connection(create=False)  # a folder never written to exports no entries
            query = "SELECT id, fingerprint, description, dim FROM fingerprints"
            selected = [] if db is None else db.execute(query + (" WHERE fingerprint LIKE ?" if fingerprint else ""),
                                                        (fingerprint + "%",) if fingerprint else ()).fetchall()
            if fingerprint and len(selected) != 1:
                raise ValueError(f"fingerprint prefix {fingerprint!r} matches {len(selected)} fingerprints; "
                                 "give one that `sktransfer cache info` lists")
            if db is not None:
                db.execute("BEGIN")  # one snapshot: writers in other processes do not tear the export
            try:
                with fs.open(target, "wb") as handle, pq.ParquetWriter(handle, _export_schema()) as writer:
                    for fid, fp, description, dim in selected:
                        cursor = db.execute("SELECT item_key, vector, crc FROM embeddings WHERE fingerprint_id = ?",
                                            (fid,))
                        while rows := cursor.fetchmany(_EXPORT_ROWS):
                            good = [(bytes(key), blob) for key, blob, crc in rows
                                    if len(blob) == 4 * dim and zlib.crc32(blob) == crc]
                            damaged += len(rows) - len(good)
                            if not good:
                                continue
                            values = np.frombuffer(b"".join(blob for _, blob in good), dtype=np.float32)
                            offsets = np.arange(len(good) + 1, dtype=np.int32) * dim
                            writer.write_table(pa.table({
                                "fingerprint": pa.array([fp] * len(good), pa.string()),
                                "description": pa.array([description] * len(good), pa.string()),
                                "item_key": pa.array([key for key, _ in good], pa.binary()),
                                "vector": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                            }, schema=_export_schema()))
                            exported += len(good)
            finally:
                if db is not None:
                    db.execute("COMMIT")
        if damaged:
            warnings.warn(f"EmbeddingCache.export left out {damaged} damaged entries of {self.path} (their checksum "
                          "did not match); they are encoded again where they are needed.", UserWarning, stacklevel=2)
        return exported

    def import_(self, path) -> int:
        """Merge entries that `export` wrote (a file, or a folder of them) into this cache.

        Parameters
        ----------
        path : str or os.PathLike
            A Parquet file or a folder (a Parquet dataset: every ``*.parquet`` under it), local
            or an fsspec URL as for `export`.

        Returns
        -------
        n_imported : int
            Number of entries added. Keys this cache already holds under the same fingerprint
            are kept as they are (equal fingerprints mean equal vectors).

        Raises
        ------
        CacheError
            The file is not an export (missing columns, or a column of another type: vectors
            that are not lists of floats, keys that are not binary), a row is malformed (no
            key, a vector of another length than its fingerprint's others or than the vectors
            this cache holds for it, a non-finite value), or this cache is read-only. The
            message names the file and the row; the valid rows read before it are kept.

        Notes
        -----
        Import only exports you trust, as you would a cache folder: a vector is served to any
        encoder whose fingerprint matches, and its values cannot be checked without encoding
        the item again (the checksum guards stored bytes; an import computes it over what the
        file holds). Nor can the width of a fingerprint the cache does not hold yet: rows of
        a wrong width are then imported, and every lookup counts them as corrupt and encodes
        their items again, never serving them, until the encoder's first write replaces them.
        """
        if self.read_only:
            raise CacheError(f"the embedding cache at {self.path} was opened with read_only=True; import into a "
                             "writable cache")
        _, pq = _pyarrow("EmbeddingCache.import_")
        fs, target = _file_system(path)
        if fs.isdir(target):
            files = sorted(fs.glob(f"{target.rstrip('/')}/**/*.parquet"))
            if not files:
                raise CacheError(f"no *.parquet files under {path}")
        elif fs.exists(target):
            files = [target]
        else:
            raise CacheError(f"nothing to import at {path}: no such file or folder")
        imported = 0
        for file in files:
            with fs.open(file, "rb") as handle:
                for fp, description, keys, vectors in _exported_rows(pq, handle, file):
                    try:
                        imported += self._write(fp, keys, vectors, description, encoder_width=False)
                    except ValueError as exc:  # the fingerprint already holds vectors of another width
                        raise CacheError(
                            f"{file}: {exc}; this export does not match the cache at {self.path}. If the cache's "
                            f"own vectors are the wrong ones (an earlier import), delete them with `sktransfer "
                            f"cache clear --fingerprint {fp[:12]} --cache {self.path}` and import again"
                        ) from None
        return imported

    # -------------------------------------------------------------- management
    def info(self) -> dict:
        """Entries, bytes and per-fingerprint counts of the cache.

        Returns
        -------
        info : dict
            ``{"path", "entries", "bytes", "fingerprints": [{"fingerprint", "description",
            "dim", "entries", "bytes", "last_used"}, ...]}``, most recently used first.
        """
        store = self._store
        with store.lock, store.translated():
            db = store.connection(create=False)  # looking creates nothing
            rows = [] if db is None else db.execute(
                "SELECT f.fingerprint, f.description, f.dim, f.last_used, count(e.item_key), "
                "coalesce(sum(length(e.vector) + length(e.item_key)), 0) FROM fingerprints f "
                "LEFT JOIN embeddings e ON e.fingerprint_id = f.id GROUP BY f.id ORDER BY f.last_used DESC"
            ).fetchall()
        fingerprints = [
            {"fingerprint": fp, "description": desc, "dim": dim, "entries": n, "bytes": size, "last_used": used}
            for fp, desc, dim, used, n, size in rows
        ]
        return {
            "path": str(store.path),
            "entries": sum(f["entries"] for f in fingerprints),
            "bytes": self._file_bytes(),
            "fingerprints": fingerprints,
        }

    def _file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._store.directory.glob("embeddings.sqlite3*") if p.exists())

    def clear(self, fingerprint: str | None = None, *, force: bool = False) -> int:
        """Delete every entry, or those of one fingerprint (a unique prefix is enough).

        Parameters
        ----------
        fingerprint : str or None, default=None
            Only this fingerprint's entries (a unique prefix is enough); None: all of them.
        force : bool, default=False
            Delete the database files whatever state they are in: the way out of a damaged cache
            (`CacheCorruptError`). Other processes using the cache then start a new file.

        Returns
        -------
        n_deleted : int
            Number of entries removed (0 when ``force`` removed a file that could not be read).
        """
        if self.read_only:
            raise CacheError(f"the embedding cache at {self.path} was opened with read_only=True; it cannot be cleared")
        store = self._store
        if force:
            if fingerprint is not None:
                raise ValueError("force=True deletes the whole database; it takes no fingerprint")
            with store.lock:
                try:
                    deleted = self.info()["entries"]
                except CacheError:
                    deleted = 0
                store.close()
                for name in _FILES:
                    with contextlib.suppress(FileNotFoundError):
                        (store.directory / name).unlink()
                store.forget()
                store._fingerprint_ids = {}
            return deleted
        with store.lock, store.translated():
            db = store.connection(create=False)
            if db is None:
                return 0  # nothing was ever written here
            if fingerprint is None:
                ids = [row[0] for row in db.execute("SELECT id FROM fingerprints")]
            else:
                ids = [row[0] for row in db.execute("SELECT id FROM fingerprints WHERE fingerprint LIKE ?", (fingerprint + "%",))]
                if len(ids) > 1:
                    raise ValueError(f"fingerprint prefix {fingerprint!r} matches {len(ids)} fingerprints; give more characters")
            deleted = self._delete(db, ids)
            store.forget()
            store._fingerprint_ids = {}
            db.execute("VACUUM")
        return deleted

    @staticmethod
    def _delete(db, ids) -> int:
        deleted = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for fid in ids:
                deleted += db.execute("DELETE FROM embeddings WHERE fingerprint_id = ?", (fid,)).rowcount
                db.execute("DELETE FROM fingerprints WHERE id = ?", (fid,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return deleted

    def _evict(self, keep: str) -> None:
        store = self._store
        with store.lock, store.translated():
            db = store.connection()
            page_size = db.execute("PRAGMA page_size").fetchone()[0]

            def used():
                pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
                return pages * page_size

            if used() <= self.max_bytes:
                return
            candidates = db.execute(
                "SELECT id, fingerprint FROM fingerprints WHERE fingerprint != ? ORDER BY last_used ASC", (keep,)
            ).fetchall()
            for fid, fingerprint in candidates:
                self._delete(db, [fid])
                store._fingerprint_ids.pop(fingerprint, None)
                store.forget(fingerprint)
                if used() <= self.max_bytes:
                    return
            warnings.warn(
                f"EmbeddingCache at {self.path} holds {used():,} bytes for the current encoder alone, over "
                f"max_bytes={self.max_bytes:,}; nothing older is left to evict.",
                UserWarning,
                stacklevel=3,
            )


_EXPORT_ROWS = 10_000  # rows per Parquet row group, and per transaction on import
_EXPORT_COLUMNS = ("fingerprint", "description", "item_key", "vector")


def _export_schema():
    import pyarrow as pa

    return pa.schema([("fingerprint", pa.string()), ("description", pa.string()), ("item_key", pa.binary()),
                      ("vector", pa.list_(pa.float32()))])


def _pyarrow(what: str):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{what} writes and reads Parquet, which needs pyarrow: pip install pyarrow "
                          "(or \"sktransfer[cli]\")") from None
    return pa, pq


def _file_system(path):
    """fsspec's file system for a local path or a URL (s3://, gs://, hdfs://, memory://, ...)."""
    import fsspec  # a dependency of huggingface_hub, so always present with sentence-transformers

    return fsspec.core.url_to_fs(os.fspath(path))


def _check_export_types(schema, file) -> None:
    """Refuse columns of other types before any row is read: numbers written as strings or
    integers would otherwise be parsed into vectors, and text keys would fail mid-import."""
    import pyarrow as pa

    def is_list_of_floats(t):
        return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
            pa.types.is_floating(t.value_type)

    expected = {
        "fingerprint": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        "description": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)),
        "item_key": ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)
                     or pa.types.is_fixed_size_binary(t)),
        "vector": ("a list of floats", is_list_of_floats),
    }
    for name, (wanted, accepts) in expected.items():
        found = schema.field(name).type
        if not accepts(found):
            raise CacheError(f"{file} is not an sktransfer cache export: column {name!r} holds {found}, not {wanted}")


def _exported_rows(pq, handle, file):
    """Yield ``(fingerprint, description, keys, vectors)`` groups of an export file, validated."""
    parquet = pq.ParquetFile(handle)
    missing = [c for c in _EXPORT_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise CacheError(f"{file} is not an sktransfer cache export: it has no column(s) {missing}")
    _check_export_types(parquet.schema_arrow, file)
    first_row = 0
    for batch in parquet.iter_batches(batch_size=_EXPORT_ROWS, columns=list(_EXPORT_COLUMNS)):
        columns = batch.to_pydict()
        lengths = [len(v) if v is not None else None for v in columns["vector"]]
        groups: dict = {}
        for i, (fp, key, length) in enumerate(zip(columns["fingerprint"], columns["item_key"], lengths)):
            if fp is None or key is None or length is None:
                raise CacheError(f"{file}: row {first_row + i} has no fingerprint, item_key or vector")
            groups.setdefault(fp, []).append(i)
        for fp, rows in groups.items():
            dims = {lengths[i] for i in rows}
            if len(dims) != 1 or 0 in dims:
                bad = next(i for i in rows if lengths[i] != lengths[rows[0]] or not lengths[i])
                width = with_article(f"{lengths[bad]}-d")
                raise CacheError(f"{file}: row {first_row + bad} holds {width} vector where fingerprint "
                                 f"{fp[:12]} has {lengths[rows[0]]}-d ones")
            with np.errstate(over="ignore"):  # a float64 too large for float32 is refused just below
                vectors = np.asarray([columns["vector"][i] for i in rows], dtype=np.float32)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                raise CacheError(f"{file}: row {first_row + rows[int(np.argmin(finite))]} holds a non-finite value")
            yield fp, columns["description"][rows[0]] or "", [bytes(columns["item_key"][i]) for i in rows], vectors
        first_row += batch.num_rows


def forget_process_state(path) -> None:
    """Drop this process's connection, memory layers and counters for the cache folder ``path``.

    The next ``EmbeddingCache(path)`` starts as a fresh process would (benchmarks and tests use it).
    """
    folder = str(Path(path).expanduser().absolute().resolve())
    with EmbeddingCache._stores_lock:
        for key in [key for key in EmbeddingCache._stores if key[0] == folder]:
            EmbeddingCache._stores.pop(key).close()


def as_cache(cache) -> EmbeddingCache | None:
    """Turn the ``cache`` parameter of an encoder into an `EmbeddingCache` (or None)."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, a folder path or an EmbeddingCache, got {type(cache).__name__}")
