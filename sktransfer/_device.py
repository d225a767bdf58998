"""Device selection and mixed-precision contexts shared by every encoder."""

from __future__ import annotations

import contextlib
import warnings

import torch

#: Precision names accepted by the ``precision`` parameter and the autocast dtype they select.
#: int8 is a quantized export's (ONNX Runtime, OpenVINO): torch's share of the work stays float32.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}


def native_bf16() -> bool | None:
    """Whether this CPU has bf16 instructions (AVX-512 BF16, AMX, Arm BF16); None where it cannot be told."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = set(info.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_slow_bf16(owner: str, device: torch.device, precision: str) -> None:
    """Warn at fit when torch would run bf16 on a CPU without bf16 instructions (several times slower than fp32)."""
    if precision != "bf16" or device.type != "cpu" or native_bf16() is not False:
        return
    warnings.warn(
        f"{owner}(precision='bf16') runs on this CPU's torch, and the CPU has no bf16 instructions (no avx512_bf16 "
        "or amx_bf16 flag): torch emulates bf16 there, which this project measured at 7x (TextEncoder) to 12x "
        "(ImageEncoder) slower than fp32 on an AVX2 CPU (docs/benchmarks.md). Use precision='fp32'; for more "
        "speed backend='onnx' (precision 'fp32' or 'int8'). `sktransfer speed` measures each option here.",
        UserWarning, stacklevel=4)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_available(device: torch.device) -> bool:
    """Return whether ``device`` can be used in this process."""
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    return device.type == "cpu" or (device.type == "mps" and _mps_available())


def resolve_device(device: str) -> torch.device:
    """Turn the ``device`` parameter into a concrete, available `torch.device`.

    ``"auto"`` picks CUDA, then MPS, then the CPU. An explicit device that this machine does not
    have raises a ``ValueError`` that says so, rather than failing deep inside PyTorch.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") \
            from exc
    if not device_available(resolved):
        raise ValueError(f"device={device!r} is not available on this machine (torch.cuda.is_available()="
                         f"{torch.cuda.is_available()}, mps={_mps_available()}). Use device='auto' or 'cpu'.")
    return resolved


def fallback_device(device: torch.device, owner: str) -> torch.device:
    """Return ``device`` if usable here, else the CPU with a warning.

    Used when a fitted estimator is unpickled on another machine: the weights are identical on
    every device, so a model fitted on a GPU can still transform on a CPU-only machine.
    """
    if device_available(device):
        return device
    warn_cpu_fallback(owner, device)
    return torch.device("cpu")


def warn_cpu_fallback(owner: str, device, backend: str | None = None) -> None:
    """Warn that ``owner``, fitted on ``device`` (of ``backend``) this machine lacks, encodes on the CPU."""
    fitted = f"device '{device}'" + (f" with backend={backend!r}" if backend else "")
    warnings.warn(f"{owner} was fitted on {fitted}, which this machine does not have; encoding on the CPU instead "
                  f"(same {'network' if backend else 'weights'}, same features up to float noise).", RuntimeWarning,
                  stacklevel=4)


def autocast(device: torch.device, precision: str):
    """Context that runs the forward pass in ``precision`` on ``device``.

    fp32 needs no context. bf16 and fp16 use `torch.autocast`, which keeps the weights in
    float32 and casts per operation. (TextEncoder's bf16 loads bfloat16 weights instead and skips
    this context; the model registry keys models by precision either way.)
    """
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
