"""Issue 23: what identifies a vector must come from content, never from what is cheap to observe.

Each test reproduces one case of issue 23's families as it was on main before the fix (each
failed there): (1) file content keys and model hashes memoised by (path, size, mtime); (2) user
modules told apart only by their state_dict, repr and plain attributes; (3) preprocessing
callables identified by their output on one 320x256 probe image; (4) exported networks and
cache folders trusted as found on disk; (5) list parameters mutated in place after fit. The
``test_no_spurious_*`` tests check the other direction: identical objects keep one fingerprint.
"""

import copy
import json
import os
import re
import shutil
import struct
import threading
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from identity_helpers import changed, image_encoder, tensor_preprocess, textured, use_cls_pooling
from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder, model_registry
from sktransfer._images import content_key

TEXTS = ["a gripping film", "dull and far too long"]


def module_encoder(module, preprocess=None, **params):
    return ImageEncoder(module, preprocess=preprocess or tensor_preprocess(32), device="cpu", num_workers=0, **params)


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def write_bmp(path, seed, keep_times_of=None):
    """A BMP of fixed dimensions (so of fixed size); optionally with the times of another file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    textured(seed=seed).save(path, format="BMP")
    if keep_times_of is not None:
        os.utime(path, ns=(keep_times_of.st_atime_ns, keep_times_of.st_mtime_ns))
    return path


def sentence_transformer(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS)


# ---------------------------------------------------------------------- 1. file memo keys
@pytest.fixture(autouse=True)
def memoise_at_once(monkeypatch):
    """Memoise even files written a moment ago, so that the stat signature alone must catch each change.

    (Without this, the two-second window in which a new file is never memoised would hide a
    signature that misses a change; that window has its own test in test_content.py.)
    """
    monkeypatch.setattr("sktransfer._content.RACY_NS", -10**18)


def test_family1_relative_path_after_chdir_is_keyed_by_the_file_it_now_names(tmp_path, monkeypatch):
    # Two export folders with the same relative names, sizes and times (cp -p, rsync -a, unzip).
    first = write_bmp(tmp_path / "A" / "frames" / "0001.bmp", seed=1)
    write_bmp(tmp_path / "B" / "frames" / "0001.bmp", seed=2, keep_times_of=first.stat())
    encoder = image_encoder(cache=EmbeddingCache(tmp_path / "cache")).fit(["frames/0001.bmp"])
    monkeypatch.chdir(tmp_path / "A")
    in_a = encoder.transform(["frames/0001.bmp"])
    monkeypatch.chdir(tmp_path / "B")
    in_b = encoder.transform(["frames/0001.bmp"])
    own = clone(encoder).set_params(cache=None).fit(["x"]).transform(["frames/0001.bmp"])
    np.testing.assert_allclose(in_b, own, atol=1e-6)
    assert changed(in_b, in_a)


@pytest.mark.parametrize("cached", [True, False], ids=["with-cache", "memo-only"])
def test_family1_photo_replaced_with_equal_size_and_kept_mtime_is_read_again(tmp_path, cached):
    photo = write_bmp(tmp_path / "photo.bmp", seed=3)
    before = photo.stat()
    cache = EmbeddingCache(tmp_path / "cache") if cached else None
    encoder = image_encoder(cache=cache).fit([str(photo)])
    old_key, old = content_key(str(photo)), encoder.transform([str(photo)])
    write_bmp(photo, seed=4, keep_times_of=before)  # new pixels, same size, same mtime
    assert photo.stat().st_size == before.st_size and photo.stat().st_mtime_ns == before.st_mtime_ns
    new = encoder.transform([str(photo)])
    np.testing.assert_allclose(new, image_encoder().fit(["x"]).transform([photo.read_bytes()]), atol=1e-6)
    assert changed(new, old)
    assert content_key(str(photo)) == content_key(photo.read_bytes()) != old_key  # the memo serves no stale key


def scale_tensor_in_place(folder, name, factor=0.5):
    """Scale one float32 tensor of model.safetensors in place: same size, mtime restored."""
    path = folder / "model.safetensors"
    stat = path.stat()
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        begin, end = json.loads(handle.read(length))[name]["data_offsets"]
        handle.seek(8 + length + begin)
        values = np.frombuffer(handle.read(end - begin), dtype="<f4") * factor
        handle.seek(8 + length + begin)
        handle.write(values.astype("<f4").tobytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def test_family1_weights_edited_in_place_with_size_and_mtime_kept_are_a_new_model(tmp_path, minilm_copy):
    cache = EmbeddingCache(tmp_path / "cache")
    before = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(TEXTS)
    old = before.transform(TEXTS)
    scale_tensor_in_place(minilm_copy, "encoder.layer.5.output.dense.weight")
    after = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(TEXTS)
    assert after.identity_.fingerprint != before.identity_.fingerprint
    new = after.transform(TEXTS)
    assert changed(new, old)
    np.testing.assert_allclose(new, sentence_transformer(minilm_copy), atol=1e-5)


def test_family1_symlinked_pooling_folder_edited_is_a_new_model(tmp_path, minilm_copy):
    elsewhere = tmp_path / "pooling_elsewhere"
    shutil.move(minilm_copy / "1_Pooling", elsewhere)
    (minilm_copy / "1_Pooling").symlink_to(elsewhere, target_is_directory=True)
    cache = EmbeddingCache(tmp_path / "cache")
    before = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(TEXTS)
    old = before.transform(TEXTS)
    use_cls_pooling(minilm_copy)  # edits the linked file
    after = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(TEXTS)
    assert after.identity_.fingerprint != before.identity_.fingerprint
    new = after.transform(TEXTS)
    assert changed(new, old)
    np.testing.assert_allclose(new, sentence_transformer(minilm_copy), atol=1e-5)


# ---------------------------------------------------------------------- 2. user modules
class Tiny(nn.Module):
    """A convolution, then state that forward reads: a function, a dict, two kinds of tensors."""

    def __init__(self, act=torch.relu, scale=1.0, offset=0.0, bias=0.0, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = act
        self.cfg = {"scale": scale}
        self.register_buffer("offset", torch.full((4,), offset), persistent=False)
        self.bias_plain = torch.full((4,), bias)  # a plain attribute, not registered

    def forward(self, x):
        return (self.act(self.conv(x)) * self.cfg["scale"]).mean((2, 3)) + self.offset + self.bias_plain


@pytest.mark.parametrize("difference", [{"act": torch.tanh}, {"scale": 2.0}, {"offset": 1.0}, {"bias": 1.0}],
                         ids=["function-attribute", "dict-attribute", "non-persistent-buffer", "plain-tensor"])
def test_family2_modules_differing_only_in_state_forward_reads_get_their_own_vectors(tmp_path, difference):
    first, second = Tiny(), Tiny(**difference)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)  # the state_dicts agree: only the one difference remains
    cache, images = EmbeddingCache(tmp_path / "cache"), [textured(seed=5), textured(seed=6)]
    model_registry.clear()
    a = module_encoder(first, cache=cache).fit(images)
    b = module_encoder(second, cache=cache).fit(images)
    assert a.identity_.fingerprint != b.identity_.fingerprint
    out_a, out_b = a.transform(images), b.transform(images)
    with torch.inference_mode():
        expected = second(torch.stack([tensor_preprocess(32)(image) for image in images])).numpy()
    np.testing.assert_allclose(out_b, expected, atol=1e-5)
    assert changed(out_a, out_b)


def test_family2_a_module_that_cannot_be_described_is_refused_unless_it_states_an_identity():
    module = Tiny()
    module.lock = threading.Lock()  # not used by forward, but nothing says so
    with pytest.raises(TypeError, match=r"(?s)lock.*__sktransfer_identity__") as raised:
        module_encoder(module).fit([textured()])
    from sktransfer import IdentityError

    assert isinstance(raised.value, IdentityError)
    module.__sktransfer_identity__ = "my-net-v1"
    other = Tiny()
    other.lock, other.__sktransfer_identity__ = threading.Lock(), "my-net-v2"
    v1 = module_encoder(module).fit([textured()]).identity_.fingerprint
    assert module_encoder(other).fit([textured()]).identity_.fingerprint != v1


# ---------------------------------------------------------------------- 3. preprocessing callables
def inverting_below(threshold):
    """Resize to 32x32; invert the pixels of images narrower than ``threshold`` (never the probe)."""

    def preprocess(image):
        pixels = np.asarray(image.resize((32, 32)), dtype=np.float32) / 255.0
        if image.width < threshold:
            pixels = 1.0 - pixels
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    return preprocess


def test_family3_closures_that_agree_on_the_probe_image_are_told_apart(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    cache, images = EmbeddingCache(tmp_path / "cache"), [textured((64, 64), seed=7), textured((64, 64), seed=8)]
    a = module_encoder(net, inverting_below(100), cache=cache).fit(images)
    b = module_encoder(net, inverting_below(50), cache=cache).fit(images)
    assert a.identity_.fingerprint != b.identity_.fingerprint
    out_a, out_b = a.transform(images), b.transform(images)
    np.testing.assert_allclose(out_b, clone(b).set_params(cache=None).fit(images).transform(images), atol=1e-6)
    assert changed(out_a, out_b)


def test_family3_compose_mutated_in_place_after_fit_needs_a_refit(tmp_path):
    from torchvision import transforms as T

    compose = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    images = [textured(seed=9)]
    encoder = module_encoder(nn.Conv2d(3, 4, 3), compose, cache=EmbeddingCache(tmp_path / "cache")).fit(images)
    encoder.transform(images)
    fitted = encoder.identity_.fingerprint
    compose.transforms[0] = T.Resize(64)
    with pytest.raises(ValueError, match="after fit"):
        encoder.transform(images)
    assert encoder.fit(images).identity_.fingerprint != fitted


SETTINGS = {"threshold": 100}


def test_family3_a_changed_global_or_closure_value_is_a_new_fingerprint():
    def preprocess(image):  # reads a module-level dict
        return inverting_below(SETTINGS["threshold"])(image)

    net, images = nn.Conv2d(3, 4, 3), [textured((64, 64))]
    before = module_encoder(net, preprocess).fit(images).identity_.fingerprint
    SETTINGS["threshold"] = 50
    try:
        assert module_encoder(net, preprocess).fit(images).identity_.fingerprint != before
    finally:
        SETTINGS["threshold"] = 100
    assert (module_encoder(net, inverting_below(1000)).fit(images).identity_.fingerprint
            != module_encoder(net, inverting_below(10_000)).fit(images).identity_.fingerprint)


def test_no_spurious_change_identical_objects_share_one_fingerprint():
    from torchvision import transforms as T

    def compose():
        return T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])

    net, images = Tiny(), [textured()]
    assert (module_encoder(net, compose()).fit(images).identity_.fingerprint
            == module_encoder(net, compose()).fit(images).identity_.fingerprint)
    fingerprints = {module_encoder(m).fit(images).identity_.fingerprint for m in (net, net, Tiny(), copy.deepcopy(net))}
    assert len(fingerprints) == 1


# ---------------------------------------------------------------------- 4. exports and folders
def backend_encoder(backend, seed=0):
    torch.manual_seed(seed)
    return module_encoder(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), backend=backend)


def only_export(root, backend, name):
    (found,) = (root / backend).glob(f"*/{name}")
    return found


def test_family4_a_planted_onnx_export_is_not_run(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    images = [textured(seed=10), textured(seed=11)]
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "planted"))
    planted = backend_encoder("onnx", seed=1).fit(images).transform(images)  # another network, same shapes
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "exports"))
    model_registry.clear()
    expected = backend_encoder("torch").fit(images).transform(images)
    backend_encoder("onnx").fit(images)
    shutil.copyfile(only_export(tmp_path / "planted", "onnx", "model.onnx"),
                    only_export(tmp_path / "exports", "onnx", "model.onnx"))
    model_registry.clear()
    with pytest.warns(UserWarning, match="export"):
        encoder = backend_encoder("onnx").fit(images)
    assert changed(planted, expected, atol=1e-3)
    out = encoder.transform(images)
    assert cosines(out, expected).min() > 0.999
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)  # ReLU features: cosines alone are lax


def test_family4_openvino_weights_corrupted_in_place_are_not_run(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    images = [textured(seed=12), textured(seed=13)]
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "exports"))
    model_registry.clear()
    expected = backend_encoder("torch").fit(images).transform(images)
    backend_encoder("openvino").fit(images)
    weights = only_export(tmp_path / "exports", "openvino", "model.bin")
    stat, data = weights.stat(), bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x20 for b in data[middle:middle + 64])  # bit rot: same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    model_registry.clear()
    with pytest.warns(UserWarning, match="export"):
        encoder = backend_encoder("openvino").fit(images)
    out = encoder.transform(images)
    assert cosines(out, expected).min() > 0.999
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("unsafe", ["world-writable", "other-owner"])
def test_family4_an_unsafe_export_folder_is_refused(tmp_path, monkeypatch, unsafe):
    pytest.importorskip("openvino")
    folder = tmp_path / "exports"
    folder.mkdir(mode=0o700)
    if unsafe == "world-writable":
        os.chmod(folder, 0o777)
    else:
        os.chown(folder, 12345, 12345)
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(folder))
    model_registry.clear()
    with pytest.raises(PermissionError, match=re.escape(str(folder))) as raised:
        backend_encoder("openvino").fit([textured()])
    from sktransfer import UnsafeFolderError

    assert isinstance(raised.value, UnsafeFolderError)


def test_family4_a_default_export_folder_is_owner_only(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.delenv("SKTRANSFER_EXPORTS")
    monkeypatch.setenv("SKTRANSFER_HOME", str(tmp_path / "home"))
    model_registry.clear()
    backend_encoder("openvino").fit([textured()])
    assert (tmp_path / "home" / "exports").stat().st_mode & 0o777 == 0o700


def test_family4_a_world_writable_cache_folder_is_refused_and_a_new_one_is_owner_only(tmp_path):
    folder = tmp_path / "shared-cache"
    folder.mkdir()
    os.chmod(folder, 0o777)
    encoder = module_encoder(Tiny(), cache=EmbeddingCache(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refusal, not a cache fault that encodes without the cache
        with pytest.raises(PermissionError, match=re.escape(str(folder))) as raised:
            encoder.fit([textured()]).transform([textured()])
    from sktransfer import UnsafeFolderError

    assert isinstance(raised.value, UnsafeFolderError)
    fresh = tmp_path / "new-cache"
    encoder.set_params(cache=EmbeddingCache(fresh)).fit([textured()]).transform([textured()])
    assert fresh.stat().st_mode & 0o777 == 0o700


# ---------------------------------------------------------------------- 5. mutable parameter values
def test_family5_a_text_layer_list_appended_to_after_fit_needs_a_refit(minilm_copy):
    layers = [-1]
    encoder = TextEncoder(model=str(minilm_copy), layers=layers, device="cpu").fit(TEXTS)
    encoder.transform(TEXTS)
    layers.append(-2)
    with pytest.raises(ValueError, match="after fit"):
        encoder.transform(TEXTS)
    layers.pop()
    encoder.transform(TEXTS)  # unchanged again
    encoder.set_params(layers=[-1]).transform(TEXTS)  # an equal new list


def test_family5_an_image_layer_list_appended_to_after_fit_needs_a_refit():
    layer = ["features.18"]
    encoder = image_encoder(layer=layer).fit([textured()])
    encoder.transform([textured()])
    layer.append("features.16.add")
    with pytest.raises(ValueError, match="after fit"):
        encoder.transform([textured()])
    layer.pop()
    encoder.transform([textured()])
    encoder.set_params(layer=["features.18"]).transform([textured()])


# ---------------------------------------------------------------------- variants from the hostile review
class SizedResize:
    """A picklable preprocess whose size attribute is the very tuple of its default."""

    def __init__(self, size=(32, 32)):
        self.size = size

    def __call__(self, image):
        pixels = np.asarray(image.resize(self.size), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def test_user_code_reached_through_a_module_object_counts(tmp_path, monkeypatch):
    """``import helpers; helpers.act(x)``: what the code reads from your own module is part of the identity."""
    import importlib
    import sys

    from sktransfer._content import object_digest

    (tmp_path / "st_helpers_mod.py").write_text("import torch\ndef act(x):\n    return torch.relu(x)\nSCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("st_helpers_mod")

    def forward(x):
        return helpers.act(x) * helpers.SCALE

    before = object_digest(forward)
    helpers.SCALE = 3.0
    assert object_digest(forward) != before
    helpers.SCALE = 1.0
    helpers.act = lambda x: torch.tanh(x)
    assert object_digest(forward) != before
    sys.modules.pop("st_helpers_mod", None)


def test_container_subclasses_count_their_class_and_attributes():
    import collections

    from sktransfer._content import object_digest

    class Steps(list):
        def __call__(self, image):
            return image * self.k

    steps = Steps([1, 2])
    steps.k = 1
    before = object_digest(steps)
    steps.k = 2
    assert object_digest(steps) != before
    table = collections.defaultdict(int)
    other = collections.defaultdict(float)
    assert object_digest(table) != object_digest(other)


def test_state_left_out_of_the_pickle_still_counts_and_enums_count_their_value():
    import enum

    from sktransfer._content import object_digest

    class Pre:
        def __init__(self, k):
            self.size, self.k, self.lock = 32, k, threading.Lock()

        def __getstate__(self):
            return {"size": self.size}

        def __call__(self, image):
            return image * self.k

    assert object_digest(Pre(1)) != object_digest(Pre(2))  # and the lock left out is no error
    first = enum.Enum("Mode", {"A": 1.0})
    second = enum.Enum("Mode", {"A": 2.0})
    assert object_digest(first.A) != object_digest(second.A)


def test_process_wide_module_hooks_count_and_hook_handles_do_not():
    from torch.nn.modules.module import register_module_forward_hook

    from sktransfer._content import object_digest

    def twice(module, args, output):
        return output * 2

    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())
    a.register_forward_hook(twice)
    b.register_forward_hook(twice)  # another handle number, the same hook
    assert object_digest(a) == object_digest(b)
    before = object_digest(a)
    handle = register_module_forward_hook(twice)
    try:
        assert object_digest(a) != before
    finally:
        handle.remove()


def test_attribute_names_are_not_read_as_globals_and_sharing_does_not_change_a_digest():
    import pickle

    from sktransfer._content import object_digest

    pre = SizedResize()
    globals()["size"] = threading.Lock()  # a global named like the attribute: not read by the code
    try:
        digest = object_digest(pre)
        assert object_digest(pickle.loads(pickle.dumps(pre))) == digest  # the copy shares nothing
    finally:
        del globals()["size"]


def test_an_unpickled_encoder_with_a_tuple_default_transforms(tmp_path):
    import pickle

    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d((2, 3)))
    encoder = module_encoder(network, SizedResize()).fit([textured()])
    expected = encoder.transform([textured()])
    np.testing.assert_allclose(pickle.loads(pickle.dumps(encoder)).transform([textured()]), expected, atol=1e-6)
