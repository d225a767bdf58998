"""Wording shared by the error messages of every module (a leaf: it imports nothing of ours).

* `with_article`: "an int", "a str";
* `setting`: a parameter as the user wrote it, ``on_error='nan'`` in Python and ``--on-error nan``
  on the command line (inside `flag_style`), so that no message is rewritten after the fact;
* `ItemError`: the one error for a bad item, with its index, the item and the reason as attributes,
  which the cluster helpers and the CLI decorate without parsing the text.
"""

from __future__ import annotations

import contextlib
import contextvars

__all__ = ["ItemError", "flag_style", "flags_on", "setting", "with_article"]

_FLAGS = contextvars.ContextVar("sktransfer_flag_style", default=False)


def with_article(word: str) -> str:
    """``word`` after "a" or "an", chosen by its sound: "an int", "an ndarray", "a str", "a uint8"."""
    lower = str(word).lower()
    vowel = bool(lower) and lower[0] in "aeiou" and not lower.startswith(("uint", "uni", "use", "eu", "one"))
    if vowel or lower.startswith(("nd", "8", "11", "18")):  # "an ndarray", "an 8-d vector"
        return f"an {word}"
    return f"a {word}"


def flags_on() -> bool:
    """Whether advice is being written as command-line flags (inside `flag_style`)."""
    return _FLAGS.get()


@contextlib.contextmanager
def flag_style(on: bool = True):
    """Within this block, `setting` names command-line flags (the CLI's messages and warnings)."""
    token = _FLAGS.set(on)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def _flag_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def setting(name: str, value, *, owner: str | None = None, shown: str | None = None) -> str:
    """A parameter with a value, as advice names it: ``on_error='nan'``, or ``--on-error nan`` in `flag_style`.

    ``owner`` writes the call in Python (``ImageEncoder(value_range=(0, 255))``); ``shown`` is a
    placeholder for the value (``(low, high)``), written upper-case as the flag's argument.
    """
    if _FLAGS.get():
        text = shown.strip("()").replace(" ", "").upper() if shown else _flag_value(value)
        return f"--{name.replace('_', '-')}{'=' if text.startswith('-') else ' '}{text}"
    python = f"{name}={shown if shown else repr(value)}"
    return f"{owner}({python})" if owner else python


class ItemError(ValueError):
    """An item that cannot be encoded: ``message`` names its index and the fix; ``index`` is its
    position in the column the encoder was given, ``item`` the item (its ``repr`` once pickled if
    it cannot be pickled, e.g. an open file), ``reason`` why it failed, without the advice."""

    def __init__(self, message: str, index: int | None = None, item=None, reason: str | None = None):
        super().__init__(message)
        self.index, self.item, self.reason = index, item, reason

    def located(self, note: str) -> ItemError:
        """This error with ``note`` (where the piece sits in the whole input) appended to its message."""
        self.args = (f"{self.args[0]} [{note}]", *self.args[1:])
        return self

    def __reduce__(self):
        import pickle

        try:
            pickle.dumps(self.item)
            item = self.item
        except Exception:  # an open file handle, a lock: its description travels instead
            item = repr(self.item)
        return type(self), (self.args[0], self.index, item, self.reason)
