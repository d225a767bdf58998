"""Which encoder configuration is fastest on this machine, and how faithful it is, measured on your items.

`speed` fits one encoder per configuration this machine can run (torch fp32 and bf16, ONNX Runtime
fp32 and int8, OpenVINO fp32, bf16 and int8; for texts each with one and two streams), times their
``transform`` on the same sample in alternating rounds, in one process, and compares each one's
vectors with torch fp32's. ``sktransfer speed`` is the same from the command line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from ._device import native_bf16
from ._images import IMAGE_EXTENSIONS, is_image_item
from ._quantize import fidelity
from .image import ImageEncoder
from .text import TextEncoder

__all__ = ["SpeedReport", "configuration_names", "machine_description", "speed"]

#: A configuration whose first round is this many times slower than torch fp32 is not timed again.
SLOW_CUTOFF = 4.0
#: The fidelity levels at which `SpeedReport` names the fastest configuration (mean cosine to torch fp32).
LEVELS = (0.99, 0.999)


def machine_description() -> str:
    """CPU model, cores, torch version and threads, CPU capability and bf16 instructions, as one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = {True: "yes", False: "no", None: "unknown"}[native_bf16()]
    return (f"{cpu}, {cores} cores, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 instructions {bf16}, "
            f"CUDA {torch.cuda.is_available()}")


@dataclasses.dataclass
class Configuration:
    """One way to run the encoder: what `speed` fits and times."""

    backend: str
    precision: str
    params: dict = dataclasses.field(default_factory=dict)  # other encoder parameters (n_streams)

    @property
    def name(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"{self.backend} {self.precision}{extra}"


def _configurations(kind: str) -> tuple[list[Configuration], list[str]]:
    """What this machine can run for ``kind``, and a line for each configuration it cannot.

    Texts are also measured with the other stream count than ``n_streams="auto"`` gives (2 for
    torch and ONNX Runtime, 1 for OpenVINO): which is faster depends on the machine.
    """
    plain = [("torch", "fp32"), ("torch", "bf16")]
    missing = []
    if importlib.util.find_spec("onnxruntime") is not None:
        plain += [("onnx", "fp32"), ("onnx", "int8")]
    else:
        missing.append('onnx: not installed (pip install "sktransfer[onnx]")')
    if importlib.util.find_spec("openvino") is not None:
        plain += [("openvino", "fp32"), ("openvino", "bf16")]
        if importlib.util.find_spec("nncf") is not None:
            plain.append(("openvino", "int8"))
        else:
            missing.append('openvino int8: NNCF is not installed (pip install "sktransfer[openvino]")')
    else:
        missing.append('openvino: not installed (pip install "sktransfer[openvino]")')
    runnable = []
    for backend, precision in plain:
        runnable.append(Configuration(backend, precision))
        if kind == "text" and torch.get_num_threads() >= 2:
            runnable.append(Configuration(backend, precision, {"n_streams": 2 if backend == "openvino" else 1}))
    return runnable, missing


def configuration_names(kind: str) -> list[str]:
    """The configurations `speed` can measure on this machine for ``kind``, named as its table names them."""
    return [c.name for c in _configurations(kind)[0]]


@dataclasses.dataclass
class SpeedReport:
    """What `speed` measured: one row per configuration, the fastest at each fidelity level.

    Attributes
    ----------
    rows : list of dict
        Per configuration: ``configuration``, ``backend``, ``precision``, ``params``, ``seconds``
        (each timed round), ``items_per_second`` (from the median round), ``ratio`` (to torch
        fp32), ``min_cosine`` and ``mean_cosine`` (to torch fp32's vectors), ``setup_seconds``
        (fit: loading, exporting, quantizing), ``note`` (why it was not timed again, or failed).
    recommended : dict
        For each level of `LEVELS`, the row of the fastest configuration whose mean cosine
        reaches it (None if none does).
    """

    kind: str
    model: object
    n_items: int
    repeats: int
    machine: str
    rows: list
    unavailable: list
    encoder_params: dict
    device: str = "cpu"

    @property
    def recommended(self) -> dict:
        found = {}
        for level in LEVELS:
            faithful = [r for r in self.rows if r["items_per_second"] and r["mean_cosine"] >= level]
            found[level] = max(faithful, key=lambda r: r["items_per_second"], default=None)
        return found

    def python(self, row: dict) -> str:
        """The line of Python that builds the encoder ``row`` measured."""
        cls = TextEncoder if self.kind == "text" else ImageEncoder
        defaults = cls().get_params()
        params = {k: v for k, v in self.encoder_params.items() if k not in defaults or defaults[k] != v}
        if self.device == "cpu" and _default_device_is_not_cpu():
            params["device"] = "cpu"  # what was measured; "auto" would take the GPU here
        if row["backend"] != "torch":
            params["backend"] = row["backend"]
        if row["precision"] != "fp32":
            params["precision"] = row["precision"]
        params.update(row["params"])
        model = repr(self.model) if isinstance(self.model, str) else "model"  # a module: the user's own variable
        shown = ", ".join([model] + [f"{k}={v!r}" for k, v in params.items()])
        return f"{cls.__name__}({shown})"

    def __str__(self) -> str:
        model = self.model if isinstance(self.model, str) else type(self.model).__name__
        lines = [f"sktransfer speed: {self.n_items} {self.kind}s, {model}, {self.repeats} alternating rounds",
                 f"machine: {self.machine}", "",
                 f"{'configuration':<28} {'items/s':>9} {'vs torch fp32':>14} {'min cosine':>11} "
                 f"{'mean cosine':>12} {'set-up':>8}  note"]
        for r in self.rows:
            speed = f"{r['items_per_second']:9.1f}" if r["items_per_second"] else f"{'-':>9}"
            ratio = f"{r['ratio']:13.2f}x" if r["ratio"] else f"{'-':>14}"
            cosines = (f"{r['min_cosine']:11.6f} {r['mean_cosine']:12.6f}" if r["mean_cosine"] == r["mean_cosine"]
                       else f"{'-':>11} {'-':>12}")
            lines.append(f"{r['configuration']:<28} {speed} {ratio} {cosines} {r['setup_seconds']:7.1f}s  {r['note']}")
        lines += [f"not measured: {line}" for line in self.unavailable]
        lines.append("")
        for level, row in self.recommended.items():
            if row is None:
                lines.append(f"fastest at mean cosine >= {level}: none reaches it")
            else:
                lines.append(f"fastest at mean cosine >= {level}: {row['configuration']} ({row['ratio']:.2f}x torch "
                             f"fp32): {self.python(row)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Everything measured, as JSON-serialisable values."""
        def plain(value):  # NaN (a configuration that failed) as JSON's null
            return None if isinstance(value, float) and value != value else value

        rows = [{k: plain(v) for k, v in row.items()} for row in self.rows]
        return {"kind": self.kind, "model": str(self.model), "n_items": self.n_items, "repeats": self.repeats,
                "machine": self.machine, "rows": rows, "unavailable": self.unavailable,
                "recommended": {str(level): row and row["configuration"] for level, row in self.recommended.items()}}


def _default_device_is_not_cpu() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def _image_like(item) -> bool:
    """An image object, or a path whose name ends as an image file's (a text otherwise)."""
    if isinstance(item, (str, os.PathLike)):
        return os.path.splitext(os.fspath(item).strip())[1].lower() in IMAGE_EXTENSIONS
    return is_image_item(item)


def _sample(items: list, max_items: int) -> list:
    if len(items) <= max_items:
        return list(items)
    chosen = np.sort(np.random.default_rng(0).choice(len(items), max_items, replace=False))
    return [items[i] for i in chosen]


def speed(items, *, kind: str = "auto", model=None, max_items: int = 200, repeats: int = 3,
          configurations=None, show_progress: bool = True, **encoder_params) -> SpeedReport:
    """Measure every encoder configuration this machine can run on a sample of ``items``.

    Each configuration is fitted on the sample (its set-up time: loading, exporting, quantizing),
    warmed up, then timed on the whole sample in ``repeats`` alternating rounds, without a cache.
    Fidelity is the row-wise cosine of its vectors to torch fp32's on the same items. A
    configuration whose first round is more than 4x slower than torch fp32 is not timed again.

    Parameters
    ----------
    items : list
        Texts, or images (paths, bytes, PIL images, arrays): what you will encode.
    kind : {"auto", "text", "image"}, default="auto"
        The encoder: ``"auto"`` takes ImageEncoder when every item is an image path, bytes or
        image object, else TextEncoder.
    model : str or None, default=None
        The encoder's ``model`` (None: its default).
    max_items : int, default=200
        Size of the sample (seeded, in input order).
    repeats : int, default=3
        Timed rounds per configuration.
    configurations : list of str or (backend, precision) or None, default=None
        Only these, named as the table names them (``"torch fp32, n_streams=1"``) or as
        ``(backend, precision)`` pairs (None: all that this machine can run). Torch fp32, the
        reference, is always measured.
    show_progress : bool, default=True
        A progress bar over the fits and rounds.
    **encoder_params
        Other encoder parameters, the same for every configuration (``weights``,
        ``batch_size``, ``layer``, ...).

    Returns
    -------
    report : SpeedReport
        ``print(report)`` shows the table and the fastest configuration at mean cosine 0.99
        and 0.999 with the line of Python that builds it.
    """
    items = list(items)
    if not items:
        raise ValueError("speed needs items to measure on; got none.")
    if kind == "auto":
        kind = "image" if all(map(_image_like, items)) else "text"
    if kind not in ("text", "image"):
        raise ValueError(f"kind must be 'auto', 'text' or 'image', got {kind!r}")
    for name, value in (("repeats", repeats), ("max_items", max_items)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    fixed = sorted({"backend", "precision", "n_streams", "cache", "show_progress"} & set(encoder_params))
    if fixed:
        raise ValueError(f"speed sets {fixed[0]} itself for each configuration; choose configurations with "
                         "configurations=[...] instead of passing it.")
    cls = TextEncoder if kind == "text" else ImageEncoder
    model = model if model is not None else cls().model
    sample = _sample(items, max_items)
    runnable, unavailable = _configurations(kind)
    if configurations is not None:  # names as the table shows them, or (backend, precision) for the plain ones
        wanted = {c if isinstance(c, str) else Configuration(*c).name for c in configurations}
        unknown = sorted(wanted - {c.name for c in runnable})
        if unknown:
            raise ValueError(f"configuration {unknown[0]!r} is not one this machine can run for {kind}s; choose among "
                             f"{[c.name for c in runnable]}" + (f" ({'; '.join(unavailable)})" if unavailable else ""))
        runnable = [c for c in runnable if c.name in wanted]
    if not runnable or runnable[0].name != "torch fp32":
        runnable.insert(0, Configuration("torch", "fp32"))  # the reference every figure is relative to
    base = {"device": "cpu", **encoder_params, "cache": None, "show_progress": False}

    bar = tqdm(total=len(runnable) * (repeats + 1), desc="sktransfer speed", disable=not show_progress)
    encoders, rows = {}, []
    for configuration in runnable:
        row = {"configuration": configuration.name, "backend": configuration.backend,
               "precision": configuration.precision, "params": configuration.params, "seconds": [],
               "items_per_second": None, "ratio": None, "min_cosine": float("nan"), "mean_cosine": float("nan"),
               "setup_seconds": 0.0, "note": ""}
        rows.append(row)
        bar.set_postfix_str(f"fitting {configuration.name}")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the table says what the warnings would (fidelity, slow bf16)
                encoder = cls(model, backend=configuration.backend, precision=configuration.precision,
                              **configuration.params, **base).fit(sample)
                encoder.transform(sample[: encoder.batch_size])  # warm-up: sessions and kernels ready
        except Exception as exc:  # noqa: BLE001 - one configuration's failure is a row of the report
            if configuration is runnable[0]:
                raise
            row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            bar.update(repeats + 1)
            continue
        row["setup_seconds"] = round(time.perf_counter() - start, 2)
        if "fidelity_" in vars(encoder):
            row["fidelity_at_fit"] = encoder.fidelity_
        encoders[configuration.name] = encoder
        bar.update(1)

    reference = None
    for round_index in range(repeats):
        for row in rows:
            encoder = encoders.get(row["configuration"])
            if encoder is None or (round_index and row["note"]):
                continue
            bar.set_postfix_str(f"round {round_index + 1}: {row['configuration']}")
            start = time.perf_counter()
            try:
                vectors = encoder.transform(sample)
            except Exception as exc:  # noqa: BLE001 - one configuration's failure is a row of the report
                if row is rows[0]:
                    raise
                row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                row["seconds"] = []
                encoders.pop(row["configuration"])
                continue
            row["seconds"].append(round(time.perf_counter() - start, 4))
            bar.update(1)
            if round_index == 0:
                reference = vectors if reference is None else reference
                row.update({k: v for k, v in fidelity(reference, vectors).items() if k != "n_items"})
                slower = row["seconds"][0] / rows[0]["seconds"][0]
                if row is not rows[0] and slower > SLOW_CUTOFF:
                    row["note"] = f"{slower:.1f}x slower than torch fp32 in round 1: not timed again"
                    bar.update(repeats - 1)
    bar.close()
    for row in rows:
        if row["seconds"]:
            row["items_per_second"] = round(len(sample) / float(np.median(row["seconds"])), 2)
    for row in rows:
        if row["items_per_second"]:
            row["ratio"] = round(row["items_per_second"] / rows[0]["items_per_second"], 3)
    return SpeedReport(kind=kind, model=model, n_items=len(sample), repeats=repeats,
                       machine=machine_description(), rows=rows, unavailable=unavailable,
                       encoder_params={k: v for k, v in encoder_params.items() if k != "device"},
                       device=base["device"])
