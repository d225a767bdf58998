"""``sktransfer embed``: read items from a file or folder, encode them, write the features.

Inputs (the encoder is inferred, ``--kind`` forces it):

* a folder: every image file under it, searched recursively, in sorted path order;
* a list file (``.txt``, ``.lst`` or any other extension): one item per line; images when every
  non-empty line ends in an image extension, otherwise texts;
* a table (``.csv``, ``.tsv``, ``.parquet``): one column (``--column``, needed when there are
  several); images when every value ends in an image extension, otherwise texts. Relative image
  paths are resolved against the current folder, then the table's folder.

Outputs: ``.npy`` (float32, one row per item in input order; for a folder the paths are written
next to it as ``<output>.items.txt``) or ``.parquet`` (an ``item`` column, then one column per
feature, named as ``get_feature_names_out`` names them).
"""

from __future__ import annotations

import argparse
import os
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
                        help="where to write the features: a .npy or .parquet file")
    parser.add_argument("--kind", choices=["auto", "image", "text"], default="auto",
                        help="force the image or the text encoder instead of inferring it from the input "
                             "(default: %(default)s)")
    parser.add_argument("--column", default=None, help="the column of a CSV/TSV/Parquet input to encode")
    parser.add_argument("--model", default=None,
                        help="images: a torchvision model name (default mobilenet_v2) or timm:<name> (e.g. "
                             "timm:tf_efficientnet_lite0); texts: a sentence-transformers or transformers model "
                             "name or folder (default all-MiniLM-L6-v2)")
    parser.add_argument("--weights", default=None,
                        help="torchvision weights name, e.g. IMAGENET1K_V1, or a timm pretrained tag, e.g. in1k "
                             "(images only; default DEFAULT)")
    parser.add_argument("--layer", nargs="+", default=None,
                        help="node name(s) of the image network to read; several are concatenated "
                             "(default: the penultimate representation)")
    parser.add_argument("--pooling", choices=["auto", "avg", "max", "avgmax", "cls", "none"], default=None,
                        help="reduction of spatial maps or token sequences (images only; default auto)")
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
    parser.add_argument("--cache", default=None,
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


def _read_table(path: Path, column: str | None) -> list:
    import pandas as pd

    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=object,
                                keep_default_na=True)
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
    return table[column].tolist()


def read_items(source: str, kind: str, column: str | None) -> tuple[list, str, bool]:
    """Items to encode, the encoder kind ("image" or "text") and whether the order is ours (a folder)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise EmbedError(f"input not found: {source}")
    if path.is_dir():
        if kind == "text":
            raise EmbedError(f"{source} is a folder; --kind text needs a list file or a table")
        items = _image_files(path)
        if not items:
            raise EmbedError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {source}")
        return items, "image", True
    if path.suffix.lower() in TABLE_EXTENSIONS:
        values = _read_table(path, column)
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
    return values, kind, False


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
        for flag, value in [("--prompt", args.prompt), ("--long-text", args.long_text)]:
            if value:
                raise EmbedError(f"{flag} applies to texts, but the input was read as images (force with --kind text)")
        return ImageEncoder(**params)
    for flag, value in [("--weights", args.weights), ("--layer", args.layer), ("--pooling", args.pooling)]:
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


def embed(args) -> str:
    """Run ``sktransfer embed``; returns the summary line."""
    import numpy as np

    output = Path(args.output).expanduser()
    if args.scheduler:
        return embed_on_cluster(args, output)
    if output.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise EmbedError(f"output must end in .npy or .parquet, got {output.name}")
    if not output.parent.is_dir():
        raise EmbedError(f"output folder does not exist: {output.parent}")
    # Checked before encoding anything: a run must not end in a write error after an hour.
    target = output if output.exists() else output.parent
    if not os.access(target, os.W_OK) or output.is_dir():
        raise EmbedError(f"cannot write the output {output}: {'it is a folder' if output.is_dir() else 'permission denied'}")
    items, kind, ours = read_items(args.input, args.kind, args.column)
    encoder = build_encoder(kind, args)
    start = time.perf_counter()
    features = encoder.fit(items[:1]).transform(items)
    seconds = time.perf_counter() - start
    if output.suffix.lower() == ".npy":
        np.save(output, features)
        if ours:
            output.with_name(output.name + ".items.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    else:
        import pandas as pd

        frame = pd.DataFrame(features, columns=encoder.get_feature_names_out())
        frame.insert(0, "item", [str(item) for item in items])
        try:
            frame.to_parquet(output, index=False)
        except ImportError as exc:
            raise EmbedError(f"writing Parquet needs {exc.name}: pip install pyarrow") from None
    failed = int(np.isnan(features).all(axis=1).sum())
    cache = encoder.cache
    hits = ""
    if cache is not None:
        from .cache import as_cache

        stats = as_cache(cache).stats
        hits = f"; cache {as_cache(cache).path}: {stats.hits} hits, {stats.misses} encoded"
    model = encoder.model if isinstance(encoder.model, str) else type(encoder.model).__name__
    return (f"wrote {features.shape[0]} x {features.shape[1]} {kind} features ({model}) to {output} in "
            f"{seconds:.1f} s{hits}" + (f"; {failed} NaN rows (--on-error nan)" if failed else ""))


def embed_on_cluster(args, output: Path) -> str:
    """``sktransfer embed --scheduler ADDRESS``: encode on a Dask cluster, write Parquet partitions."""
    if output.suffix.lower() == ".npy":
        raise EmbedError("--scheduler writes a folder of Parquet partitions; give -o a folder name, not a .npy file")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise EmbedError(f"output {output} exists and is not an empty folder; choose a new folder name")
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
            frame = dd.read_parquet(str(source), columns=[args.column] if args.column else None)
            if args.column is None and len(frame.columns) != 1:
                raise EmbedError(f"{source.name} has {len(frame.columns)} columns {list(frame.columns)[:8]}; "
                                 "choose one with --column")
            column = args.column or frame.columns[0]
            frame = frame[[column]].rename(columns={column: "item"})
            sample = frame["item"].head(20).tolist()
            images, _ = _all_images(sample, None)
            kind = args.kind if args.kind != "auto" else ("image" if images else "text")
        else:
            items, kind, _ = read_items(args.input, args.kind, args.column)
            threads = sum(client.nthreads().values()) or 1
            frame = dd.from_pandas(pd.DataFrame({"item": items}),
                                   npartitions=max(1, min(len(items), args.partitions or 4 * threads)))
            sample = items[:1]
        encoder = build_encoder(kind, args)
        encoder.set_params(show_progress=False)  # workers have no terminal
        encoder.fit(sample[:1])
        start = time.perf_counter()
        features = transform(encoder, frame, column="item")
        # The same column names as a local run's Parquet output.
        features = features.rename(columns=dict(zip(features.columns, encoder.get_feature_names_out())))
        dd.concat([frame, features], axis=1).to_parquet(str(output), write_index=False)
        seconds = time.perf_counter() - start
        n_workers = len(client.nthreads())
    model = encoder.model if isinstance(encoder.model, str) else type(encoder.model).__name__
    return (f"wrote {frame.npartitions} Parquet partition(s) of {kind} features ({model}, {encoder.embedding_dim_} "
            f"columns) to {output} in {seconds:.1f} s on {n_workers} Dask worker(s) at {args.scheduler}")
