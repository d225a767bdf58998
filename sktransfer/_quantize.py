"""int8: a quantized copy of an exported network, and how close its vectors stay to float32's.

`recipe` says how a backend quantizes a kind of network (the settings enter the identity);
`quantize` writes the int8 files from the float32 export's verified bytes; `fidelity` compares
two sets of vectors row by row. The export folder, its key and its verification stay
`sktransfer._backends`' own.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from ._content import sha256_hex
from ._identity import ModelMismatchError
from ._runtime import optional_import

__all__ = ["CALIBRATION_ITEMS", "FIDELITY_ITEMS", "FIDELITY_WARNING", "calibration_digest", "check_recipe",
           "fidelity", "items_per_call", "quantize", "recipe"]

#: Fit items (distinct, chosen by a hash of their content) whose network inputs set a static quantization's
#: activation ranges. They are kept on the fitted encoder, so a pickle can quantize again elsewhere.
CALIBRATION_ITEMS = 64
#: Fit items, others than the calibration ones where there are enough, encoded by both networks at fit.
FIDELITY_ITEMS = 64
#: Below this mean cosine to float32's vectors, fit warns and names the alternatives.
FIDELITY_WARNING = 0.99


_CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def _version(module: str) -> str:
    # The module's own version: onnxruntime-gpu and other builds install the same module.
    return importlib.import_module(module).__version__


def recipe(backend: str, kind: str) -> dict:
    """How ``backend`` quantizes a ``kind`` ("text" or "image") network: settings that enter the identity.

    ONNX Runtime quantizes a transformer dynamically (int8 weights per channel, activation
    ranges per text: no calibration) and a CNN statically (QDQ, int8 weights per channel, uint8
    activations whose ranges come from calibration items, percentile). OpenVINO quantizes through
    NNCF, its own post-training tool, calibrated, with its transformer rules for texts and its full
    bias correction for CNNs. The versions of the quantizer and of what made the float32 graph it quantizes are part of it:
    another graph or tool may quantize other operations, or choose other ranges.
    """
    if backend == "onnx":
        versions = {"quantizer": f"onnxruntime-{_version('onnxruntime')}", "exporter": f"torch-{_version('torch')}",
                    "onnxscript": _version("onnxscript")}
        common = {"tool": versions["quantizer"], "versions": versions, "weights": "int8-per-channel"}
        if kind == "text":
            # Dynamic ranges are taken over all of one call's input: one text per call, so that a
            # vector is its own text's, whatever it was batched with (batched, a text's vector moved
            # with its batch-mates: cosine 0.950 between batch_size 32 and 1 on 64 SST-2 sentences).
            return {**common, "method": "dynamic", "ranges": "per item", "calibrated": False}
        # Percentile ranges (ONNX Runtime's 99.999th): MobileNetV2 on 200 hymenoptera photos, cosine
        # to fp32 mean 0.984 (min 0.957) against 0.980 (0.951) with min-max ranges (a probe).
        return {**common, "method": "static-qdq", "activations": "uint8", "calibrate": "percentile",
                "calibrated": True}
    if backend == "openvino":
        optional_import("nncf", "openvino", "precision='int8' with backend='openvino'")
        versions = {"quantizer": f"nncf-{_version('nncf')}", "exporter": f"torch-{_version('torch')}",
                    "converter": f"openvino-{_version('openvino')}"}
        settings = {"tool": versions["quantizer"], "versions": versions, "method": "nncf.quantize", "calibrated": True,
                    "model_type": "transformer" if kind == "text" else "default", "preset": "performance"}
        if kind == "image":
            # NNCF's full bias correction, not its fast one: MobileNetV2 on 64 hymenoptera photos held out
            # from calibration, cosine to fp32 min 0.9936 / mean 0.9973 against 0.9860 / 0.9966 (a probe).
            settings["bias_correction"] = "full"
        return settings
    raise ValueError(f"precision='int8' runs on backend='onnx' or backend='openvino', not {backend!r}.")


def items_per_call(settings: dict | None) -> int | None:
    """The most items one forward pass may hold for the int8 ``settings`` (None: any number)."""
    return 1 if settings is not None and settings.get("ranges") == "per item" else None


def check_recipe(settings: dict, owner: str) -> None:
    """Refuse to quantize again with other versions than the identity names (other int8 networks)."""
    backend = "openvino" if settings["tool"].startswith("nncf-") else "onnx"
    installed = recipe(backend, "text")["versions"]
    for role, wanted in settings["versions"].items():
        if installed.get(role) != wanted:
            name, _, version = wanted.rpartition("-") if "-" in wanted else (role, "", wanted)
            raise ModelMismatchError(
                f"{owner} was fitted with precision='int8' from {wanted} ({role}), and this environment has "
                f"{installed.get(role)}: its int8 network would be made differently, so its vectors (and cache "
                f"entries) would not be the fitted ones. Install {name}=={version} here, or fit the encoder again.")


def calibration_digest(batches: list) -> str:
    """Content hash of calibration inputs (each a tuple of arrays): shapes, dtypes and bytes."""
    parts = []
    for batch in batches:
        for array in batch:
            array = np.ascontiguousarray(array)
            parts.append(f"{array.dtype.str}{array.shape}".encode())
            parts.append(array.tobytes())
    return sha256_hex(b"\0".join(parts))


def quantize(backend: str, settings: dict, fp32_contents: dict, model_file: str, calibration: list | None,
             target: Path) -> None:
    """Write the int8 network ``settings`` describe into ``target``, from the float32 export's files.

    ``calibration``: network inputs of one item each (tuples of arrays with a batch axis of 1, in
    the network's input order), or None for a dynamic quantization.
    """
    with tempfile.TemporaryDirectory(prefix="sktransfer-fp32-") as scratch:
        scratch = Path(scratch)
        for name, data in fp32_contents.items():
            (scratch / name).write_bytes(data)
        source = scratch / model_file
        # The quantizers print progress and log advice to the root logger (no setting turns either
        # off): not the user's business at fit. A failure still raises with its own message.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if backend == "onnx":
                    _quantize_onnx(settings, source, calibration, target / model_file, scratch)
                else:
                    _quantize_openvino(settings, source, calibration, target / model_file)
        finally:
            logging.disable(previous)


def _quantize_onnx(settings, source: Path, calibration, output: Path, scratch: Path) -> None:
    quantization = optional_import("onnxruntime.quantization", "onnx", "precision='int8' with backend='onnx'")
    onnx = optional_import("onnx", "onnx", "precision='int8' with backend='onnx'")
    if settings["method"] == "dynamic":
        quantization.quantize_dynamic(source, output, per_channel=True, weight_type=quantization.QuantType.QInt8)
        return
    # Static: batch-norm folded and shapes inferred first, as ONNX Runtime's quantization guide does,
    # on a one-file copy (the pre-processor copies a path without the tensors stored beside it).
    single, prepared = scratch / "single.onnx", scratch / "prepared.onnx"
    onnx.save(onnx.load(str(source)), str(single))
    quantization.quant_pre_process(str(single), str(prepared), skip_symbolic_shape=True)

    input_names = [i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._batches = iter(calibration)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else dict(zip(input_names, batch))

    quantization.quantize_static(
        prepared, output, Reader(), quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
        calibrate_method=getattr(quantization.CalibrationMethod, _CALIBRATION_METHODS[settings["calibrate"]]))


def _quantize_openvino(settings, source: Path, calibration, output: Path) -> None:
    ov = optional_import("openvino", "openvino", "precision='int8' with backend='openvino'")
    nncf = optional_import("nncf", "openvino", "precision='int8' with backend='openvino'")
    model = ov.Core().read_model(str(source))
    # One item per calibration sample, as NNCF expects (no padding tokens in the ranges).
    options = {"preset": getattr(nncf.QuantizationPreset, settings["preset"].upper()), "subset_size": len(calibration)}
    if settings["model_type"] == "transformer":
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if settings.get("bias_correction") == "full":
        options["fast_bias_correction"] = False
    quantized = nncf.quantize(model, nncf.Dataset([tuple(batch) for batch in calibration]), **options)
    ov.save_model(quantized, str(output), compress_to_fp16=False)


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Row-wise cosine of ``candidate`` to ``reference``: min, mean and the row count (finite rows only)."""
    keep = np.isfinite(reference).all(1) & np.isfinite(candidate).all(1)
    a, b = reference[keep].astype(np.float64), candidate[keep].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
    if not cosines.size:
        return {"min_cosine": float("nan"), "mean_cosine": float("nan"), "n_items": 0}
    return {"min_cosine": round(float(cosines.min()), 6), "mean_cosine": round(float(cosines.mean()), 6),
            "n_items": int(cosines.size)}
