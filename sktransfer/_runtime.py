"""How work runs, one helper per mechanism for every encoder and tuner: optional imports, bounded
worker threads, DataLoaders, torch's thread count and Hugging Face's progress bars."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterable, Iterator

import torch

__all__ = ["data_loader", "default_num_workers", "optional_import", "ordered_map", "quiet_hugging_face",
           "torch_threads"]


def optional_import(module: str, extra: str, needed_for: str):
    """Import ``module``, or raise an ``ImportError`` that names what needs it and the extra to install.

    ``needed_for`` completes "... needs <package>": ``'backend="onnx"'``, ``"sktransfer.dask"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise ImportError(f'{needed_for} needs the {missing} package, which is not installed here: '
                          f'pip install "sktransfer[{extra}]"') from exc


def ordered_map(function: Callable, items: Iterable, *, workers: int, ahead: int | None = None,
                initializer: Callable | None = None, initargs: tuple = (), name: str = "sktransfer") -> Iterator:
    """``map(function, items)`` on ``workers`` threads in input order, at most ``ahead`` (default
    ``2 * workers``) calls pending, so memory stays flat; ``ahead=0`` runs in the caller's thread.
    Closing the generator cancels what has not started and waits for the rest."""
    ahead = 2 * workers if ahead is None else ahead
    if ahead == 0:
        yield from map(function, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=initializer, initargs=initargs)
    try:
        pending = collections.deque()
        for item in items:
            # Each call runs in the caller's context, so context-local settings (the CLI's flag
            # style of advice) hold in the workers too.
            pending.append(pool.submit(contextvars.copy_context().run, function, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (``None``: unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def quiet_hugging_face():
    """No per-file progress bars from transformers while loading or saving (noise in a grid search);
    the user's setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def default_num_workers(device: torch.device) -> int:
    """Decoding processes: with an accelerator every core but one (at most 8); on a CPU the network
    already uses every core, so only larger machines get some (2 cores, 398 photos: bf16 5.7 s
    with 0 workers vs 6.0 s with 1; fp32 8.9 s vs 8.2 s)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type != "cpu":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 2 else min(4, max(1, cores // 4))


def _one_thread(_):
    # Each decoding process needs one thread; the user's process keeps its own setting.
    torch.set_num_threads(1)


def data_loader(dataset, *, batch_size: int, num_workers, device: torch.device, collate_fn=None,
                shuffle: bool = False, generator=None) -> torch.utils.data.DataLoader:
    """The one DataLoader set-up: ``num_workers="auto"`` resolved for the device (no processes for a
    single batch), single-threaded workers, a bounded read-ahead, pinned memory for CUDA."""
    if num_workers == "auto":
        num_workers = 0 if len(dataset) <= batch_size else default_num_workers(device)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=device.type == "cuda",
        prefetch_factor=2 if num_workers else None,  # bounded read-ahead: memory stays flat
        worker_init_fn=_one_thread if num_workers else None,
    )
