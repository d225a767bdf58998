"""Folders that sktransfer reads trusted state from (`private_folder`, `check_private_file`).

Whoever can write into a cache or export folder can plant vectors under a genuine key, so, as ssh
treats key files, it and every folder above it (unless sticky, like ``/tmp``) must be the user's (or
root's) and writable by no one else (a group of one excepted); folders sktransfer creates are 0700.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["UnsafeFolderError", "check_private_file", "private_folder"]


class UnsafeFolderError(PermissionError):
    """A folder or file others can write (or own) would be trusted; the message names it and the fix."""


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is the current user's own group, with no other member (umask 002 systems)."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return gid == os.getegid() and group.gr_name == user and set(group.gr_mem) <= {user}


def _refuse(path: Path, what: str, why: str, fix: str) -> UnsafeFolderError:
    return UnsafeFolderError(
        f"the {what} {path} {why}: another user could plant vectors or networks there that would be served as "
        f"yours. {fix}"
    )


def _check(path: Path, what: str, st, *, leaf: bool, foreign_owner_ok: bool) -> None:
    if not foreign_owner_ok and st.st_uid not in (os.geteuid(), 0):
        raise _refuse(path, what, f"belongs to another user (uid {st.st_uid})",
                      "Use a folder of your own (the default lives under your home folder).")
    writers = [who for bit, who in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "every user")) if st.st_mode & bit]
    if writers == ["its group"] and _private_group(st.st_gid):  # a group of one: the user's own
        writers = []
    if writers and (leaf or not st.st_mode & stat.S_ISVTX):
        raise _refuse(path, what if leaf else f"folder above the {what}", f"is writable by {' and '.join(writers)}",
                      f"Make it private (chmod go-w '{path}') or use a folder of your own.")


def private_folder(path, what: str, *, create: bool = True, foreign_owner_ok: bool = False) -> Path:
    """Check (and ``create``, 0700, with the missing folders above it) a folder whose content sktransfer
    trusts; return it resolved. ``what`` names it in errors; ``foreign_owner_ok`` accepts another
    user's folder (a cache shipped read-only), still refusing one that others can write.
    """
    folder = Path(path).expanduser().resolve()
    missing = []
    existing = folder
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    for ancestor in reversed(existing.parents):
        _check(ancestor, what, os.stat(ancestor), leaf=False, foreign_owner_ok=True)
    leaf = not missing  # else the folder's nearest existing parent
    _check(existing, what, os.stat(existing), leaf=leaf, foreign_owner_ok=foreign_owner_ok or not leaf)
    if create:
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):  # created concurrently: checked like any existing folder
                os.mkdir(new, 0o700)
            _check(new, what, os.stat(new), leaf=True, foreign_owner_ok=False)
    return folder


def check_private_file(path, what: str, *, foreign_owner_ok: bool = False) -> None:
    """Refuse an existing file that others can write or that belongs to another user."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    _check(path, what, st, leaf=True, foreign_owner_ok=foreign_owner_ok)
