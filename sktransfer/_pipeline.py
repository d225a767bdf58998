"""The one encoding pipeline: validate -> deduplicate -> cache lookup -> encode the misses in
batches -> scatter back to input order, and the one ``on_error`` policy for items that failed.

Every encoder's ``transform`` is a call of `encode_column` with its own ``encode`` strategy (how a
list of distinct items becomes vectors, batch by batch) and two keys (of an item within the call,
and of its content for the cache). Nothing here knows about texts or images.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ._messages import ItemError, setting
from .cache import CacheError, EmbeddingCache

__all__ = ["encode_column", "settle_failures", "warn_nan_rows"]

#: Rows scattered at once, so that peak memory stays at the output plus the distinct rows.
_SCATTER_CHUNK = 8192


def _deduplicate(items: list, rows: np.ndarray, key: Callable[[Any], Hashable]):
    """Distinct items among ``rows``, the row where each first appears, and each row's slot."""
    slots: dict[Hashable, int] = {}
    inverse = np.empty(rows.size, dtype=np.intp)
    unique, first_row = [], []
    for position, row in enumerate(rows):
        slot = slots.setdefault(key(items[row]), len(unique))
        if slot == len(unique):
            unique.append(items[row])
            first_row.append(row)
        inverse[position] = slot
    return unique, first_row, inverse


def encode_column(items: list, valid: np.ndarray, encode, *, dim: int, identity, cache: EmbeddingCache | None,
                  dedupe_key, content_key, owner: str):
    """Encode the valid rows of one column; returns ``(out, failures)``, invalid and failed rows NaN.

    ``encode(distinct_items, on_batch) -> (features, {position: reason})`` is the encoder's own
    strategy; it calls ``on_batch(positions, features)`` as each batch finishes, so the cache keeps
    finished work. ``dedupe_key`` keys an item within the call, ``content_key`` its content for the
    cache (None: not cacheable). ``failures`` lists ``(row, item, reason)`` in row order.
    """
    rows = np.flatnonzero(valid)
    if not rows.size:
        return np.full((len(items), dim), np.nan, dtype=np.float32), []
    unique, first_row, inverse = _deduplicate(items, rows, dedupe_key)
    if cache is None:
        encoded, failed = encode(unique, None)
    else:
        encoded, failed = _through_cache(cache, unique, encode, content_key, identity, dim, owner)
    if failed:
        encoded[list(failed)] = np.nan
    failures = [(first_row[slot], unique[slot], reason) for slot, reason in sorted(failed.items())]
    if len(unique) == rows.size == len(items):
        return encoded, failures  # every row valid and distinct: already in input order, no copy
    out = np.full((len(items), dim), np.nan, dtype=np.float32)
    for start in range(0, rows.size, _SCATTER_CHUNK):
        stop = start + _SCATTER_CHUNK
        out[rows[start:stop]] = encoded[inverse[start:stop]]
    return out, failures


def _through_cache(cache: EmbeddingCache, items: list, encode, content_key, identity, dim: int, owner: str):
    """Serve hits from ``cache``, encode only the misses, and store them batch by batch.

    A cache fault (a damaged file, a full disk, read-only storage) is a warning, not a lost run:
    the features are computed and returned, and nothing is read from a faulty file.
    """
    keys = [content_key(item) for item in items]
    hashable = [i for i, key in enumerate(keys) if key is not None]
    try:
        vectors, found = cache.get(identity.fingerprint, [keys[i] for i in hashable], dim)
    except CacheError as exc:
        _warn_cache_fault(owner, exc, "encoding without the cache")
        return encode(items, None)
    hit_rows = np.asarray(hashable, dtype=np.intp)[found]
    misses = np.setdiff1d(np.arange(len(items)), hit_rows)
    if not misses.size:
        out = np.empty((len(items), dim), dtype=np.float32)
        out[hit_rows] = vectors[found]
        return out, {}

    write_failed = []

    def store(positions, features):
        rows = [(keys[misses[p]], f) for p, f in zip(positions, features) if keys[misses[p]] is not None]
        if rows and not write_failed:
            try:
                cache.put(identity.fingerprint, [k for k, _ in rows], np.stack([f for _, f in rows]),
                          identity.describe())
            except CacheError as exc:  # keep the computed features; stop trying for this call
                write_failed.append(exc)
                _warn_cache_fault(owner, exc, "the features are returned but not stored")

    if misses.size == len(items):
        return encode(items, store)  # nothing cached yet: encode straight into the result
    out = np.empty((len(items), dim), dtype=np.float32)
    out[hit_rows] = vectors[found]
    encoded, failed = encode([items[i] for i in misses], store)
    out[misses] = encoded
    return out, {int(misses[p]): reason for p, reason in failed.items()}


def _warn_cache_fault(owner: str, exc: Exception, consequence: str) -> None:
    warnings.warn(f"{owner}: {exc} ({consequence}).", UserWarning, stacklevel=7)


def warn_nan_rows(owner: str, n_bad: int, n_items: int, first: int, what: str, reason: str, policy: str) -> None:
    """The warning every ``on_error='nan'`` policy gives, so that no NaN row goes unnoticed."""
    warnings.warn(
        f"{owner} returned NaN rows for {n_bad} of {n_items} items ({policy}); first at index {first} "
        f"({what}): {reason}.",
        UserWarning,
        stacklevel=5,
    )


def settle_failures(owner: str, failures: list, n_items: int, on_error: str, *, describe=repr,
                    verb: str = "read") -> None:
    """Apply ``on_error`` to the items that could not be encoded: an `ItemError` naming the first, or a warning.

    ``failures`` holds ``(row, item, reason)``; their rows are already NaN in the output.
    """
    if not failures:
        return
    row, item, reason = min(failures, key=lambda failure: failure[0])
    nan = setting("on_error", "nan")
    if on_error == "raise":
        raise ItemError(
            f"{owner} could not {verb} the item at index {row} ({describe(item)}): {reason}. Fix or remove it, "
            f"or set {nan} to get NaN rows for such items (then impute or filter them).", row, item, reason)
    warn_nan_rows(owner, len(failures), n_items, row, describe(item), reason, nan)
