"""``sktransfer embed``: read items from a folder, a list file or a table, encode them, write ``.npy``
or Parquet (docs/cli.md). Outputs are checked before anything is encoded and written through
`atomic_output`, so a failed run leaves the earlier output as it was and no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ._images import IMAGE_EXTENSIONS
from ._quantize import CALIBRATION_ITEMS, FIDELITY_ITEMS
from ._runtime import optional_import
from .cache import as_cache, default_cache_dir
from .image import ImageEncoder
from .text import TextEncoder

TABLE_EXTENSIONS = {".csv", ".tsv", ".parquet", ".pq"}
OUTPUT_EXTENSIONS = {".npy", ".parquet", ".pq"}


class EmbedError(Exception):
    """Bad command-line input: reported as one line with exit status 2."""


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("input", metavar="INPUT", help="a folder of images, a list file (one image path or text per line), or a "
        "CSV/TSV/Parquet file with --column")
    add("-o", "--output", required=True, metavar="OUTPUT",
        help="where to write the features: a .npy or .parquet file (--out works too)")
    add("--overwrite", action="store_true", help="replace an existing OUTPUT (and its .items.txt list); without it an "
        "existing output is refused before anything is encoded")
    add("--kind", choices=["auto", "image", "text"], default="auto",
        help="force the image or the text encoder instead of inferring it from the input (default: %(default)s)")
    add("--column", default=None, help="the column of a CSV/TSV/Parquet input to encode")
    add("--keep", default=None, metavar="COLS", help="comma-separated columns of a CSV/TSV/Parquet input to copy into "
        "a Parquet OUTPUT, between the item column and the features (e.g. --keep id,label)")
    add("--model", default=None, help="images: a torchvision model name (default mobilenet_v2) or timm:<name> (e.g. "
        "timm:tf_efficientnet_lite0); texts: a sentence-transformers or transformers model name or folder (default "
        "all-MiniLM-L6-v2)")
    add("--weights", default=None, help="torchvision weights name, e.g. IMAGENET1K_V1, or a timm pretrained tag, e.g. "
        "in1k (images only; default DEFAULT: torchvision's recommended weights, IMAGENET1K_V2 for mobilenet_v2, "
        "downloaded on first use; the offline set-up seeds IMAGENET1K_V1, and 'sktransfer models' lists what is on "
        "this machine)")
    add("--layer", nargs="+", default=None, help="node name(s) of the image network to read; several are concatenated "
        "(default: the penultimate representation)")
    add("--pooling", choices=["auto", "avg", "max", "avgmax", "cls", "none"], default=None,
        help="reduction of spatial maps or token sequences (images only; default auto)")
    add("--value-range", type=_value_range, default=None, metavar="LOW,HIGH", help="images only: the range the pixel "
        "values of float or 16-bit image files come from, mapped onto black to white, e.g. 0,255 or 0,4095 (default: "
        "the file's container range, [0, 1] for floats, 0-65535 for 16-bit; a negative LOW is written "
        "--value-range=-1,1)")
    add("--prompt", default=None, help="texts only: a prefix for every text, e.g. 'query: ' for E5-style models")
    add("--long-text", choices=["truncate", "chunk"], default=None, help="texts only: cut texts longer than the "
        "model's limit (truncate, the default) or average overlapping windows over the whole text (chunk)")
    add("--batch-size", type=int, default=32, help="items per forward pass (default: %(default)s)")
    add("--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32", help="forward-pass arithmetic "
        "(default: %(default)s; images run bf16/fp16 under autocast; texts run bf16 with bfloat16 weights and fp16 "
        "under autocast; int8 needs --backend onnx or openvino, quantizes the export and measures its cosine to "
        "fp32 on the input; the output is float32 in every case)")
    add("--backend", choices=["torch", "onnx", "openvino"], default="torch", help="what runs the network: torch, ONNX "
        "Runtime (needs sktransfer[onnx]) or OpenVINO (needs sktransfer[openvino]); exported once into "
        "$SKTRANSFER_EXPORTS (default: %(default)s)")
    add("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: "
        "%(default)s)")
    add("--cache", default=None, metavar="DIR",
        help="embedding cache folder (default: $SKTRANSFER_CACHE or ~/.cache/sktransfer/cache)")
    add("--no-cache", action="store_true", help="encode everything, read and write no cache")
    add("--on-error", choices=["raise", "nan", "empty"], default="raise", help="unreadable images or missing texts: "
        "stop with the reason (raise), write NaN rows (nan), or, for texts only, encode them as empty strings (empty) "
        "(default: %(default)s)")
    add("--quiet", action="store_true", help="no progress bar")
    add("--scheduler", default=None, metavar="ADDRESS", help="encode on an existing Dask cluster (e.g. "
        "tcp://10.0.0.5:8786; needs sktransfer[dask]); OUTPUT is then a folder of Parquet partitions. A Parquet INPUT "
        "is read by the workers, other inputs by this process; paths must be readable on the workers")
    add("--spark", default=None, metavar="MASTER", help="encode on a Spark session with this master (e.g. local[2], "
        "spark://host:7077, yarn; needs sktransfer[spark] and Java 17+); OUTPUT is then a folder of Parquet "
        "partitions. A Parquet INPUT is read by the executors, other inputs by this process")
    add("--partitions", type=int, default=None, help="with --scheduler or --spark: how many partitions to split a "
        "non-Parquet input into (default: 4 per worker thread, or per core of the Spark session)")


def _value_range(text: str) -> tuple[float, float]:
    """``--value-range LOW,HIGH`` as two finite floats with LOW < HIGH."""
    try:
        low, high = (float(piece) for piece in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW,HIGH such as 0,255, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"expected two finite numbers with LOW < HIGH, such as 0,255, got {text!r}")
    return low, high


def _all_images(values, base: Path | None) -> tuple[bool, list]:
    """Whether every value is an image path (by extension), and the values, relative paths looked up in ``base``."""
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
    columns, matched = list(columns), []
    for wanted in keep:
        column = wanted if wanted in columns else wanted.strip()
        if column not in columns:
            raise EmbedError(f"--keep: {name} has no column {wanted!r}; columns: {columns[:20]}")
        if column == "item":
            raise EmbedError(f"--keep item: the output's item column already holds the encoded values; rename "
                             f"the column 'item' of {name} to keep it")
        matched.append(column)
    return list(dict.fromkeys(matched))


def _pick_column(columns, column: str | None, name: str):
    """``--column``, or the only column of a table named ``name``."""
    columns = list(columns)
    if column is None and len(columns) != 1:
        raise EmbedError(f"{name} has {len(columns)} columns {columns[:8]}; choose one with --column")
    if column is not None and column not in columns:
        raise EmbedError(f"{name} has no column {column!r}; columns: {columns[:20]}")
    return columns[0] if column is None else column


def _read_table(path: Path, column: str | None, keep: list[str]) -> tuple[list, object]:
    """The values of ``column`` and a DataFrame of the ``keep`` columns (None when there are none)."""
    parquet = path.suffix.lower() in {".parquet", ".pq"}
    pd = optional_import("pandas", "cli", f"reading {path.name}")
    if parquet:
        optional_import("pyarrow", "cli", f"reading {path.name}")  # pandas reads Parquet with it
    try:
        # Every cell of a CSV is text as written ("007" is not 7, NA and null are words); only an empty
        # cell is missing, and a blank line is a row of them, never a silently dropped row.
        table = pd.read_parquet(path) if parquet else pd.read_csv(
            path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False,
            na_values=[""], skip_blank_lines=False)
    except Exception as exc:  # pandas raises many parser errors; all mean the same to the user
        raise EmbedError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    column = _pick_column(table.columns, column, path.name)
    keep = _check_keep(keep, table.columns, path.name)
    return table[column].tolist(), (table[keep].reset_index(drop=True) if keep else None)


def read_items(source: str, kind: str, column: str | None, keep: list[str] = ()) -> tuple[list, str, bool, object]:
    """Items, encoder kind, whether the order is ours (a folder) and the ``--keep`` columns (or None)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise EmbedError(f"input not found: {source}")
    if keep and (path.is_dir() or path.suffix.lower() not in TABLE_EXTENSIONS):
        raise EmbedError(f"--keep copies columns of a CSV, TSV or Parquet input; {path.name} is "
                         f"{'a folder' if path.is_dir() else 'a list file'}, it has no columns")
    if path.is_dir():
        if kind == "text":
            raise EmbedError(f"{source} is a folder; --kind text needs a list file or a table")
        items = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
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
            values = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise EmbedError(f"{source} is not a UTF-8 text file; pass a folder, a list file or a table") from None
    if not values:
        raise EmbedError(f"{source} holds no items")
    images, resolved = _all_images(values, path.parent)
    if kind == "auto":
        kind = "image" if images else "text"
    # Unresolved when not all are image paths: the encoder names the first unreadable item.
    return resolved if kind == "image" and images else values, kind, False, kept


def build_encoder(kind: str, args):
    if kind == "image" and args.on_error == "empty":
        raise EmbedError("--on-error empty applies to texts; for images use raise or nan")
    params = dict(batch_size=args.batch_size, precision=args.precision, device=args.device, backend=args.backend,
                  show_progress=not args.quiet, on_error=args.on_error,
                  cache=None if args.no_cache else (args.cache or str(default_cache_dir())))
    if args.model:
        params["model"] = args.model
    layer, value_range = args.layer, getattr(args, "value_range", None)
    for flag, applies, name, given, value in [  # the flags of one kind of encoder: given, and the value it takes
        ("--weights", "image", "weights", args.weights, args.weights),
        ("--layer", "image", "layer", layer, layer and (layer[0] if len(layer) == 1 else list(layer))),
        ("--pooling", "image", "pooling", args.pooling, None if args.pooling == "none" else args.pooling),
        ("--value-range", "image", "value_range", value_range, value_range and tuple(value_range)),
        ("--prompt", "text", "prompt", args.prompt, args.prompt),
        ("--long-text", "text", "long_text", args.long_text, args.long_text),
    ]:
        if given and applies != kind:
            raise EmbedError(f"{flag} applies to {applies}s, but the input was read as {kind}s (force with --kind "
                             f"{applies})")
        if given:
            params[name] = value
    return (ImageEncoder if kind == "image" else TextEncoder)(**params)


def _beside(target: Path, tag: str) -> Path:
    # Short whatever the target's length, so no name the file system takes is refused for its temporary's.
    return target.with_name(f".{target.name[:40]}.{secrets.token_hex(4)}.{tag}")


def resolve_target(target) -> Path:
    """Where writing ``target`` writes: a symbolic link is written through (the link is kept)."""
    target = Path(target)
    return Path(os.path.realpath(target)) if os.path.islink(target) else target


def probe_writable(*targets) -> None:
    """Create and remove the files `atomic_output` will create, or raise `EmbedError` (``os.access``
    passes on a read-only mount)."""
    for given in targets:
        target = resolve_target(given)
        for probe in [_beside(target, "tmp")] + ([] if os.path.lexists(target) else [target]):
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise EmbedError(f"cannot write the output {given}: {exc.strerror or exc}") from None
            with contextlib.suppress(OSError):
                os.unlink(probe)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(*targets):
    """Write ``targets`` in one step: yield temporary paths beside them (one, or a tuple), renamed into
    place on success, all or none; on an exception every target is left as it was (each old one is kept
    under a backup name, a hard link else a rename, until all are renamed)."""
    targets = [resolve_target(target) for target in targets]
    temporaries = [_beside(target, "tmp") for target in targets]
    done = []  # (target, backup or None, whether the backup is a hard link) of the targets being replaced
    try:
        yield temporaries[0] if len(temporaries) == 1 else tuple(temporaries)
        for temporary in temporaries:
            if not temporary.is_dir():
                with open(temporary, "rb") as handle:
                    os.fsync(handle.fileno())
        for temporary, target in zip(temporaries, targets):
            backup, linked = None, False
            if os.path.lexists(target):
                backup = _beside(target, "old")
                if not target.is_dir():
                    with contextlib.suppress(OSError):
                        os.link(target, backup, follow_symlinks=False)  # the target stays in place
                        linked = True
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


def _check_item_names(items, sidecar: Path | None, folder: str) -> None:
    """Refuse file names the output cannot hold: a line break (in ``sidecar``) or invalid UTF-8."""
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


def _refuse_clash(names, columns) -> None:
    clash = sorted(set(names) & set(columns))
    if clash:
        raise EmbedError(f"--keep {clash[0]}: the features of this encoder have that name; rename the column")


def embed(args) -> str:
    """Run ``sktransfer embed``; returns the summary line."""
    output = Path(args.output).expanduser()
    keep = parse_keep(args.keep)
    if args.no_cache and args.cache:
        raise EmbedError(f"--cache {args.cache} and --no-cache contradict each other; pass one of them")
    if args.scheduler and args.spark:
        raise EmbedError(f"--scheduler {args.scheduler} (Dask) and --spark {args.spark} are two clusters; pass one")
    if args.scheduler:
        return embed_on_cluster(args, output, keep)
    if args.spark:
        return embed_on_spark(args, output, keep)
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
    # A .npy output's .items.txt is this run's too: written for a folder, else an earlier list to remove.
    mine = [output] + ([sidecar] if suffix == ".npy" else [])
    written = [output] + ([sidecar] if suffix == ".npy" and source.is_dir() else [])
    # os.path's tests, not pathlib's: a name too long to exist is False there, not an OSError.
    for path in mine:
        if os.path.isdir(path):
            raise EmbedError(f"cannot write the output {path}: it is a folder")
        if os.path.lexists(path) and not args.overwrite:  # a symbolic link exists even when its target is gone
            raise EmbedError(f"{path} exists; pass --overwrite to replace it, or choose another output name")
        if os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise EmbedError(f"the output {path} is the input {args.input}; writing it would destroy the input: "
                             "choose another output name")
    # A read-only file is one its owner protected: not replaced either.
    for path in written:
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise EmbedError(f"cannot write the output {path}: permission denied")
    probe_writable(*written)
    items, kind, ours, kept = read_items(args.input, args.kind, args.column, keep)
    if ours:
        _check_item_names(items, sidecar if suffix == ".npy" else None, args.input)
    encoder = build_encoder(kind, args)
    start = time.perf_counter()
    # fit validates the whole column before loading the model: an error counts every bad item.
    encoder.fit(items)
    names = list(encoder.get_feature_names_out())
    _refuse_clash(names, kept.columns if kept is not None else [])
    # The counts of this run: a cache's statistics are shared by every user of its folder in a process.
    store = as_cache(encoder.cache)
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
                                     f"(it lists the rows of an earlier output): {exc.strerror or exc}") from None
        else:
            pd = optional_import("pandas", "cli", "writing Parquet")
            optional_import("pyarrow", "cli", "writing Parquet")  # pandas writes Parquet with it
            # A missing item is a null, not the text "nan" (which may be a real word of the column).
            frame = pd.concat([pd.DataFrame({"item": [None if pd.api.types.is_scalar(item) and pd.isna(item)
                                                      else str(item) for item in items]}, dtype=object),
                               kept, pd.DataFrame(features, columns=names)], axis=1)  # concat skips a None kept
            with atomic_output(output) as parquet_file:
                frame.to_parquet(parquet_file, index=False)
    except OSError as exc:  # exit status 1, not a usage error
        left = f"the earlier {output.name} is unchanged" if existed else "no file was written"
        raise OSError(f"cannot write {output}: {' '.join(str(exc).split())}; {left}") from None
    failed = int(np.isnan(features).all(axis=1).sum())
    hits = "" if store is None else (f"; cache {store.path}: {store.stats.hits - before[0]} hits, "
                                     f"{store.stats.misses - before[1]} encoded")
    return (f"wrote {features.shape[0]} x {features.shape[1]} {kind} features ({_model_name(encoder)}) to {output} in "
            f"{seconds:.1f} s{hits}" + (f"; {failed} NaN rows (--on-error nan)" if failed else ""))


def _model_name(encoder) -> str:
    return encoder.model if isinstance(encoder.model, str) else type(encoder.model).__name__


def check_partitions_output(args, output: Path, flag: str) -> Path:
    """The checks of a run that writes a folder of Parquet partitions (``--scheduler``, ``--spark``), made
    before any cluster is reached; returns the input's path."""
    if output.suffix.lower() == ".npy":
        raise EmbedError(f"{flag} writes a folder of Parquet partitions; give -o a folder name, not a .npy file")
    if output.exists() and not output.is_dir():
        raise EmbedError(f"output {output} exists and is not an empty folder (it is a file); {flag} writes a "
                         "folder of Parquet partitions: choose a new folder name")
    if output.is_dir() and any(output.iterdir()):
        if not args.overwrite:
            raise EmbedError(f"output {output} exists and is not an empty folder; pass --overwrite to replace it, "
                             "or choose a new folder name")
        # What a Dask or Spark Parquet output folder holds (Spark's local writer adds hidden .crc checksums);
        # --overwrite replaces no folder holding anything else.
        stranger = next((entry.name for entry in sorted(output.iterdir()) if not entry.is_file() or not (
            entry.suffix == ".parquet" or entry.name in {"_metadata", "_common_metadata", "_SUCCESS"}
            or (entry.name.startswith(".") and entry.suffix == ".crc"))), None)
        if stranger is not None:
            raise EmbedError(f"output {output} holds {stranger}, which is not part of a Parquet dataset; it is not "
                             "replaced even with --overwrite: choose a new folder name")
    if not output.parent.is_dir():
        raise EmbedError(f"output folder does not exist: {output.parent}")
    if not (source := Path(args.input).expanduser()).exists():
        raise EmbedError(f"input not found: {args.input}")
    return source


def _is_parquet(source: Path) -> bool:
    return source.suffix.lower() in {".parquet", ".pq"} or (source.is_dir() and any(source.glob("*.parquet")))


def _fit_sample_size(args) -> int:
    """Rows read on the driver for ``fit``: 20 (the kind, one good item), or with ``--precision int8``
    enough for the calibration and the fidelity sample."""
    return CALIBRATION_ITEMS + FIDELITY_ITEMS if args.precision == "int8" else 20


def _kind_and_fit_items(args, sample: list) -> tuple[str, list]:
    """For an input read on the workers: the kind from the first rows, and the items ``fit`` needs (the
    column is validated on the workers): one good item, or with int8 every good one of the sample."""
    kind = args.kind if args.kind != "auto" else ("image" if _all_images(sample, None)[0] else "text")
    good = [value for value in sample if isinstance(value, (str, bytes))]
    if args.precision == "int8" and good:
        return kind, good
    return kind, good[:1] or sample[:1]


def embed_on_cluster(args, output: Path, keep: list[str] = ()) -> str:
    """``sktransfer embed --scheduler ADDRESS``: encode on a Dask cluster, write Parquet partitions."""
    source = check_partitions_output(args, output, "--scheduler")
    distributed = optional_import("distributed", "dask", "--scheduler")
    dd = optional_import("dask.dataframe", "dask", "--scheduler")
    import pandas as pd  # dask.dataframe's own dependency

    from .dask import transform

    try:
        client = distributed.Client(args.scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise EmbedError(f"cannot reach the Dask scheduler at {args.scheduler}: {exc}") from None
    with client:
        if _is_parquet(source):
            frame = dd.read_parquet(str(source))  # lazy: only the columns selected below are read
            column = _pick_column(frame.columns, args.column, source.name)
            keep = _check_keep(list(keep), frame.columns, source.name)
            frame = frame.assign(item=frame[column])[["item", *keep]]
            kind, fit_on = _kind_and_fit_items(args, frame["item"].head(_fit_sample_size(args)).tolist())
        else:
            items, kind, _, kept = read_items(args.input, args.kind, args.column, keep)
            threads = sum(client.nthreads().values()) or 1
            frame = dd.from_pandas(pd.concat([pd.DataFrame({"item": items}), kept], axis=1),  # concat skips None
                                   npartitions=max(1, min(len(items), args.partitions or 4 * threads)))
            fit_on = items  # validates the whole column here, before any worker starts
        encoder = build_encoder(kind, args)
        encoder.set_params(show_progress=False)  # workers have no terminal
        encoder.fit(fit_on)
        start = time.perf_counter()
        features = transform(encoder, frame, column="item")
        # The same column names as a local run's Parquet output.
        features = features.rename(columns=dict(zip(features.columns, encoder.get_feature_names_out())))
        _refuse_clash(features.columns, frame.columns)
        # The workers write into a folder beside OUTPUT, renamed into place once every partition is written.
        with atomic_output(output) as staging:
            dd.concat([frame, features], axis=1).to_parquet(str(staging), write_index=False)
        seconds = time.perf_counter() - start
        n_workers = len(client.nthreads())
    return (f"wrote {frame.npartitions} Parquet partition(s) of {kind} features ({_model_name(encoder)}, "
            f"{encoder.embedding_dim_} columns) to {output} in {seconds:.1f} s on {n_workers} Dask worker(s) at "
            f"{args.scheduler}")


def embed_on_spark(args, output: Path, keep: list[str] = ()) -> str:
    """``sktransfer embed --spark MASTER``: encode on a Spark session, write Parquet partitions with the
    column names of a local run."""
    source = check_partitions_output(args, output, "--spark")
    optional_import("pyspark", "spark", "--spark")
    from .spark import java_problem, transform, worker_error

    if (problem := java_problem()) is not None:
        raise EmbedError(problem)
    from pyspark.errors import PythonException
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    if args.spark.startswith("local"):  # local workers run this interpreter, where sktransfer is installed
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    ours = SparkSession.getActiveSession() is None  # a session this process already runs is not ours to stop
    session = (SparkSession.builder.master(args.spark).appName("sktransfer embed")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    if ours:
        session.sparkContext.setLogLevel("FATAL")  # a failed task is reported below, in one line
    try:
        if _is_parquet(source):
            frame = session.read.parquet(str(source))  # read by the executors
            column = _pick_column(frame.columns, args.column, source.name)
            keep = _check_keep(list(keep), frame.columns, source.name)
            frame = frame.select(*dict.fromkeys([column, *keep]))  # errors then name the file's column
            kind, fit_on = _kind_and_fit_items(args, [row[0] for row in frame.select(column).limit(_fit_sample_size(args)).collect()])
        else:
            import pandas as pd  # pyspark's pandas conversion needs it

            items, kind, _, kept = read_items(args.input, args.kind, args.column, keep)
            table = pd.concat([pd.DataFrame({"item": items}, dtype=object), kept], axis=1)  # concat skips None
            column, frame = "item", session.createDataFrame(table).repartition(
                max(1, min(len(items), args.partitions or 4 * session.sparkContext.defaultParallelism)))
            fit_on = items  # validates the whole column here, before any executor starts
        encoder = build_encoder(kind, args)
        encoder.set_params(show_progress=False)  # executors have no terminal
        encoder.fit(fit_on)
        names = list(encoder.get_feature_names_out())
        _refuse_clash(names, ["item", *keep])
        start = time.perf_counter()
        vectors = "__sktransfer_embedding__"
        encoded = transform(encoder, frame, column, output_col=vectors, batch_size=max(256, args.batch_size))
        # The item, the kept columns and one float column per feature, named as in a local run's Parquet output.
        encoded = encoded.select(F.col(column).alias("item"), *keep,
                                 *[F.col(vectors)[i].alias(name) for i, name in enumerate(names)])
        with atomic_output(output) as staging:
            encoded.write.parquet(str(staging))
        seconds = time.perf_counter() - start
        written = sum(1 for part in output.glob("*.parquet"))
    except PythonException as exc:  # a refused item or a failure on an executor: exit status 1, in one line
        raise RuntimeError(worker_error(exc) or str(exc)) from None
    finally:
        if ours:
            session.stop()
    return (f"wrote {written} Parquet partition(s) of {kind} features ({_model_name(encoder)}, "
            f"{encoder.embedding_dim_} columns) to {output} in {seconds:.1f} s on Spark ({args.spark})")
