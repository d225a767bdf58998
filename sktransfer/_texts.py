"""The text reader, shared by TextEncoder, ClipEncoder and the text tuner: which items are texts,
how they are batched, and the token-limit checks and warnings.
"""

from __future__ import annotations

import threading
import warnings
import weakref

import numpy as np

from ._columns import is_missing, numbers_hint
from ._messages import ItemError, setting, with_article

__all__ = ["TOKENIZER_LOCK", "check_max_length", "check_texts", "length_sorted_batches", "warn_truncated"]

# Fast tokenizers set their truncation and padding state on each call and can raise "Already
# borrowed" when two threads use one at once (huggingface/transformers#47085), so concurrent
# streams, and users calling transform from several threads, tokenize one at a time.
TOKENIZER_LOCK = threading.Lock()

# Token counts of long texts, per tokenizer (it lives as long as its model in the registry): a grid
# search asks for the same texts in every fold, and tokenizing them again on each cache hit cost up
# to 1.6x a full hit's time. Weakly keyed, so it goes with the tokenizer and needs no reset.
_TOKEN_COUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TOKEN_COUNTS_MAX = 200_000


def check_texts(items: list, on_error: str, owner: str) -> np.ndarray:
    """The rows that are texts; others follow ``on_error``: an `ItemError` (``"raise"``), ``""`` in
    their place (``"empty"``) or out of the mask (``"nan"``). A lone surrogate is always an error."""
    for i, item in enumerate(items):
        if isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ItemError(
                    f"{owner} got a text at index {i} that is not valid Unicode: it holds a lone surrogate "
                    f"{item[exc.start]!r} at position {exc.start} ({item[max(0, exc.start - 20):exc.start + 5]!r}). "
                    "Decode the source with errors='replace' (or 'ignore'), or fix its encoding.",
                    i, item, "a lone surrogate") from None
    bad = [i for i, item in enumerate(items) if not isinstance(item, str)]
    valid = np.ones(len(items), dtype=bool)
    if not bad:
        return valid
    if on_error == "raise":
        first = bad[0]
        kind = "a missing value" if is_missing(items[first]) else with_article(type(items[first]).__name__)
        n_missing = sum(is_missing(items[i]) for i in bad)
        raise ItemError(
            f"{owner} expects strings, but the item at index {first} is {kind} ({items[first]!r}); {len(bad)} of "
            f"{len(items)} items are not strings" + (f" ({n_missing} missing)" if n_missing else "")
            + f". Clean the column (e.g. X.fillna('')), or set {setting('on_error', 'empty')} to encode them as empty "
            f"strings or {setting('on_error', 'nan')} to return NaN rows for them."
            + numbers_hint([items[i] for i in bad]), first, items[first], "not a string")
    if on_error == "empty":
        for i in bad:
            items[i] = ""
        return valid
    valid[bad] = False
    return valid


def check_max_length(max_length, limit, name: str) -> None:
    """Refuse a token limit beyond what the model can read."""
    if max_length is not None and limit is not None and max_length > limit:
        raise ValueError(f"max_length={max_length} exceeds what {name!r} can read ({limit} tokens); "
                         f"use max_length <= {limit}.")


def length_sorted_batches(texts: list, batch_size: int, rows=None) -> list[list[int]]:
    """Positions of ``texts`` (or of ``rows`` only) in batches of similar length, longest first:
    padding to the longest of a batch then wastes little compute."""
    order = sorted(range(len(texts)) if rows is None else rows, key=lambda i: -len(texts[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def warn_truncated(owner: str, tokenizer, texts: set, limit: int, advice: str) -> None:
    """Warn when texts are longer than ``limit`` tokens, cached or not. A token covers at least one
    UTF-8 byte (plus special tokens and a word-start marker): shorter texts need no tokenizing."""
    budget = limit - tokenizer.num_special_tokens_to_add(pair=False) - 1
    candidates = [t for t in texts if 4 * len(t) > budget and len(t.encode("utf-8", "surrogatepass")) > budget]
    if not candidates:
        return
    known = _TOKEN_COUNTS.setdefault(tokenizer, {})
    counts = {t: known[t] for t in candidates if t in known}
    unknown = [t for t in candidates if t not in counts]
    if unknown:
        with TOKENIZER_LOCK:
            lengths = [len(ids) for ids in tokenizer(unknown, truncation=False, verbose=False)["input_ids"]]
        counts.update(zip(unknown, lengths))
        if len(known) + len(unknown) > _TOKEN_COUNTS_MAX:
            known.clear()
        known.update(zip(unknown, lengths))
    longer = [n for n in counts.values() if n > limit]
    if longer:
        warnings.warn(f"{owner} truncated {len(longer)} distinct text(s) longer than max_length={limit} tokens "
                      f"(longest: {max(longer)} tokens){advice}", UserWarning, stacklevel=4)
