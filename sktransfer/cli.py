"""The ``sktransfer`` command line: ``embed``, ``speed``, ``models``, ``cache info|clear|export|import`` and ``demo``.

Bad input ends with a one-line reason on stderr, never a traceback (docs/cli.md describes each command).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from ._cli_embed import EmbedError, add_embed_arguments, atomic_output, embed, probe_writable, read_items
from ._messages import flag_style
from .cache import CacheError, EmbeddingCache, default_cache_dir, export_part_name


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _cache(args) -> EmbeddingCache | None:
    """The cache ``--cache`` names, or None (said on stdout) when it has no database yet."""
    cache = EmbeddingCache(args.cache)
    if (cache.path / "embeddings.sqlite3").exists():
        return cache
    print(f"no cache at {cache.path}")
    return None


def _cache_info(args) -> int:
    if (cache := _cache(args)) is None:
        return 0
    try:
        info = cache.info()
    except CacheError as exc:
        return _fail(str(exc))
    print(f"cache {info['path']}: {info['entries']:,} entries, {_size(info['bytes'])} on disk")
    for fp in info["fingerprints"]:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(fp["last_used"]))
        print(f"  {fp['fingerprint'][:12]}  {fp['entries']:>9,} x {fp['dim']:<5} {_size(fp['bytes']):>9}  "
              f"last used {used}  {fp['description']}")
    return 0


def _cache_clear(args) -> int:
    if (cache := _cache(args)) is None:
        return 0
    if args.force and args.fingerprint:
        return _fail("--force deletes the whole database; it takes no --fingerprint", 2)
    try:
        deleted = cache.clear(args.fingerprint, force=args.force)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except CacheError as exc:
        return _fail(str(exc))
    what = f"fingerprint {args.fingerprint}" if args.fingerprint else "all fingerprints"
    print(f"deleted {deleted:,} entries ({what}) from {cache.path}")
    return 0


@contextlib.contextmanager
def _export_destination(output: str, overwrite: bool):
    """Where ``cache export`` writes: a local file or a folder's new part file through `atomic_output`
    (whole or not at all), never clobbered silently; a URL as it is (object stores write whole)."""
    exists = "exists; pass --overwrite to replace it, or export to a folder/ (a new part file each time)"
    if "://" in output:
        import fsspec

        fs, target = fsspec.core.url_to_fs(output)
        if not output.endswith("/") and not fs.isdir(target) and fs.exists(target) and not overwrite:
            raise EmbedError(f"{output} {exists}")
        yield output
        return
    path = Path(output).expanduser()
    if output.endswith(("/", os.sep)) or path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path = path / export_part_name()
    elif path.exists() and not overwrite:
        raise EmbedError(f"{path} {exists}")
    elif not path.parent.is_dir():
        raise EmbedError(f"output folder does not exist: {path.parent}")
    with atomic_output(path) as temporary:
        yield str(temporary)


def _cache_export(args) -> int:
    cache = EmbeddingCache(args.cache)
    if not (cache.path / "embeddings.sqlite3").exists():  # an error here: the export was asked for
        return _fail(f"no cache at {cache.path}")
    try:
        with _export_destination(args.output, args.overwrite) as destination:
            n = cache.export(destination, fingerprint=args.fingerprint)
    except (ValueError, EmbedError) as exc:  # bad input: exit status 2
        return _fail(str(exc), 2)
    except (CacheError, ImportError, OSError) as exc:
        return _fail(f"cannot export to {args.output}: {exc}; no partial file is left"
                     if isinstance(exc, OSError) and "://" not in args.output else str(exc))
    print(f"exported {n:,} entries from {cache.path} to {args.output}")
    return 0


def _cache_import(args) -> int:
    cache = EmbeddingCache(args.cache)
    try:
        n = cache.import_(args.input)
    except (CacheError, ImportError, OSError) as exc:
        return _fail(str(exc))
    print(f"imported {n:,} new entries from {args.input} into {cache.path}")
    return 0


def _models(args) -> int:
    import torch
    import torchvision
    from huggingface_hub import scan_cache_dir

    from ._backbones import offline_weights
    from .model_store import available_text_models, models_dir

    def listing(title, names, none=None):
        print(title, *[f"  {name}" for name in names] or ([f"  ({none})"] if none else []), sep="\n")

    try:
        cached = sorted(repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model")
    except Exception:  # no cache folder yet, or an unreadable one: nothing to list
        cached = []
    text, hub = available_text_models(), [name for name in cached if not name.startswith("timm/")]
    listing(f"Text models (sentence-transformers) in {models_dir()}:", text,
            None if hub else "none: run scripts/seed_offline_weights.py, or place a model folder there")
    if hub:
        listing("Text models in the Hugging Face cache:", hub)
    listing(f"Image weights (torchvision) with a checkpoint in {Path(torch.hub.get_dir()) / 'checkpoints'}:",
            [f"{model:<24} weights={name!r}" for model in torchvision.models.list_models(module=torchvision.models)
             for name in offline_weights(model)],
            "none: torchvision downloads a checkpoint on first use; offline, place the .pth file there")
    listing("Image weights (timm) in the Hugging Face cache, for ImageEncoder(model=...):",
            [f"timm:{name.split('/', 1)[1]}" for name in cached if name.startswith("timm/")],
            "none: timm downloads weights on first use; scripts/seed_offline_weights.py seeds EfficientNet-Lite0")
    return 0


QUICK_ARGS = {  # the examples `demo` runs, in order, and their --quick arguments
    "sst2_learning_curve.py": ["--limit", "60", "--sizes", "20", "1000", "--draws", "2", "--finetune-sizes", "20",
                               "--finetune-unfreeze", "1", "--finetune-epochs", "1"],
    "hymenoptera_transfer.py": ["--limit", "6", "--cv", "2"],
    "fashion_products.py": ["--limit", "5"],
}


def _demo(args) -> int:
    folder = Path(args.examples) if args.examples else Path(__file__).resolve().parents[1] / "examples"
    if not all((folder / name).is_file() for name in QUICK_ARGS):
        return _fail(f"the example scripts are not in {folder} (sktransfer demo runs the examples/ folder of a "
                     "source checkout); pass --examples DIR")
    env = {"HF_HUB_OFFLINE": "1", **os.environ}  # the default models resolve from the local model folder
    if args.data:
        env["SKTRANSFER_DATA"] = str(Path(args.data).resolve())
    for name, quick in QUICK_ARGS.items():
        print(f"\n=== {name} ===", flush=True)
        if code := subprocess.call([sys.executable, str(folder / name), *(quick if args.quick else [])], env=env):
            return _fail(f"{name} exited with status {code}", code)
    return 0


def _fail(message: str, code: int = 1) -> int:
    """Print a one-line reason and return the exit status."""
    print(f"sktransfer: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def error_message(exc: BaseException) -> str:
    """An estimator's error as one command-line line (its advice already names flags: see `main`)."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError quotes itself


def _embed(args) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *rest, **kw: print(f"sktransfer: warning: {message}", file=sys.stderr)
        try:
            summary = embed(args)
        except EmbedError as exc:
            return _fail(str(exc), 2)
        except (ValueError, TypeError, OSError, KeyError, RuntimeError, ImportError) as exc:
            # ModelNotFoundError is an OSError; unreadable images and bad weights are ValueErrors.
            return _fail(error_message(exc))
    print(summary)
    return 0


def _speed(args) -> int:
    from .speed import configuration_names, speed

    if args.max_items < 1 or args.repeats < 1:
        return _fail("--max-items and --repeats must be at least 1", 2)
    try:
        if args.json:
            probe_writable(args.json)  # before minutes of measuring, not after
        items, kind, _, _ = read_items(args.input, args.kind, args.column)
        known = configuration_names(kind)
        for name in args.only or []:
            if name not in known:
                raise EmbedError(f"--only {name!r} is not a configuration this machine can run for {kind}s; "
                                 f"choose among {', '.join(repr(k) for k in known)}")
        params = {"batch_size": args.batch_size}
        if args.weights is not None:
            if kind != "image":
                raise EmbedError(f"--weights applies to images, but the input was read as {kind}s (force with --kind "
                                 "image)")
            params["weights"] = args.weights
        report = speed(items, kind=kind, model=args.model, max_items=args.max_items, repeats=args.repeats,
                       configurations=args.only, show_progress=not args.quiet, **params)
    except EmbedError as exc:
        return _fail(str(exc), 2)
    except (ValueError, TypeError, OSError, KeyError, RuntimeError, ImportError) as exc:
        return _fail(error_message(exc))
    print(report)
    if args.json:
        import json

        try:
            with atomic_output(args.json) as temporary:
                Path(temporary).write_text(json.dumps(report.to_dict(), indent=1) + "\n")
        except OSError as exc:
            return _fail(f"cannot write {args.json}: {exc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sktransfer",
        description="sktransfer: frozen pretrained encoders as scikit-learn transformers, from the command line.",
        epilog="Run 'sktransfer COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=f"sktransfer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser(
        "embed", help="encode images or texts to .npy or Parquet",
        description="Encode a folder of images (searched recursively), a list file (one image path or one "
                    "text per line), or one column of a CSV/TSV/Parquet file, and write the features to .npy "
                    "or Parquet. The encoder (image or text) is inferred from the input; --kind forces it.",
        epilog="Examples: sktransfer embed photos/ -o photos.npy --weights IMAGENET1K_V1 ; "
               "sktransfer embed reviews.csv --column text -o reviews.parquet --precision bf16")
    add_embed_arguments(embed)
    embed.set_defaults(handler=_embed, usage_parser=embed, stray="the output is given as -o OUTPUT: -o {}")

    speed = commands.add_parser(
        "speed", help="measure which backend and precision is fastest on this machine, and how faithful",
        description="Fit the encoder in every configuration this machine can run (torch fp32/bf16, ONNX Runtime "
                    "fp32/int8, OpenVINO fp32/bf16/int8; texts with one and two streams), time each on a sample "
                    "of INPUT in alternating rounds, and print items/s, the ratio to torch fp32 and the min/mean "
                    "cosine to torch fp32's vectors, with the fastest configuration at mean cosine >= 0.99 and "
                    ">= 0.999 and the line of Python that builds it.",
        epilog="Examples: sktransfer speed reviews.csv --column text ; sktransfer speed photos/ --weights IMAGENET1K_V1")
    speed.add_argument("input", metavar="INPUT", help="a folder of images, a list file (one path or text per line), "
                       "or a CSV/TSV/Parquet file (with --column)")
    speed.add_argument("--column", default=None, help="the column of a CSV/TSV/Parquet input")
    speed.add_argument("--kind", choices=["auto", "image", "text"], default="auto",
                       help="force the image or the text encoder (default: inferred from the input)")
    speed.add_argument("--model", default=None, help="the encoder's model (default: all-MiniLM-L6-v2 for texts, "
                       "mobilenet_v2 for images)")
    speed.add_argument("--weights", default=None, help="images: torchvision weights name or timm tag (default DEFAULT)")
    speed.add_argument("--batch-size", type=int, default=32, help="items per forward pass (default: %(default)s)")
    speed.add_argument("--max-items", type=int, default=200, help="size of the sample measured, drawn with a fixed "
                       "seed (default: %(default)s)")
    speed.add_argument("--repeats", type=int, default=3, help="timed rounds per configuration (default: %(default)s)")
    speed.add_argument("--only", action="append", default=None, metavar="CONFIG", help="measure only this "
                       "configuration, named as the table names it (e.g. 'onnx int8' or 'torch fp32, n_streams=1'); "
                       "repeat for several (torch fp32, the reference, is always measured)")
    speed.add_argument("--json", default=None, metavar="FILE", help="also write every figure to FILE as JSON")
    speed.add_argument("--quiet", action="store_true", help="no progress bar")
    speed.set_defaults(handler=_speed, usage_parser=speed)

    models = commands.add_parser("models", help="list the text models and image weights available offline",
                                 description="List the sentence-transformers models and the torchvision weights that "
                                 "resolve on this machine without a network: model folders in the sktransfer model "
                                 "directory and the Hugging Face cache, and checkpoints in torch's hub cache.")
    models.set_defaults(handler=_models, usage_parser=models)

    demo = commands.add_parser(
        "demo", help="run the README's demonstration on real data",
        description="Run the three examples on real data: SST-2 sentiment learning curve (TextEncoder vs TF-IDF), "
                    "ants vs bees photos (ImageEncoder vs raw pixels) and the fashion catalogue (tabular + photo + "
                    "product name in one ColumnTransformer).")
    demo.add_argument("--data", default=None, help="folder holding sst2/, hymenoptera/ and fashion_products/ "
                      "(default: $SKTRANSFER_DATA, else ../shared/data beside the checkout)")
    demo.add_argument("--examples", default=None, help="folder with the example scripts (default: the checkout's)")
    demo.add_argument("--quick", action="store_true", help="tiny subsets: checks that everything runs in a minute")
    demo.set_defaults(handler=_demo, usage_parser=demo)

    cache = commands.add_parser("cache", help="inspect, clear, export or import an embedding cache",
                                description="Inspect, clear, export or import an embedding cache folder.")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="entries, size and fingerprints of the cache",
                              description="Show entries, size and per-fingerprint counts of an embedding cache.")
    clear = actions.add_parser("clear", help="delete all entries, or one fingerprint's",
                               description="Delete every entry of an embedding cache, or those of one fingerprint.")
    export = actions.add_parser(
        "export", help="write the entries to a Parquet file (for another machine's cache)",
        description="Write the cache's entries to Parquet (fingerprint, description, item_key, vector). OUTPUT is a "
                    "file, or a folder (ending in /) that receives a new part-*.parquet file; fsspec URLs such as "
                    "s3://bucket/cache/ work when their fsspec package is installed.")
    export.add_argument("output", metavar="OUTPUT", help="Parquet file or folder/ (local path or fsspec URL)")
    export.add_argument("--fingerprint", default=None, help="only this fingerprint (a unique prefix is enough)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUTPUT file (a folder/ always receives a new part file)")
    import_ = actions.add_parser(
        "import", help="merge entries exported by 'sktransfer cache export'",
        description="Merge the entries of an exported Parquet file, or of every *.parquet file under a folder, into "
                    "the cache. Entries already there are kept. Import only exports you trust.")
    import_.add_argument("input", metavar="INPUT", help="Parquet file or folder (local path or fsspec URL)")
    for sub, handler in [(info, _cache_info), (clear, _cache_clear), (export, _cache_export), (import_, _cache_import)]:
        # --cache DIR, as for 'sktransfer embed'; --path is the old spelling, still read for scripts.
        sub.add_argument("--cache", default=None, metavar="DIR",
                         help=f"cache folder (default: $SKTRANSFER_CACHE or {default_cache_dir()})")
        sub.add_argument("--path", dest="legacy_path", default=None, help=argparse.SUPPRESS)
        sub.set_defaults(handler=handler, usage_parser=sub, stray="the cache folder is given as --cache DIR: --cache {}")
    clear.add_argument("--fingerprint", default=None,
                       help="only this fingerprint (a unique prefix from 'sktransfer cache info' is enough)")
    clear.add_argument("--force", action="store_true",
                       help="delete the database files whatever state they are in (the way out of a damaged cache)")
    return parser


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str], stray: str | None) -> str:
    """The usage error for ``extras``, with the likely intended flag (``stray``: the hint for a bare word)."""
    flags = [flag for action in parser._actions if action.help is not argparse.SUPPRESS
             for flag in action.option_strings]
    if any(word.startswith("-") for word in extras):  # then a bare word may be an unknown flag's value
        hints = [f"did you mean {close[0]}?" for word in extras if word.startswith("-")
                 and (close := difflib.get_close_matches(word.split("=", 1)[0], flags, n=1))]
    else:
        hints = [stray.format(word) for word in extras] if stray else []
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")


def parse_arguments(argv=None) -> argparse.Namespace:
    """Parse the command line; a usage error shows the given (sub)command's usage, listing the flags meant."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    where = getattr(args, "usage_parser", parser)
    if extras:
        where.error(_unrecognized(where, extras, getattr(args, "stray", None)))
    if (legacy := getattr(args, "legacy_path", None)) is not None:
        if args.cache is not None:
            where.error(
                f"--path {legacy} and --cache {args.cache} both name the cache folder (--path is the old spelling "
                "of --cache); pass --cache alone")
        args.cache = legacy
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        with flag_style():  # the library's advice, errors and warnings alike, names flags here
            return args.handler(args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
