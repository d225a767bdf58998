"""Where models come from: a path, the sktransfer model directory (`models_dir`), the Hugging Face
cache, then the hub (`resolve_text_model`); the first three never touch the network. When nothing
resolves, `ModelNotFoundError` names the model and the remedies. docs/offline_models.md has details.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["ModelNotFoundError", "home_folder", "models_dir", "resolve_text_model", "sktransfer_home"]


class ModelNotFoundError(OSError):
    """A model name resolved to nothing on this machine and could not be downloaded."""


def sktransfer_home() -> Path:
    """Root of sktransfer's on-disk state: ``$SKTRANSFER_HOME`` or ``~/.cache/sktransfer``."""
    return Path(os.environ.get("SKTRANSFER_HOME", Path.home() / ".cache" / "sktransfer")).expanduser()


def home_folder(variable: str, name: str) -> Path:
    """``$<variable>`` where it is set, else ``<sktransfer home>/<name>``."""
    env = os.environ.get(variable)
    return Path(env).expanduser() if env else sktransfer_home() / name


def models_dir() -> Path:
    """Folder consulted by name before any hub: ``$SKTRANSFER_MODELS`` or ``<home>/models``."""
    return home_folder("SKTRANSFER_MODELS", "models")


def _hub_repo_ids(name: str) -> list[str]:
    # sentence-transformers treats a bare name as an alias of its own organisation's model.
    return [name] if "/" in name else [f"sentence-transformers/{name}", name]


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found(name: str, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"Model {name!r} could not be resolved: {reason}. Remedies: (1) give this machine network "
        f"access to the Hugging Face hub (and unset HF_HUB_OFFLINE) so the model downloads once, "
        f"or (2) pass a local model folder, e.g. model='/path/to/{name.split('/')[-1]}', or place "
        f"that folder at {models_dir() / _hub_repo_ids(name)[0]}."
    )


def resolve_text_model(name: str, *, download: bool = True) -> str:
    """Return a local folder for the sentence-transformers model ``name``.

    Parameters
    ----------
    name : str
        A local path, a hub id (``"org/model"``) or a sentence-transformers short name.
    download : bool, default=True
        Whether to fall back to downloading from the hub when nothing local matches.

    Returns
    -------
    path : str
        Absolute path of a folder that ``SentenceTransformer`` loads without network access.

    Raises
    ------
    ModelNotFoundError
        If the name resolves to no local folder and the hub is offline or unreachable.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.is_absolute() or name.startswith((".", "~")):
        raise ModelNotFoundError(f"Model folder {name!r} does not exist.")
    markers = ("modules.json", "config.json", "config_sentence_transformers.json")
    for candidate in dict.fromkeys(models_dir() / repo_id for repo_id in [name, *_hub_repo_ids(name)]):
        if candidate.is_dir() and any((candidate / marker).exists() for marker in markers):
            return str(candidate.resolve())

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for repo_id in _hub_repo_ids(name):
        try:
            return snapshot_download(repo_id, local_files_only=True)
        except (LocalEntryNotFoundError, ValueError):
            continue

    if not download:
        raise _not_found(name, "no local folder or cached snapshot")
    if _hub_offline():
        raise _not_found(name, "no local folder or cached snapshot, and HF_HUB_OFFLINE is set")
    if not _hub_reachable():
        raise _not_found(name, "no local folder or cached snapshot, and the hub is unreachable")
    errors = []
    for repo_id in _hub_repo_ids(name):
        try:
            return snapshot_download(repo_id)
        except Exception as exc:  # repository missing, gated, network dropped: try the next id
            errors.append(f"{repo_id}: {type(exc).__name__}")
    raise _not_found(name, "the hub has no such model (" + "; ".join(errors) + ")")


def available_text_models() -> list[str]:
    """Names of the sentence-transformers models in `models_dir` (resolvable offline)."""
    root = models_dir()
    return [found.parent.relative_to(root).as_posix() for found in sorted(root.glob("**/modules.json"))]
