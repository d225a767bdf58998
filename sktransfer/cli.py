"""The ``sktransfer`` command line: ``sktransfer cache info`` and ``sktransfer cache clear``."""

from __future__ import annotations

import argparse
import sys
import time

from .cache import EmbeddingCache, default_cache_dir


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _cache_info(args) -> int:
    cache = EmbeddingCache(args.path)
    if not (cache.path / "embeddings.sqlite3").exists():
        print(f"no cache at {cache.path}")
        return 0
    info = cache.info()
    print(f"cache {info['path']}: {info['entries']:,} entries, {_size(info['bytes'])} on disk")
    for fp in info["fingerprints"]:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(fp["last_used"]))
        print(f"  {fp['fingerprint'][:12]}  {fp['entries']:>9,} x {fp['dim']:<5} {_size(fp['bytes']):>9}  "
              f"last used {used}  {fp['description']}")
    return 0


def _cache_clear(args) -> int:
    cache = EmbeddingCache(args.path)
    if not (cache.path / "embeddings.sqlite3").exists():
        print(f"no cache at {cache.path}")
        return 0
    try:
        deleted = cache.clear(args.fingerprint)
    except ValueError as exc:
        print(f"sktransfer: {exc}", file=sys.stderr)
        return 2
    what = f"fingerprint {args.fingerprint}" if args.fingerprint else "all fingerprints"
    print(f"deleted {deleted:,} entries ({what}) from {cache.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sktransfer", description="sktransfer command line tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    cache = commands.add_parser("cache", help="inspect or clear an embedding cache",
                                description="Inspect or clear an embedding cache folder.")
    actions = cache.add_subparsers(dest="action", required=True)
    info = actions.add_parser("info", help="entries, size and fingerprints of the cache",
                              description="Show entries, size and per-fingerprint counts of an embedding cache.")
    clear = actions.add_parser("clear", help="delete all entries, or one fingerprint's",
                               description="Delete every entry of an embedding cache, or those of one fingerprint.")
    for sub in (info, clear):
        sub.add_argument("--path", default=None,
                         help=f"cache folder (default: $SKTRANSFER_CACHE or {default_cache_dir()})")
    clear.add_argument("--fingerprint", default=None,
                       help="only this fingerprint (a unique prefix from 'sktransfer cache info' is enough)")
    info.set_defaults(handler=_cache_info)
    clear.set_defaults(handler=_cache_clear)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
