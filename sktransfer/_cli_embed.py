"""``sktransfer embed``: read items from a file or folder, encode them, write the features.

Inputs (the encoder is inferred, ``--kind`` forces it):

* a folder: every image file under it, searched recursively, in sorted path order;
* a list file (``.txt``, ``.lst`` or any other extension): one item per line; images when every
  non-empty line ends in an image extension, otherwise texts;
* a table (``.csv``, ``.tsv``, ``.parquet``): one column (``--column``, needed when there are
  several); images when every value ends in an image extension, otherwise texts. Relative image
  paths are resolved against the current folder, then the table's folder.

Outputs: ``.npy`` (float32, one row per item in input order; for a folder the paths are written
next to it as ``<output>.items.txt``) or ``.parquet`` (an ``item`` column, the ``--keep`` columns
of a table input, then one column per feature, named as ``get_feature_names_out`` names them).
An existing output is refused unless ``--overwrite`` is given, and every output is written to a
temporary file beside it and moved into place in one step (`atomic_output`), so a failed
run leaves the earlier output as it was and no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TABLE_EXTENSIONS = {".csv", ".tsv", ".parquet", ".pq"}
OUTPUT_EXTENSIONS = {".npy", ".parquet", ".pq"}


class EmbedError(Exception):
    """Bad command-line input: reported as one line with exit status 2."""


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="a folder of images, a list file (one image path or text per line), or a "
                             "CSV/TSV/Parquet file with --column")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="where to write the features: a .npy or .parquet file (--out works too)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUTPUT (and its .items.txt list); without it an existing "
                             "output is refused before anything is encoded")
    parser.add_argument("--kind", choices=["auto", "image", "text"], default="auto",
                        help="force the image or the text encoder instead of inferring it from the input "
                             "(default: %(default)s)")
    parser.add_argument("--column", default=None, help="the column of a CSV/TSV/Parquet input to encode")
    parser.add_argument("--keep", default=None, metavar="COLS",
                        help="comma-separated columns of a CSV/TSV/Parquet input to copy into a Parquet OUTPUT, "
                             "between the item column and the features (e.g. --keep id,label)")
    parser.add_argument("--model", default=None,
                        help="images: a torchvision model name (default mobilenet_v2) or timm:<name> (e.g. "
                             "timm:tf_efficientnet_lite0); texts: a sentence-transformers or transformers model "
                             "name or folder (default all-MiniLM-L6-v2)")
    parser.add_argument("--weights", default=None,
                        help="torchvision weights name, e.g. IMAGENET1K_V1, or a timm pretrained tag, e.g. in1k "
                             "(images only; default DEFAULT: torchvision's recommended weights, IMAGENET1K_V2 for "
                             "mobilenet_v2, downloaded on first use; the offline set-up seeds IMAGENET1K_V1, and "
                             "'sktransfer models' lists what is on this machine)")
    parser.add_argument("--layer", nargs="+", default=None,
                        help="node name(s) of the image network to read; several are concatenated "
                             "(default: the penultimate representation)")
    parser.add_argument("--pooling", choices=["auto", "avg", "max", "avgmax", "cls", "none"], default=None,
                        help="reduction of spatial maps or token sequences (images only; default auto)")
    parser.add_argument("--value-range", type=_value_range, default=None, metavar="LOW,HIGH",
                        help="images only: the range the pixel values of float or 16-bit image files come from, "
                             "mapped onto black to white, e.g. 0,255 or 0,4095 (default: the file's container "
                             "range, [0, 1] for floats, 0-65535 for 16-bit; a negative LOW is written "
                             "--value-range=-1,1)")
    parser.add_argument("--prompt", default=None,
                        help="texts only: a prefix for every text, e.g. 'query: ' for E5-style models")
    parser.add_argument("--long-text", choices=["truncate", "chunk"], default=None,
                        help="texts only: cut texts longer than the model's limit (truncate, the default) or "
                             "average overlapping windows over the whole text (chunk)")
    parser.add_argument("--batch-size", type=int, default=32, help="items per forward pass (default: %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="forward-pass arithmetic (default: %(default)s; images run bf16/fp16 under autocast; "
                             "texts run bf16 with bfloat16 weights and fp16 under autocast; the output is float32 "
                             "in every case)")
    parser.add_argument("--backend", choices=["torch", "onnx", "openvino"], default="torch",
                        help="what runs the network: torch, ONNX Runtime (needs sktransfer[onnx]) or OpenVINO (needs "
                             "sktransfer[openvino]); exported once into $SKTRANSFER_EXPORTS (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="embedding cache folder (default: $SKTRANSFER_CACHE or ~/.cache/sktransfer/cache)")
    parser.add_argument("--no-cache", action="store_true", help="encode everything, read and write no cache")
    parser.add_argument("--on-error", choices=["raise", "nan", "empty"], default="raise",
                        help="unreadable images or missing texts: stop with the reason (raise), write NaN rows "
                             "(nan), or, for texts only, encode them as empty strings (empty) (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="encode on an existing Dask cluster (e.g. tcp://10.0.0.5:8786; needs "
                             "sktransfer[dask]); OUTPUT is then a folder of Parquet partitions. A Parquet "
                             "INPUT is read by the workers, other inputs by this process; paths must be "
                             "readable on the workers")
    parser.add_argument("--partitions", type=int, default=None,
                        help="with --scheduler: how many partitions to split a non-Parquet input into "
                             "(default: 4 per worker thread)")


def _value_range(text: str) -> tuple[float, float]:
    """``--value-range LOW,HIGH`` as two finite floats with LOW < HIGH."""
    import math

    pieces = text.split(",")
    try:
        low, high = (float(piece) for piece in pieces)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW,HIGH such as 0,255, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"expected two finite numbers with LOW < HIGH, such as 0,255, got {text!r}")
    return low, high


def _image_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _all_images(values, base: Path | None) -> tuple[bool, list]:
    """Whether every value is an image path (by extension); the values with relative paths resolved.

    The decision is by extension, not existence, so a list of photos with one missing file is
    still read as images and the encoder's error names the missing one.
    """
    resolved = []
    for value in values:
        if not isinstance(value, str) or Path(value.strip()).suffix.lower() not in IMAGE_EXTENSIONS:
            return False, values
        path = Path(value.strip()).expanduser()
        if not path.is_absolute() and base is not None and not path.exists() and (base / path).exists():
            path = base / path
        resolved.append(str(path))
    return bool(resolved), resolved


def parse_keep(text: str | None) -> list[str]:
    """The ``--keep`` column names, in order, without repeats (empty pieces of ``a,,b`` dropped)."""
    if text is None:
        return []
    names = [name for name in text.split(",") if name.strip()]
    if not names:
        raise EmbedError(f"--keep {text!r} names no column; pass comma-separated column names, e.g. --keep id,label")
    return list(dict.fromkeys(names))


def _check_keep(keep: list[str], columns, name: str) -> list[str]:
    """``keep`` matched against a table's columns (``' label'`` finds ``label``): unknown ones are an error."""
    columns = list(columns)
    matched = []
    for wanted in keep:
        column = wanted if wanted in columns else wanted.strip()
        if column not in columns:
            raise EmbedError(f"--keep: {name} has no column {wanted!r}; columns: {columns[:20]}")
        if column == "item":
            raise EmbedError(f"--keep item: the output's item column already holds the encoded values; rename "
                             f"the column 'item' of {name} to keep it")
        matched.append(column)
    return list(dict.fromkeys(matched))


def _read_table(path: Path, column: str | None, keep: list[str]) -> tuple[list, object]:
    """The values of ``column`` and a DataFrame of the ``keep`` columns (None when there are none)."""
    import pandas as pd

    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            table = pd.read_parquet(path)
        else:
            # Every column is text, carried exactly as written (an id 12345678901234567 stays that
            # string, not a float; "007" is not 7): keep_default_na=False makes the words NA, None,
            # null, n/a... texts, and only an empty cell is missing (na_values=[""]). A blank line
            # is a row whose cells are all empty (skip_blank_lines=False), so the empty cell of a
            # one-column file is a missing item, never a silently dropped row.
            table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str,
                                keep_default_na=False, na_values=[""], skip_blank_lines=False)
    except ImportError as exc:
        raise EmbedError(f"reading {path.name} needs {exc.name}: pip install pyarrow") from None
    except Exception as exc:  # pandas raises many parser errors; all mean the same to the user
        raise EmbedError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if column is None:
        if table.shape[1] != 1:
            raise EmbedError(f"{path.name} has {table.shape[1]} columns {list(table.columns)[:8]}; "
                             "choose one with --column")
        column = table.columns[0]
    if column not in table.columns:
        raise EmbedError(f"{path.name} has no column {column!r}; columns: {list(table.columns)[:20]}")
    keep = _check_keep(keep, table.columns, path.name)
    return table[column].tolist(), (table[keep].reset_index(drop=True) if keep else None)


def read_items(source: str, kind: str, column: str | None, keep: list[str] = ()) -> tuple[list, str, bool, object]:
    """Items to encode, the encoder kind ("image" or "text"), whether the order is ours (a folder)
    and the ``--keep`` columns of a table (a DataFrame, or None)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise EmbedError(f"input not found: {source}")
    if keep and (path.is_dir() or path.suffix.lower() not in TABLE_EXTENSIONS):
        raise EmbedError(f"--keep copies columns of a CSV, TSV or Parquet input; {path.name} is "
                         f"{'a folder' if path.is_dir() else 'a list file'}, it has no columns")
    if path.is_dir():
        if kind == "text":
            raise EmbedError(f"{source} is a folder; --kind text needs a list file or a table")
        items = _image_files(path)
        if not items:
            raise EmbedError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {source}")
        return items, "image", True, None
    kept = None
    if path.suffix.lower() in TABLE_EXTENSIONS:
        values, kept = _read_table(path, column, list(keep))
    else:
        if column is not None:
            raise EmbedError(f"--column applies to CSV, TSV and Parquet files, not to {path.name}")
        try:
            values = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            raise EmbedError(f"{source} is not a UTF-8 text file; pass a folder, a list file or a table") from None
        values = [v for v in values if v.strip()]
    if not values:
        raise EmbedError(f"{source} holds no items")
    images, resolved = _all_images(values, path.parent)
    if kind == "auto":
        kind = "image" if images else "text"
    if kind == "image":
        values = resolved if images else values  # the encoder names the first unreadable item
    return values, kind, False, kept


def build_encoder(kind: str, args):
    from . import ImageEncoder, TextEncoder

    common = dict(batch_size=args.batch_size, precision=args.precision, device=args.device, backend=args.backend,
                  show_progress=not args.quiet, cache=None if args.no_cache else (args.cache or _default_cache()))
    if kind == "image":
        if args.on_error == "empty":
            raise EmbedError("--on-error empty applies to texts; for images use raise or nan")
        params = dict(common, on_error=args.on_error)
        if args.model:
            params["model"] = args.model
        if args.weights:
            params["weights"] = args.weights
        if args.layer:
            params["layer"] = args.layer[0] if len(args.layer) == 1 else list(args.layer)
        if args.pooling:
            params["pooling"] = None if args.pooling == "none" else args.pooling
        if getattr(args, "value_range", None) is not None:
            params["value_range"] = tuple(args.value_range)
        for flag, value in [("--prompt", args.prompt), ("--long-text", args.long_text)]:
            if value:
                raise EmbedError(f"{flag} applies to texts, but the input was read as images (force with --kind text)")
        return ImageEncoder(**params)
    for flag, value in [("--weights", args.weights), ("--layer", args.layer), ("--pooling", args.pooling),
                        ("--value-range", getattr(args, "value_range", None))]:
        if value:
            raise EmbedError(f"{flag} applies to images, but the input was read as texts (force with --kind image)")
    params = dict(common, on_error=args.on_error)
    if args.model:
        params["model"] = args.model
    if args.prompt:
        params["prompt"] = args.prompt
    if args.long_text:
        params["long_text"] = args.long_text
    return TextEncoder(**params)


def _default_cache():
    from .cache import default_cache_dir

    return str(default_cache_dir())


def _beside(target: Path, tag: str) -> Path:
    """A new hidden name in ``target``'s folder: ``.<first 40 characters of the name>.<8 hex>.<tag>``.

    Short whatever the target's length (a 250-byte name has a 54-character temporary), so a name
    the file system takes is never refused for its temporary's length.
    """
    return target.with_name(f".{target.name[:40]}.{secrets.token_hex(4)}.{tag}")


def resolve_target(target) -> Path:
    """Where writing ``target`` writes: a symbolic link is written through (its resolved target is
    replaced, the link kept), any other path is itself."""
    target = Path(target)
    return Path(os.path.realpath(target)) if os.path.islink(target) else target


def probe_writable(*targets) -> None:
    """Create and remove the files `atomic_output` will create for ``targets``, before any work.

    The temporary file beside each target (``O_CREAT | O_EXCL``) is the real test of a folder's
    writability (``os.access`` passes on a read-only mount) and of the temporary's name; an absent
    target is created and removed too, so a name too long for the file system is refused now and
    not after an hour of encoding. Raises `EmbedError` naming the target and the reason.
    """
    for given in targets:
        target = resolve_target(given)
        probes = [_beside(target, "tmp")] + ([] if os.path.lexists(target) else [target])
        for probe in probes:
            try:
                descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise EmbedError(f"cannot write the output {given}: {exc.strerror or exc}") from None
            os.close(descriptor)
            with contextlib.suppress(OSError):
                os.unlink(probe)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(*targets):
    """Write ``targets`` in one step: yield temporary paths beside them, move them into place on success.

    The one way every output of the command line is written (``.npy`` and its ``.items.txt``
    list, Parquet files, ``cache export`` files and ``--scheduler`` folders).

    Parameters
    ----------
    *targets : str or os.PathLike
        The files (or folders) to write. A symbolic link is written through: the file it points
        to is replaced and the link kept. Each temporary path is in its (resolved) target's
        folder, named ``.<first 40 characters of the name>.<random>.tmp``, so the final
        ``os.replace`` is a rename on one file system, which readers see as all of the new output
        or none of it.

    Yields
    ------
    temporary : pathlib.Path, or tuple of pathlib.Path for several targets
        Where the caller writes the new content (a file, or a folder it creates).

    Notes
    -----
    On any exception (a full disk, Ctrl-C) the temporary files or folders are removed and every
    target is left exactly as it was. Every file is flushed to disk (``fsync``) before the first
    rename, so a crash does not leave a renamed but empty file. The targets are replaced one by
    one, each old one kept under a backup name (a hard link, or a rename where links are not
    supported); if a later rename fails, the targets already replaced are restored from their
    backups (or removed where there was none), so several targets are replaced together or not
    at all. The backups are deleted on success. An existing folder is moved aside, since
    ``os.replace`` cannot replace a non-empty folder.
    """
    targets = [resolve_target(target) for target in targets]
    temporaries = [_beside(target, "tmp") for target in targets]
    done = []  # (target, backup or None, whether the backup is a hard link) of the targets being replaced
    try:
        yield temporaries[0] if len(temporaries) == 1 else tuple(temporaries)
        for temporary in temporaries:
            if not temporary.is_dir():
                descriptor = os.open(temporary, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        for temporary, target in zip(temporaries, targets):
            backup, linked = None, False
            if os.path.lexists(target):
                backup = _beside(target, "old")
                if not target.is_dir():
                    try:
                        os.link(target, backup, follow_symlinks=False)  # the target stays in place
                        linked = True
                    except OSError:
                        pass
                if not linked:
                    os.replace(target, backup)
            done.append((target, backup, linked))
            os.replace(temporary, target)
    except BaseException:
        for temporary in temporaries:
            _remove(temporary)
        for index, (target, backup, linked) in reversed(list(enumerate(done))):
            with contextlib.suppress(OSError):
                if backup is None:
                    _remove(target)
                elif linked and index == len(done) - 1 and os.path.samefile(backup, target):
                    # Its rename failed, so the target is still the old file (rename() of two links
                    # to one file does nothing, so the backup link is removed, not renamed back).
                    _remove(backup)
                else:
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target, ignore_errors=True)
                    os.replace(backup, target)
        raise
    for _, backup, _ in done:
        if backup is not None:
            _remove(backup)


def _cache_of(encoder):
    from .cache import as_cache

    return as_cache(encoder.cache)


def _check_item_names(items, sidecar: Path | None, folder: str) -> None:
    """Refuse, before encoding, file names the output cannot hold: one with a line break in the
    one-per-line ``sidecar`` list, one that is not valid UTF-8 (a file system's raw bytes) in any."""
    for item in items:
        if sidecar is not None and ("\n" in item or "\r" in item):
            raise EmbedError(f"cannot list {item!r} in {sidecar.name}: the file name holds a line break and the list "
                             f"holds one name per line; rename the file, move it out of {folder}, or write a "
                             ".parquet output")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise EmbedError(f"cannot write the file name {item!r} to the output: it is not valid UTF-8; rename "
                             f"the file or move it out of {folder}") from None


def _refuse_existing(paths, overwrite: bool) -> None:
    for path in paths:
        # lexists: a symbolic link is an existing output even when what it points to is gone.
        if os.path.lexists(path) and not overwrite:
            raise EmbedError(f"{path} exists; pass --overwrite to replace it, or choose another output name")


def _write_failed(output: Path, existed: bool, exc: OSError) -> OSError:
    """A write error naming the output and what is left of it (exit status 1, not a usage error)."""
    reason = " ".join(str(exc).split())
    kept = f"the earlier {output.name} is unchanged" if existed else "no file was written"
    return OSError(f"cannot write {output}: {reason}; {kept}")


def embed(args) -> str:
    """Run ``sktransfer embed``; returns the summary line."""
    import numpy as np

    output = Path(args.output).expanduser()
    keep = parse_keep(args.keep)
    if args.no_cache and args.cache:
        raise EmbedError(f"--cache {args.cache} and --no-cache contradict each other; pass one of them")
    if args.scheduler:
        return embed_on_cluster(args, output, keep)
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_EXTENSIONS:
        raise EmbedError(f"output must end in .npy or .parquet, got {output.name}")
    if keep and suffix == ".npy":
        raise EmbedError(f"--keep copies columns into a Parquet output, and a .npy file holds only the features: "
                         f"write -o {output.with_suffix('.parquet').name} instead")
    if not output.parent.is_dir():
        raise EmbedError(f"output folder does not exist: {output.parent}")
    # Checked before encoding anything: a run must not end in a write error after an hour.
    sidecar = output.with_name(output.name + ".items.txt")
    source = Path(args.input).expanduser()
    from_folder = source.is_dir()
    # A .npy output's <output>.items.txt is this run's too: written for a folder input, and for
    # any other input a list of some earlier output's rows, which must not stay beside this one.
    mine = [output] + ([sidecar] if suffix == ".npy" else [])
    written = [output] + ([sidecar] if suffix == ".npy" and from_folder else [])
    # os.path's tests, not pathlib's: a name too long to exist is False there, not an OSError.
    for path in mine:
        if os.path.isdir(path):
            raise EmbedError(f"cannot write the output {path}: it is a folder")
    _refuse_existing(mine, args.overwrite)
    for path in mine:
        if os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise EmbedError(f"the output {path} is the input {args.input}; writing it would destroy the input: "
                             "choose another output name")
    # A read-only file is a file its owner protected, and is not replaced either; the folder's
    # writability (and the length of the names) is tested by creating the files themselves.
    for path in written:
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise EmbedError(f"cannot write the output {path}: permission denied")
    probe_writable(*written)
    items, kind, ours, kept = read_items(args.input, args.kind, args.column, keep)
    if ours:
        _check_item_names(items, sidecar if suffix == ".npy" else None, args.input)
    encoder = build_encoder(kind, args)
    start = time.perf_counter()
    # fit validates the whole column (as transform does) before loading the model: an error
    # counts every bad item of the input, not those of a one-item sample.
    encoder.fit(items)
    names = list(encoder.get_feature_names_out())
    clash = sorted(set(names) & set(kept.columns)) if kept is not None else []
    if clash:
        raise EmbedError(f"--keep {clash[0]}: the features of this encoder have that name; rename the column")
    # The counts of this run: a cache's statistics are shared by every user of its folder in a process.
    store = _cache_of(encoder)
    before = (store.stats.hits, store.stats.misses) if store is not None else None
    features = encoder.transform(items)
    seconds = time.perf_counter() - start
    existed = os.path.exists(output)
    try:
        if suffix == ".npy":
            # A folder's array and its list of paths are replaced together, or neither is.
            with atomic_output(output, *([sidecar] if ours else [])) as written:
                array_file, list_file = written if ours else (written, None)
                with open(array_file, "wb") as handle:
                    np.save(handle, features)
                if ours:
                    list_file.write_text("\n".join(items) + "\n", encoding="utf-8")
            if not ours and os.path.lexists(sidecar):
                try:
                    sidecar.unlink()
                except OSError as exc:
                    raise EmbedError(f"wrote {output}, but could not remove the stale {sidecar.name} beside it "
                                     f"(it lists the rows of an earlier output): {exc.strerror or exc}") from None  # it listed the rows of the output just replaced, not these
        else:
            import pandas as pd

            # A missing item is a null, not the text "nan" (which may be a real word of the column).
            parts = [pd.DataFrame({"item": [None if pd.api.types.is_scalar(item) and pd.isna(item) else str(item)
                                            for item in items]}, dtype=object)]
            parts += [kept] if kept is not None else []
            parts.append(pd.DataFrame(features, columns=names))
            frame = pd.concat(parts, axis=1)
            try:
                with atomic_output(output) as parquet_file:
                    frame.to_parquet(parquet_file, index=False)
            except ImportError as exc:
                raise EmbedError(f"writing Parquet needs {exc.name}: pip install pyarrow") from None
    except OSError as exc:
        raise _write_failed(output, existed, exc) from None
    failed = int(np.isnan(features).all(axis=1).sum())
    hits = ""
    if store is not None:
        hits = (f"; cache {store.path}: {store.stats.hits - before[0]} hits, {store.stats.misses - before[1]} "
                "encoded")
    model = encoder.model if isinstance(encoder.model, str) else type(encoder.model).__name__
    return (f"wrote {features.shape[0]} x {features.shape[1]} {kind} features ({model}) to {output} in "
            f"{seconds:.1f} s{hits}" + (f"; {failed} NaN rows (--on-error nan)" if failed else ""))


# What a Dask Parquet output folder holds; --overwrite replaces no folder holding anything else.
_DATASET_FILES = {"_metadata", "_common_metadata", "_SUCCESS"}


def _replaceable_dataset(folder: Path) -> str | None:
    """The name of the first entry of ``folder`` that no Parquet dataset writes, or None."""
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or not (entry.suffix == ".parquet" or entry.name in _DATASET_FILES):
            return entry.name
    return None


def embed_on_cluster(args, output: Path, keep: list[str] = ()) -> str:
    """``sktransfer embed --scheduler ADDRESS``: encode on a Dask cluster, write Parquet partitions."""
    if output.suffix.lower() == ".npy":
        raise EmbedError("--scheduler writes a folder of Parquet partitions; give -o a folder name, not a .npy file")
    if output.exists() and not output.is_dir():
        raise EmbedError(f"output {output} exists and is not an empty folder (it is a file); --scheduler writes a "
                         "folder of Parquet partitions: choose a new folder name")
    if output.is_dir() and any(output.iterdir()):
        if not args.overwrite:
            raise EmbedError(f"output {output} exists and is not an empty folder; pass --overwrite to replace it, "
                             "or choose a new folder name")
        stranger = _replaceable_dataset(output)
        if stranger is not None:
            raise EmbedError(f"output {output} holds {stranger}, which is not part of a Parquet dataset; it is not "
                             "replaced even with --overwrite: choose a new folder name")
    if not output.parent.is_dir():
        raise EmbedError(f"output folder does not exist: {output.parent}")
    if not Path(args.input).expanduser().exists():
        raise EmbedError(f"input not found: {args.input}")
    try:
        import dask.dataframe as dd
        import pandas as pd
        from distributed import Client

        from .dask import transform
    except ImportError as exc:
        raise EmbedError(f"--scheduler needs Dask ({exc.name} is missing): pip install \"sktransfer[dask]\"") from None
    try:
        client = Client(args.scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise EmbedError(f"cannot reach the Dask scheduler at {args.scheduler}: {exc}") from None
    with client:
        source = Path(args.input).expanduser()
        if source.suffix.lower() in {".parquet", ".pq"} or (source.is_dir() and any(source.glob("*.parquet"))):
            frame = dd.read_parquet(str(source))  # lazy: only the columns selected below are read
            if args.column is None and len(frame.columns) != 1:
                raise EmbedError(f"{source.name} has {len(frame.columns)} columns {list(frame.columns)[:8]}; "
                                 "choose one with --column")
            column = args.column or frame.columns[0]
            if column not in frame.columns:
                raise EmbedError(f"{source.name} has no column {column!r}; columns: {list(frame.columns)[:20]}")
            keep = _check_keep(list(keep), frame.columns, source.name)
            frame = frame.assign(item=frame[column])[["item", *keep]]
            sample = frame["item"].head(20).tolist()
            images, _ = _all_images(sample, None)
            kind = args.kind if args.kind != "auto" else ("image" if images else "text")
            # The column is validated on the workers; fit needs one good item to resolve the model.
            fit_on = next(([value] for value in sample if isinstance(value, (str, bytes))), sample[:1])
        else:
            items, kind, _, kept = read_items(args.input, args.kind, args.column, keep)
            threads = sum(client.nthreads().values()) or 1
            table = pd.DataFrame({"item": items})
            if kept is not None:
                table = pd.concat([table, kept], axis=1)
            frame = dd.from_pandas(table, npartitions=max(1, min(len(items), args.partitions or 4 * threads)))
            fit_on = items  # validates the whole column here, before any worker starts
        encoder = build_encoder(kind, args)
        encoder.set_params(show_progress=False)  # workers have no terminal
        encoder.fit(fit_on)
        start = time.perf_counter()
        features = transform(encoder, frame, column="item")
        # The same column names as a local run's Parquet output.
        features = features.rename(columns=dict(zip(features.columns, encoder.get_feature_names_out())))
        clash = sorted(set(features.columns) & set(frame.columns))
        if clash:
            raise EmbedError(f"--keep {clash[0]}: the features of this encoder have that name; rename the column")
        # The workers write into a folder beside OUTPUT, renamed into place once every partition is written.
        with atomic_output(output) as staging:
            dd.concat([frame, features], axis=1).to_parquet(str(staging), write_index=False)
        seconds = time.perf_counter() - start
        n_workers = len(client.nthreads())
    model = encoder.model if isinstance(encoder.model, str) else type(encoder.model).__name__
    return (f"wrote {frame.npartitions} Parquet partition(s) of {kind} features ({model}, {encoder.embedding_dim_} "
            f"columns) to {output} in {seconds:.1f} s on {n_workers} Dask worker(s) at {args.scheduler}")
