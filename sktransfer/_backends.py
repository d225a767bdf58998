"""Inference backends: the same frozen network run by ONNX Runtime or OpenVINO instead of torch.
`exported_network` exports a network once into a per-user folder keyed by what it computes and the
versions, and loads it as a `Network`; preprocessing and pooling stay in torch.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._content import digest, sha256_hex
from ._device import warn_cpu_fallback
from ._folders import check_private_file, private_folder
from ._quantize import quantize
from ._runtime import optional_import
from .model_store import sktransfer_home

__all__ = ["BACKENDS", "ExportMismatchError", "ExportSpec", "Network", "check_precision", "exported_network",
           "fallback_device", "require", "resolve_device"]

#: Accepted values of the encoders' ``backend`` parameter.
BACKENDS = ("torch", "onnx", "openvino")

_RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
# int8: the quantized operations run in int8 whatever the hint; the rest stays float32.
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_EXPORT_LOCK = threading.RLock()  # an int8 export makes its float32 export inside


def require(backend: str):
    """The runtime module of ``backend`` (an ``ImportError`` names the extra to install)."""
    return optional_import(_RUNTIMES[backend], backend, f"backend={backend!r}")


def exports_dir() -> Path:
    env = os.environ.get("SKTRANSFER_EXPORTS")
    return Path(env).expanduser() if env else sktransfer_home() / "exports"


def _cuda_provider_available() -> bool:
    # onnxruntime-gpu lists its CUDA provider even where no GPU is visible: ask for both.
    return "CUDAExecutionProvider" in require("onnx").get_available_providers() and torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def _openvino_core():  # one per process: it owns the device plugins compiled models run on
    return require("openvino").Core()


def _openvino_devices() -> list:
    return list(_openvino_core().available_devices)


def resolve_device(backend: str, device: str) -> str:
    """The device ``backend`` runs on for the ``device`` parameter, or a ``ValueError`` saying what would work."""
    if device == "cpu":
        return "cpu"
    if backend == "onnx":
        if device == "auto":
            return "cuda:0" if _cuda_provider_available() else "cpu"
        if device == "cuda" or device.startswith("cuda:"):
            if not _cuda_provider_available():
                raise ValueError(
                    f"device={device!r} with backend='onnx' needs ONNX Runtime's CUDA execution provider, which this "
                    "installation lacks (pip install onnxruntime-gpu in place of onnxruntime), or a CUDA GPU. Use "
                    "device='cpu', or backend='torch'.")
            return "cuda:0" if device == "cuda" else device
        raise ValueError(f"device={device!r} is not available with backend='onnx'; use 'auto', 'cpu' or 'cuda[:N]'.")
    devices = _openvino_devices()
    if device == "auto":
        return "gpu" if "GPU" in devices or any(d.startswith("GPU.") for d in devices) else "cpu"
    if device.lower() == "gpu" or device.lower().startswith("gpu."):
        if device.upper() not in devices and not (device.lower() == "gpu" and any(d.startswith("GPU") for d in devices)):
            raise ValueError(f"device={device!r}: OpenVINO sees no such device here (it sees {devices}); use 'cpu'.")
        return device.lower()
    if device.startswith(("cuda", "mps")):
        raise ValueError(
            f"device={device!r} is not an OpenVINO device: OpenVINO runs on CPUs and Intel GPUs ('gpu'). For an "
            "NVIDIA GPU use backend='onnx' (with onnxruntime-gpu) or backend='torch'.")
    raise ValueError(f"device={device!r} is not available with backend='openvino'; use 'auto', 'cpu' or 'gpu[.N]'.")


def fallback_device(backend: str, device: str, owner: str) -> str:
    """``device`` if the backend can use it here, else the CPU with a warning (after unpickling)."""
    try:
        return resolve_device(backend, device)
    except (ValueError, ImportError):
        warn_cpu_fallback(owner, device, backend)
        return "cpu"


def check_precision(backend: str, precision: str, owner: str) -> None:
    """Refuse a precision ``backend`` does not offer, naming what would work."""
    if precision == "int8" and backend == "torch":
        fix = ("ClipEncoder runs on torch only: use precision='fp32', or 'bf16' on a CPU with native bf16"
               if owner == "ClipEncoder" else "Set backend='onnx' or backend='openvino'")
        raise ValueError(f"{owner}: precision='int8' needs backend='onnx' (ONNX Runtime's quantization) or "
                         f"backend='openvino' (NNCF); torch computes in fp32, bf16 or fp16. {fix}.")
    if backend == "onnx" and precision in ("bf16", "fp16"):
        raise ValueError(
            f"precision={precision!r} is not offered with backend='onnx': ONNX Runtime's CPU provider has no bf16 or "
            "fp16 arithmetic for these networks. Use precision='fp32' or 'int8', backend='openvino' (its inference "
            "precision hint), or backend='torch'.")


@dataclass(frozen=True)
class ExportSpec:
    """How to export one network: its torch module, example inputs and which axes vary."""

    module: torch.nn.Module  # takes the inputs positionally, returns a tensor or a tuple of tensors
    example: tuple  # one example tensor per input
    input_names: tuple
    output_names: tuple
    dynamic_axes: tuple  # per input, the axes whose size varies between calls (the batch, the tokens)


#: Bumped when what is exported for a payload changes, so older exports stop matching.
EXPORT_FORMAT = 2
MANIFEST = "manifest.json"


def export_key(backend: str, payload: dict) -> str:
    """Key of one export: the payload with torch's and the runtime's versions (an upgrade exports again)."""
    runtime = require(backend)
    return digest({"network": payload, "backend": backend, "runtime": f"{runtime.__name__}-{runtime.__version__}",
                   "torch": torch.__version__, "format": EXPORT_FORMAT})[:32]


def _model_file(backend: str, folder: Path) -> Path:
    return folder / ("model.onnx" if backend == "onnx" else "model.xml")


def _export(backend: str, spec: ExportSpec, target: Path) -> None:
    module = spec.module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters' tracer warnings concern control flow they handle
        if backend == "onnx":
            dynamic = tuple({axis: torch.export.Dim.DYNAMIC for axis in axes} for axes in spec.dynamic_axes)
            parameters = inspect.signature(module.forward).parameters.values()
            if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
                dynamic = (dynamic,)  # torch.export sees ``*inputs`` as one argument
            torch.onnx.export(module, spec.example, str(_model_file(backend, target)), dynamo=True,
                              input_names=list(spec.input_names), output_names=list(spec.output_names),
                              dynamic_shapes=dynamic, verbose=False, report=False)
        else:
            ov = require("openvino")
            with torch.no_grad():
                converted = ov.convert_model(module, example_input=spec.example)
            # Full float32 weights: the runtime's precision hint decides the arithmetic, not the file.
            ov.save_model(converted, str(_model_file(backend, target)), compress_to_fp16=False)


class ExportMismatchError(RuntimeError):
    """An export folder's files are not what its manifest or its key says."""


def _read_verified(backend: str, folder: Path, key: str) -> dict:
    """The export's files as bytes, each read once and checked against the manifest (no later swap)."""
    manifest_path = folder / MANIFEST
    try:
        check_private_file(manifest_path, "export manifest")
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportMismatchError(f"its manifest {manifest_path} is missing or unreadable ({exc})") from None
    if manifest.get("key") != key or manifest.get("format") != EXPORT_FORMAT:
        raise ExportMismatchError(f"its manifest was made for export {manifest.get('key')!r}, not {key!r}")
    if _model_file(backend, folder).name not in files:
        raise ExportMismatchError("its manifest lists no model file")
    contents = {}
    for name, expected in sorted(files.items()):
        path = folder / name
        if Path(name).name != name:
            raise ExportMismatchError(f"its manifest names a file outside the folder ({name!r})")
        try:
            check_private_file(path, "exported network file")
            data = path.read_bytes()
        except OSError as exc:
            raise ExportMismatchError(f"{path} cannot be read ({exc})") from None
        if sha256_hex(data) != expected:
            raise ExportMismatchError(f"{path} is not the file that was exported (its SHA-256 differs from the manifest)")
        contents[name] = data
    return contents


def _stored(backend: str, payload: dict, write) -> tuple[Path, dict, bool]:
    """The export ``payload`` keys, made by ``write(staging_folder)`` if absent or damaged (with a
    warning); returns its folder, its verified files and whether it was made now."""
    key = export_key(backend, payload)
    folder = private_folder(private_folder(exports_dir(), "export folder") / backend, "export folder") / key
    with _EXPORT_LOCK:
        if folder.exists():
            private_folder(folder, "export folder", create=False)
            try:
                return folder, _read_verified(backend, folder, key), False
            except ExportMismatchError as exc:
                warnings.warn(f"The exported network in {folder} does not match what was exported: {exc}. "
                              "Exporting it again (the files found there are not used).", UserWarning, stacklevel=4)
                shutil.rmtree(folder, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))  # mkdtemp: owner-only
        try:
            write(staging)
            files = {p.name: sha256_hex(p.read_bytes()) for p in sorted(staging.iterdir()) if p.is_file()}
            (staging / MANIFEST).write_text(json.dumps(
                {"key": key, "format": EXPORT_FORMAT, "backend": backend, "payload": payload, "files": files},
                indent=1, sort_keys=True))
            try:
                os.replace(staging, folder)  # atomic: another process sees all of it or none
            except OSError:
                if not (folder / MANIFEST).exists():  # not a concurrent export of the same key
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder, _read_verified(backend, folder, key), True


def exported_network(backend: str, payload: dict, build, *, device: str, precision: str, int8=None) -> Network:
    """The network ``payload`` describes, exported once (``build()`` gives the `ExportSpec`) and run by
    ``backend``; a folder whose files do not match their manifest is exported again, with a warning.

    ``int8``: ``(settings, calibration)`` for ``precision="int8"``: the float32 export, quantized by
    `sktransfer._quantize.quantize`, is an export of its own, keyed by the payload and the settings;
    ``calibration()`` gives the calibration inputs (checked by the caller), called only to quantize.
    """
    def export(staging):
        _export(backend, build(), staging)

    if int8 is None:
        folder, contents, exported = _stored(backend, payload, export)
    else:
        settings, calibration = int8

        def quantized(staging):
            _, fp32, _ = _stored(backend, payload, export)
            quantize(backend, settings, fp32, _model_file(backend, staging).name, calibration(), staging)

        folder, contents, exported = _stored(backend, {**payload, "int8": settings}, quantized)
    return Network(backend, folder, contents, device=device, precision=precision, exported=exported)


class Network:
    """An exported network loaded by its runtime; `run` takes NumPy inputs. One session or compiled model
    per thread count (runtimes fix their pool at load); ``exported``: not found from an earlier export."""

    def __init__(self, backend: str, folder: Path, contents: dict, *, device: str, precision: str,
                 exported: bool = False):
        self.backend, self.device, self.precision, self.exported = backend, device, precision, exported
        self.path = _model_file(backend, Path(folder))
        # The verified bytes, not the path: every later session is made from exactly what was checked.
        if backend == "onnx":
            self._source = contents[self.path.name]
            # model.onnx.data and other tensors stored beside the model, served from memory too.
            self._external = {name: np.frombuffer(data, dtype=np.uint8) for name, data in contents.items()
                              if name != self.path.name}
        else:
            weights = contents.get(self.path.with_suffix(".bin").name, b"")
            self._source = _openvino_core().read_model(contents[self.path.name], weights)
        # Per thread count: loaded runners, and (OpenVINO) idle infer requests.
        self._loaded, self._idle_requests, self._lock = {}, {}, threading.Lock()
        self._runner(None)  # load now: a broken file fails in fit, not in the middle of transform

    def _runner(self, n_threads):
        with self._lock:
            if n_threads not in self._loaded:
                self._loaded[n_threads] = self._load(n_threads)
            return self._loaded[n_threads]

    def _load(self, n_threads):
        if self.backend == "onnx":
            ort = require("onnx")
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if n_threads:
                options.intra_op_num_threads = n_threads
            # Idle pool threads sleep instead of spinning: the decoding thread needs those cycles
            # (398 hymenoptera photos on 2 cores: 80 img/s against 72 with spinning).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if self._external:
                names = list(self._external)
                options.add_external_initializers_from_files_in_memory(
                    names, [self._external[n] for n in names], [self._external[n].size for n in names])
            providers = ["CPUExecutionProvider"]
            if self.device.startswith("cuda"):
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(self.device.partition(":")[2] or 0)}))
            return ort.InferenceSession(self._source, options, providers=providers)
        config = {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if n_threads and self.device == "cpu":
            config["INFERENCE_NUM_THREADS"] = n_threads
        compiled = _openvino_core().compile_model(self._source, self.device.upper(), config)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        effective = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        if self.precision in ("bf16", "fp16") and effective != _OPENVINO_PRECISION[self.precision]:
            warnings.warn(
                f"OpenVINO runs this network in {effective} on {self.device.upper()}: the device has no "
                f"{self.precision} arithmetic, so precision={self.precision!r} gives float32 features (and speed) here.",
                UserWarning, stacklevel=2)
        return compiled

    def __del__(self):  # infer requests before the compiled models they were made from
        self.__dict__.get("_idle_requests", {}).clear()

    def run(self, inputs: list, n_threads=None) -> list:
        """The outputs for ``inputs`` (NumPy arrays, in the export's input order)."""
        runner = self._runner(n_threads)
        arrays = [np.ascontiguousarray(array) for array in inputs]
        if self.backend == "onnx":
            return runner.run(None, dict(zip([i.name for i in runner.get_inputs()], arrays)))
        # An infer request serves one call at a time: concurrent calls take one each from a pool
        # owned here, so requests live and die with their compiled model.
        with self._lock:
            idle = self._idle_requests.setdefault(n_threads, [])
            request = idle.pop() if idle else runner.create_infer_request()
        try:
            result = request.infer(arrays)
            return [np.array(result[output]) for output in runner.outputs]  # copies: the request reuses its buffers
        finally:
            with self._lock:
                idle.append(request)

    def __repr__(self):
        return f"Network(backend={self.backend!r}, device={self.device!r}, precision={self.precision!r}, path='{self.path}')"
