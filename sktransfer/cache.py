"""EmbeddingCache: every distinct input is encoded once, across folds, grid points and processes.

Entries are keyed by the encoder's fingerprint and the item's content hash, in one SQLite database
per folder; faults never serve a wrong vector (docs/cache.md describes keys, storage and faults).
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
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._folders import UnsafeFolderError, check_private_file, private_folder
from ._messages import flags_on, with_article
from ._runtime import optional_import
from .model_store import home_folder

__all__ = ["CacheCorruptError", "CacheError", "CacheStats", "EmbeddingCache", "default_cache_dir"]


class CacheError(RuntimeError):
    """The embedding cache could not be read or written; the message names the file and the fix."""


class CacheCorruptError(CacheError):
    """The cache's database file is damaged (truncated, overwritten, not a database)."""


_FILES = ("embeddings.sqlite3", "embeddings.sqlite3-wal", "embeddings.sqlite3-shm")

#: The layout's version (``user_version``). 2: fingerprint ids are never reused (AUTOINCREMENT), so
#: an id a process holds after another cleared the cache cannot point at another configuration's rows.
SCHEMA_VERSION = 2

# Older layouts' fingerprints predate the encoder identity (no lookup reaches them): start afresh.
_SCHEMA = f"""
DROP TABLE IF EXISTS embeddings;
DROP TABLE IF EXISTS fingerprints;
CREATE TABLE fingerprints (id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL, dim INTEGER NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE embeddings (fingerprint_id INTEGER NOT NULL, item_key BLOB NOT NULL, vector BLOB NOT NULL,
    crc INTEGER NOT NULL, PRIMARY KEY (fingerprint_id, item_key)) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""
# SQLite limits the number of bound parameters per statement; stay well below every build's limit.
_CHUNK = 900


def default_cache_dir() -> Path:
    """``$SKTRANSFER_CACHE``, else ``<sktransfer home>/cache`` (``~/.cache/sktransfer/cache``)."""
    return home_folder("SKTRANSFER_CACHE", "cache")


@dataclass
class CacheStats:
    """Hit and miss counts; ``EmbeddingCache.stats`` accumulates, ``last`` is the latest call."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # rows whose checksum or length did not match: re-encoded
    last: dict = field(default_factory=lambda: {"hits": 0, "misses": 0, "corrupt": 0})

    def record(self, hits: int, misses: int, corrupt: int) -> None:
        self.hits, self.misses, self.corrupt = self.hits + hits, self.misses + misses, self.corrupt + corrupt
        self.last = {"hits": hits, "misses": misses, "corrupt": corrupt}


class _MemoryLayer:
    """An LRU of recently used vectors within one process, bounded in bytes."""

    def __init__(self, budget: int):
        self.budget, self.used, self.entries = budget, 0, OrderedDict()

    def remember(self, key, vector: np.ndarray) -> None:
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = vector
        self.used += vector.nbytes
        while self.used > self.budget and self.entries:
            self.used -= self.entries.popitem(last=False)[1].nbytes

    def forget(self, fingerprint: str | None = None) -> None:
        for key in [key for key in self.entries if fingerprint in (None, key[0])]:
            self.used -= self.entries.pop(key).nbytes


def _close_quietly(db: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE"):
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk): a second ROLLBACK would hide them.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


class _Store:
    """What the live caches of one folder share in this process: a connection, its fingerprint ids,
    and a memory layer per budget (so ``memory_bytes=0`` reads the disk while another keeps one)."""

    def __init__(self, key: tuple, stats: CacheStats):
        self.directory, self.read_only, self.stats = Path(key[0]), key[1], stats
        self.path = self.directory / _FILES[0]
        self.memories, self.lock = {}, threading.RLock()  # memory layers by budget
        self.warned_gone = False  # a loaded pickle has reported this folder missing
        self._connection = self._pid = self._inode = self._closer = None
        self._fingerprint_ids: dict[str, int] = {}

    def memory(self, budget: int) -> _MemoryLayer | None:
        return self.memories.setdefault(budget, _MemoryLayer(budget)) if budget > 0 else None

    def forget(self, fingerprint: str | None = None) -> None:
        for layer in self.memories.values():
            layer.forget(fingerprint)
        self._fingerprint_ids.clear()

    def connection(self, create: bool = True) -> sqlite3.Connection | None:
        """The open database; None with ``create=False`` where none exists (only a write creates one)."""
        # Reopened in a forked child, and for a file deleted or replaced underneath (no unlinked writes).
        forked = self._pid != os.getpid()
        if self._connection is None or forked or self._replaced():
            if self._connection is not None and not forked:
                self.forget()  # what we remember was read from the old file
            self.close()
            if not create and not self.read_only and not self.path.exists():
                return None
            with self.translated():
                self._connection = self._open()
            self._closer = weakref.finalize(self, _close_quietly, self._connection)
            self._pid = os.getpid()
        return self._connection

    def _replaced(self) -> bool:
        try:
            return not self.read_only and os.stat(self.path).st_ino != self._inode
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
            wal = self.directory / _FILES[1]
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
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
            db.execute(f"PRAGMA {pragma}")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with _transaction(db):  # serialises processes that open a new cache together
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        db.execute(statement)
        self._inode = os.stat(self.path).st_ino
        return db

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._connection = self._closer = None
        self._fingerprint_ids.clear()

    @contextlib.contextmanager
    def translated(self):
        """Turn SQLite's errors into a `CacheError` that names the file and the fix."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if any(sign in message for sign in ("not a database", "malformed", "disk image")):
                python = "" if flags_on() else " (or EmbeddingCache(path).clear(force=True))"
                raise CacheCorruptError(
                    f"the embedding cache at {self.path} is damaged ({message}). Delete it with `sktransfer cache "
                    f"clear --cache {self.directory} --force`{python}; its vectors are encoded again on demand."
                ) from None
            if "full" in message:
                raise CacheError(f"the disk holding the embedding cache at {self.path} is full ({message}); free "
                                 "space, or limit the cache with max_bytes") from None
            if "readonly" in message or "read-only" in message or "unable to open" in message:
                raise CacheError(f"cannot write the embedding cache at {self.path} ({message}); on read-only "
                                 "storage open it with EmbeddingCache(path, read_only=True)") from None
            raise CacheError(f"the embedding cache at {self.path} failed: {message}") from None

    def fingerprint_id(self, db: sqlite3.Connection, fingerprint: str) -> int | None:
        """The row id of ``fingerprint``, or None (lookups check each row's width, not the stored one)."""
        if fingerprint not in self._fingerprint_ids:
            if (row := db.execute("SELECT id FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()) is None:
                return None
            self._fingerprint_ids[fingerprint] = row[0]
        return self._fingerprint_ids[fingerprint]

    def writing_fingerprint_id(self, db: sqlite3.Connection, fingerprint: str, description: str, dim: int,
                               encoder_width: bool) -> int:
        """The row id of ``fingerprint`` for ``dim``-d vectors, created if absent; another stored width is
        corrected, its rows deleted, for an encoder (``encoder_width``), and a ``ValueError`` for an import."""
        select = "SELECT id, dim FROM fingerprints WHERE fingerprint = ?"
        row = db.execute(select, (fingerprint,)).fetchone()
        if row is None:
            now = time.time()
            db.execute("INSERT OR IGNORE INTO fingerprints (fingerprint, description, dim, created, last_used) "
                       "VALUES (?, ?, ?, ?, ?)", (fingerprint, description, dim, now, now))
            row = db.execute(select, (fingerprint,)).fetchone()
        fid, stored = row
        if stored != dim:
            if not encoder_width:
                raise ValueError(f"cache fingerprint {fingerprint[:12]} stores {stored}-d vectors, not {dim}-d")
            db.execute("UPDATE fingerprints SET dim = ?, description = coalesce(nullif(?, ''), description) "
                       "WHERE id = ?", (dim, description, fid))
            db.execute("DELETE FROM embeddings WHERE fingerprint_id = ? AND length(vector) != ?", (fid, 4 * dim))
        self._fingerprint_ids[fingerprint] = fid
        return fid

    def matching(self, db: sqlite3.Connection | None, prefix: str | None, *, required: bool = False) -> list:
        """``(id, fingerprint, description, dim)`` of every fingerprint, or of the one ``prefix`` names."""
        query = "SELECT id, fingerprint, description, dim FROM fingerprints"
        rows = [] if db is None else (db.execute(query + " WHERE fingerprint LIKE ?", (prefix + "%",)) if prefix
                                      else db.execute(query)).fetchall()
        if prefix and (len(rows) > 1 or required and not rows):
            raise ValueError(f"fingerprint prefix {prefix!r} matches {len(rows)} fingerprints; give one that "
                             "`sktransfer cache info` lists")
        return rows


#: The store of each folder (and read_only) that a live cache uses; released with the last of them.
_STORES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
#: Counters outlive the stores: an encoder given a path opens a cache per call, and its counts add up.
_COUNTS: dict[tuple, CacheStats] = {}
_STORES_LOCK = threading.Lock()


class EmbeddingCache:
    """An on-disk cache of embeddings shared by every encoder that is given it.

    Parameters
    ----------
    path : str, os.PathLike or None, default=None
        Folder of the cache; ``None`` uses `default_cache_dir`. Encoders of any models and settings can
        share one (entries are keyed by fingerprint); it is created (owner-only) by the first write.
    memory_bytes : int, default=256 MiB
        Size of the in-process layer that serves repeat lookups without reading the database; 0 disables it.
    max_bytes : int or None, default=None
        Size limit of the database. When a write takes it over, whole fingerprints are evicted,
        least recently used first (never the one being written).
    read_only : bool, default=False
        Serve hits from an existing cache without writing anything (misses are encoded, not
        stored), e.g. one shipped to workers on read-only storage; its files must not change meanwhile.

    Attributes
    ----------
    stats : CacheStats
        Hits, misses and corrupt rows in this process, in total and for the latest lookup.

    Notes
    -----
    docs/cache.md says what the caches of one folder share, what a pickle stores, and why NFS will not do.

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

    def __init__(self, path=None, *, memory_bytes: int = 256 * 2**20, max_bytes: int | None = None,
                 read_only: bool = False):
        # Absolute from the start: a relative folder must not change meaning after a chdir.
        self.path = (Path(path).expanduser() if path is not None else default_cache_dir()).absolute()
        self.memory_bytes, self.max_bytes, self.read_only = int(memory_bytes), max_bytes, bool(read_only)

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
                "read_only": self.read_only, "written": (self.path / _FILES[0]).exists()}

    def __setstate__(self, state):
        self.__init__(state["path"], memory_bytes=state["memory_bytes"], max_bytes=state["max_bytes"],
                      read_only=state.get("read_only", False))
        # A written cache whose folder is gone here is said once; a copy never written to has nothing to lose.
        if state.get("written", True) and not self.read_only and not (self.path / _FILES[0]).exists():
            store = self._store  # remembers the warning while a cache of the folder lives
            with store.lock:
                first, store.warned_gone = not store.warned_gone, True
            if first:
                warnings.warn(f"the embedding cache folder {self.path} of this loaded object does not exist here "
                              "(deleted, or another machine): its entries are encoded again, and the folder is "
                              "created when something is written.", UserWarning, stacklevel=2)

    @property
    def _store(self) -> _Store:
        key = (str(self.path.resolve()), self.read_only)
        with _STORES_LOCK:
            if (store := _STORES.get(key)) is None:
                store = _STORES[key] = _Store(key, _COUNTS.setdefault(key, CacheStats()))
        self._shared = store  # held, so that the store lives as long as this cache
        return store

    @property
    def stats(self) -> CacheStats:
        return self._store.stats

    def get(self, fingerprint: str, keys: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Look up ``keys`` under ``fingerprint``.

        Returns
        -------
        vectors : ndarray of shape (len(keys), dim), float32
            Rows of the hits; other rows are undefined.
        found : ndarray of shape (len(keys),), bool
            Which keys hit.
        """
        store, corrupt = self._store, 0
        vectors, found = np.empty((len(keys), dim), dtype=np.float32), np.zeros(len(keys), dtype=bool)
        memory = store.memory(self.memory_bytes)
        with store.lock, store.translated():
            pending = {}
            for i, key in enumerate(keys):
                cached = memory.entries.get((fingerprint, key)) if memory is not None else None
                if cached is None:
                    pending.setdefault(key, []).append(i)
                else:
                    vectors[i], found[i] = cached, True
            db = store.connection(create=False) if pending else None
            fid = store.fingerprint_id(db, fingerprint) if db is not None else None
            wanted = list(pending) if fid is not None else []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                rows = db.execute("SELECT item_key, vector, crc FROM embeddings WHERE fingerprint_id = ? AND "
                                  f"item_key IN ({','.join('?' * len(chunk))})", (fid, *chunk)).fetchall()
                for key, blob, crc in rows:
                    # Damaged, or of another width (an unchecked import): a miss, replaced by the next write.
                    if not _intact(blob, crc, dim):
                        corrupt += 1
                        continue
                    vector, rows = np.frombuffer(blob, dtype=np.float32), pending[bytes(key)]
                    if memory is not None:
                        memory.remember((fingerprint, bytes(key)), vector)
                    vectors[rows], found[rows] = vector, True
            if fid is not None and not store.read_only:
                db.execute("UPDATE fingerprints SET last_used = ? WHERE id = ?", (time.time(), fid))
        hits = int(found.sum())
        store.stats.record(hits, len(keys) - hits, corrupt)
        return vectors, found

    def put(self, fingerprint: str, keys: list[bytes], vectors: np.ndarray, description: str = "") -> None:
        """Store ``vectors`` (float32 rows) under ``fingerprint``, one transaction per call; the caller is
        the encoder of ``fingerprint``, so stored rows of another width are deleted."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(keys) or self.read_only:
            return
        self._write(fingerprint, keys, vectors, description, encoder_width=True)
        if self.max_bytes is not None:
            self._evict(keep=fingerprint)

    def _write(self, fingerprint: str, keys: list[bytes], vectors: np.ndarray, description: str,
               encoder_width: bool) -> int:
        """Rows written in one transaction: an encoder's replace their keys' rows, an import's none."""
        store, verb = self._store, "INSERT OR REPLACE" if encoder_width else "INSERT OR IGNORE"
        memory = store.memory(self.memory_bytes) if encoder_width else None
        with store.lock, store.translated():
            blobs = [vector.tobytes() for vector in vectors]
            db = store.connection()
            with _transaction(db):
                # Read inside the write lock: another process may have cleared the fingerprint since.
                fid = store.writing_fingerprint_id(db, fingerprint, description, vectors.shape[1], encoder_width)
                before = db.total_changes
                db.executemany(f"{verb} INTO embeddings VALUES (?, ?, ?, ?)",
                               [(fid, key, blob, zlib.crc32(blob)) for key, blob in zip(keys, blobs)])
                written = db.total_changes - before
                db.execute("UPDATE fingerprints SET last_used = ? WHERE id = ?", (time.time(), fid))
            if memory is not None:
                for key, vector in zip(keys, vectors):
                    memory.remember((fingerprint, key), vector.copy())
        return written

    def export(self, path, *, fingerprint: str | None = None) -> int:
        """Write the entries to a Parquet file, for another machine's cache to `import_`.

        Parameters
        ----------
        path : str or os.PathLike
            A local path or an fsspec URL (``s3://bucket/cache/``, ``gs://...``, ``memory://...``; remote
            file systems need their fsspec package, e.g. ``s3fs``). A path that ends with ``/`` or is an
            existing folder receives a new ``part-<host>-<pid>-<random>.parquet``; any other is the file.
        fingerprint : str or None, default=None
            Only this fingerprint's entries (a unique prefix is enough); None: all of them.

        Returns
        -------
        n_exported : int
            Number of entries written. Rows whose checksum does not match are left out, with a warning.

        Notes
        -----
        The columns (none of them code) are listed in docs/cache.md.
        """
        pa, pq, fs, target = _parquet_file_system("EmbeddingCache.export", path)
        if str(path).endswith("/") or fs.isdir(target):
            fs.makedirs(target, exist_ok=True)
            target = f"{target.rstrip('/')}/{export_part_name()}"
        store, schema = self._store, pa.schema([("fingerprint", pa.string()), ("description", pa.string()),
                                                ("item_key", pa.binary()), ("vector", pa.list_(pa.float32()))])
        exported = damaged = 0
        with store.lock, store.translated():
            db = store.connection(create=False)  # a folder never written to exports no entries
            selected = store.matching(db, fingerprint, required=True)
            # One snapshot: writers in other processes do not tear the export.
            with (_transaction(db, "BEGIN") if db is not None else contextlib.nullcontext()), \
                    fs.open(target, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
                for fid, fp, description, dim in selected:
                    cursor = db.execute("SELECT item_key, vector, crc FROM embeddings WHERE fingerprint_id = ?", (fid,))
                    while rows := cursor.fetchmany(_EXPORT_ROWS):
                        good = [(bytes(key), blob) for key, blob, crc in rows if _intact(blob, crc, dim)]
                        damaged += len(rows) - len(good)
                        if not good:
                            continue
                        values = np.frombuffer(b"".join(blob for _, blob in good), dtype=np.float32)
                        offsets = np.arange(len(good) + 1, dtype=np.int32) * dim
                        writer.write_table(pa.Table.from_arrays([
                            pa.array([fp] * len(good), pa.string()), pa.array([description] * len(good), pa.string()),
                            pa.array([key for key, _ in good], pa.binary()),
                            pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))], schema=schema))
                        exported += len(good)
        if damaged:
            warnings.warn(f"EmbeddingCache.export left out {damaged} damaged entries of {self.path} (their checksum "
                          "did not match); they are encoded again where they are needed.", UserWarning, stacklevel=2)
        return exported

    def import_(self, path) -> int:
        """Merge entries that `export` wrote (a file, or a folder of them) into this cache.

        Parameters
        ----------
        path : str or os.PathLike
            A Parquet file or a folder (every ``*.parquet`` under it), local or an fsspec URL.

        Returns
        -------
        n_imported : int
            Number of entries added. Keys this cache already holds under the same fingerprint
            are kept as they are.

        Raises
        ------
        CacheError
            The file is not an export (missing columns, or columns of other types), a row is
            malformed (no key, a vector of another width or a non-finite value), or this cache is
            read-only. The message names the file and the row; the valid rows before it are kept.

        Notes
        -----
        Import only exports you trust, as you would a cache folder: a vector's values cannot be checked
        without encoding the item again (docs/cache.md says what an import checks).
        """
        if self.read_only:
            raise CacheError(f"the embedding cache at {self.path} was opened with read_only=True; import into a "
                             "writable cache")
        pa, pq, fs, target = _parquet_file_system("EmbeddingCache.import_", path)
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
                for fp, description, keys, vectors in _exported_rows(pa, pq, handle, file):
                    try:
                        imported += self._write(fp, keys, vectors, description, encoder_width=False)
                    except ValueError as exc:  # the fingerprint already holds vectors of another width
                        raise CacheError(
                            f"{file}: {exc}; this export does not match the cache at {self.path}. If the cache's "
                            f"own vectors are the wrong ones (an earlier import), delete them with `sktransfer "
                            f"cache clear --fingerprint {fp[:12]} --cache {self.path}` and import again"
                        ) from None
        return imported

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
                "SELECT f.fingerprint, f.description, f.dim, count(e.item_key), "
                "coalesce(sum(length(e.vector) + length(e.item_key)), 0), f.last_used FROM fingerprints f "
                "LEFT JOIN embeddings e ON e.fingerprint_id = f.id GROUP BY f.id ORDER BY f.last_used DESC"
            ).fetchall()
        fingerprints = [dict(zip(("fingerprint", "description", "dim", "entries", "bytes", "last_used"), row))
                        for row in rows]
        return {"path": str(store.path), "entries": sum(f["entries"] for f in fingerprints),
                "bytes": sum(p.stat().st_size for p in store.directory.glob(_FILES[0] + "*") if p.exists()),
                "fingerprints": fingerprints}

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
                    (store.directory / name).unlink(missing_ok=True)
                store.forget()
            return deleted
        with store.lock, store.translated():
            if (db := store.connection(create=False)) is None:
                return 0  # nothing was ever written here
            deleted = _delete(db, [row[0] for row in store.matching(db, fingerprint)])
            store.forget()
            db.execute("VACUUM")
        return deleted

    def _evict(self, keep: str) -> None:
        store = self._store
        with store.lock, store.translated():
            db = store.connection()
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            used = lambda: page_size * (db.execute("PRAGMA page_count").fetchone()[0]
                                        - db.execute("PRAGMA freelist_count").fetchone()[0])
            if used() <= self.max_bytes:
                return
            for fid, fingerprint in db.execute("SELECT id, fingerprint FROM fingerprints WHERE fingerprint != ? "
                                               "ORDER BY last_used ASC", (keep,)).fetchall():
                _delete(db, [fid])
                store.forget(fingerprint)
                if used() <= self.max_bytes:
                    return
            warnings.warn(f"EmbeddingCache at {self.path} holds {used():,} bytes for the current encoder alone, over "
                          f"max_bytes={self.max_bytes:,}; nothing older is left to evict.", UserWarning, stacklevel=3)


_EXPORT_ROWS = 10_000  # rows per Parquet row group, and per transaction on import
_EXPORT_COLUMNS = ("fingerprint", "description", "item_key", "vector")


def _intact(blob: bytes, crc: int, dim: int) -> bool:
    """Whether a stored row is undamaged and ``dim`` wide."""
    return len(blob) == 4 * dim and zlib.crc32(blob) == crc


def _delete(db: sqlite3.Connection, ids) -> int:
    with _transaction(db):
        deleted = 0
        for fid in ids:
            deleted += db.execute("DELETE FROM embeddings WHERE fingerprint_id = ?", (fid,)).rowcount
            db.execute("DELETE FROM fingerprints WHERE id = ?", (fid,))
    return deleted


def export_part_name() -> str:
    """A new file name in an export folder, unique across hosts, processes and calls."""
    return f"part-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"


def _parquet_file_system(what: str, path):
    """pyarrow, pyarrow.parquet, and fsspec's file system and path for a local path or a URL."""
    import fsspec  # a dependency of huggingface_hub, so always present with sentence-transformers

    return (optional_import("pyarrow", "cli", what), optional_import("pyarrow.parquet", "cli", what),
            *fsspec.core.url_to_fs(os.fspath(path)))


def _exported_rows(pa, pq, handle, file):
    """Yield ``(fingerprint, description, keys, vectors)`` groups of an export file, validated."""
    parquet, t = pq.ParquetFile(handle), pa.types
    if missing := [c for c in _EXPORT_COLUMNS if c not in parquet.schema_arrow.names]:
        raise CacheError(f"{file} is not an sktransfer cache export: it has no column(s) {missing}")
    # Column types are refused before any row is read (numbers written as strings, text keys).
    for name, wanted, accepts in [
        ("fingerprint", "string", (t.is_string, t.is_large_string)),
        ("description", "string", (t.is_string, t.is_large_string, t.is_null)),
        ("item_key", "binary", (t.is_binary, t.is_large_binary, t.is_fixed_size_binary)),
        ("vector", "a list of floats", (lambda f: (t.is_list(f) or t.is_large_list(f) or t.is_fixed_size_list(f))
                                        and t.is_floating(f.value_type),)),
    ]:
        found = parquet.schema_arrow.field(name).type
        if not any(accept(found) for accept in accepts):
            raise CacheError(f"{file} is not an sktransfer cache export: column {name!r} holds {found}, not {wanted}")
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
                raise CacheError(f"{file}: row {first_row + bad} holds {with_article(f'{lengths[bad]}-d')} vector "
                                 f"where fingerprint {fp[:12]} has {lengths[rows[0]]}-d ones")
            with np.errstate(over="ignore"):  # a float64 too large for float32 is refused just below
                vectors = np.asarray([columns["vector"][i] for i in rows], dtype=np.float32)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                raise CacheError(f"{file}: row {first_row + rows[int(np.argmin(finite))]} holds a non-finite value")
            yield fp, columns["description"][rows[0]] or "", [bytes(columns["item_key"][i]) for i in rows], vectors
        first_row += batch.num_rows


def forget_process_state(path) -> None:
    """Drop this process's connection, memory layers and counters for the cache folder ``path``, so
    the next ``EmbeddingCache(path)`` starts as a fresh process would (benchmarks time that)."""
    folder = str(Path(path).expanduser().absolute().resolve())
    with _STORES_LOCK:
        for key in [key for key in {*_STORES, *_COUNTS} if key[0] == folder]:
            _COUNTS.pop(key, None)
            if (store := _STORES.pop(key, None)) is not None:
                with store.lock:
                    store.close()


def as_cache(cache) -> EmbeddingCache | None:
    """Turn the ``cache`` parameter of an encoder into an `EmbeddingCache` (or None)."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, a folder path or an EmbeddingCache, got {type(cache).__name__}")
