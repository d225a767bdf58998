"""backend="onnx" and backend="openvino": the same features as torch, exported once, never pickled.

Each backend runs an export of the very network the torch backend runs (same resolved weights,
layers, preprocessing, tokenizer and pooling), so at fp32 its features must match torch's to a
cosine of 0.9999. The export is made once per identity and runtime version, into the folder
conftest.py points ``SKTRANSFER_EXPORTS`` at; a loaded network says whether it was exported for it.
"""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from sktransfer import FineTuningClassifier, ImageEncoder, TextEncoder, _backends, model_registry

RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec(module) is None,
    reason=f"the {name} extra is not installed: pip install 'sktransfer[{name}]'")) for name, module in RUNTIMES.items()]


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def image_encoder(**params):
    return ImageEncoder(**{"weights": "IMAGENET1K_V1", "device": "cpu", "num_workers": 0, "batch_size": 4,
                           **params})


@pytest.fixture(scope="module")
def photos(hymenoptera):
    # Photos and one in-memory array: both go through the same decoding as with torch.
    rng = np.random.default_rng(0)
    return hymenoptera["val"]["ants"][:5] + hymenoptera["val"]["bees"][:4] + [
        rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)]


# Every backend on the defaults; the other settings on OpenVINO only (its conversion takes
# seconds, ONNX's export about ten): they concern what sktransfer does around the runtime.
def _cases(variants):
    cases = [pytest.param(b.values[0], {}, marks=b.marks, id=f"{b.values[0]}-defaults") for b in BACKENDS]
    openvino = BACKENDS[1]
    return cases + [pytest.param("openvino", params, marks=openvino.marks, id=f"openvino-{name}")
                    for name, params in variants.items()]


@pytest.mark.parametrize(("backend", "params"), _cases(
    {"two layers, avgmax": {"layer": ["features.16.add", "features.18"], "pooling": "avgmax"}}))
def test_image_features_match_torch(backend, params, photos):
    reference = image_encoder(**params).fit(photos)
    encoder = image_encoder(backend=backend, **params).fit(photos)
    torch_out, out = reference.transform(photos), encoder.transform(photos)
    assert out.shape == torch_out.shape and out.dtype == np.float32
    assert cosines(out, torch_out).min() >= 0.9999
    assert encoder.identity_.fingerprint != reference.identity_.fingerprint
    assert encoder.identity_.settings["backend"] == backend and "backend" not in reference.identity_.settings
    # Batch size and the decoding thread change nothing beyond float noise.
    np.testing.assert_allclose(clone(encoder).set_params(batch_size=3).fit(photos).transform(photos), out, atol=1e-5)


@pytest.mark.parametrize(("backend", "params"), _cases(
    {"two layers, cls": {"layers": [-2, -1], "pooling": "cls"},
     "long texts in windows": {"long_text": "chunk", "max_length": 16, "normalize": True}}))
def test_text_features_match_torch(backend, params, sst2_sample):
    texts = sst2_sample[0][:12] + [""]
    reference = TextEncoder(device="cpu", **params).fit(texts)
    encoder = TextEncoder(device="cpu", backend=backend, **params).fit(texts)
    torch_out, out = reference.transform(texts), encoder.transform(texts)
    assert out.shape == torch_out.shape and out.dtype == np.float32
    assert cosines(out, torch_out).min() >= 0.9999
    assert encoder.identity_.fingerprint != reference.identity_.fingerprint


def test_backends_have_distinct_fingerprints_and_share_the_torch_ones_otherwise(photos):
    fingerprints = {}
    for backend in [b.values[0] for b in BACKENDS if not b.marks[0].args[0]] + ["torch"]:
        for precision in (["fp32", "bf16"] if backend == "openvino" else ["fp32"]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OpenVINO's bf16 on a CPU without bf16 runs float32
                encoder = image_encoder(backend=backend, precision=precision).fit(photos[:2])
            fingerprints[backend, precision] = encoder.identity_.fingerprint
    assert len(set(fingerprints.values())) == len(fingerprints)
    # The default backend adds nothing to the settings: earlier torch fingerprints stay valid.
    assert fingerprints["torch", "fp32"] == image_encoder().fit(photos[:2]).identity_.fingerprint


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_is_made_once_then_loaded_by_clones_refits_and_other_processes(backend, photos, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "exports"))  # an empty export folder
    model_registry.clear()  # and no network loaded in this process yet
    encoder = image_encoder(backend=backend).fit(photos[:2])
    assert encoder.model_.network.exported
    first = encoder.transform(photos[:3])
    # Clones and refits (a grid search's folds) share the loaded network: no export, no load.
    for _ in range(3):
        twin = clone(encoder).fit(photos[:2])
        assert twin.model_ is encoder.model_
        twin.transform(photos[:1])
    # A fresh registry (as in a new process) loads the export from disk instead of exporting again.
    model_registry.clear()
    fresh = clone(encoder).fit(photos[:2])
    assert fresh.model_ is not encoder.model_ and not fresh.model_.network.exported
    np.testing.assert_allclose(fresh.transform(photos[:3]), first, atol=1e-6)
    script = (
        "from sktransfer import ImageEncoder\n"
        f"e = ImageEncoder(weights='IMAGENET1K_V1', device='cpu', backend={backend!r}).fit({photos[:1]!r})\n"
        "print(e.model_.network.exported)\n"
    )
    env = {**__import__("os").environ, "SKTRANSFER_EXPORTS": str(tmp_path / "exports")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]  # another process: loaded, not exported


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickles_hold_no_exported_network_and_reload_it_by_identity(backend, photos, sst2_sample):
    texts = sst2_sample[0][:6]
    for encoder, items in [(image_encoder(backend=backend), photos[:3]), (TextEncoder(device="cpu", backend=backend),
                                                                           texts)]:
        encoder.fit(items)
        expected = encoder.transform(items)
        blob = pickle.dumps(encoder)
        assert len(blob) < 200_000, "the exported network must not travel in the pickle"
        assert b"Network" not in blob and b"onnxruntime" not in blob
        model_registry.clear()
        restored = pickle.loads(blob)
        np.testing.assert_allclose(restored.transform(items), expected, atol=1e-6)
        assert restored.identity_ == encoder.identity_


def test_a_missing_runtime_names_the_extra(monkeypatch, photos):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "sktransfer\[onnx\]"'):
        image_encoder(backend="onnx").fit(photos[:1])
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r'pip install "sktransfer\[openvino\]"'):
        TextEncoder(backend="openvino").fit(["a text"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_devices_follow_the_device_parameter(backend, photos):
    encoder = image_encoder(backend=backend, device="auto").fit(photos[:1])
    assert encoder.device_ in ({"cpu", "cuda:0"} if backend == "onnx" else {"cpu", "gpu"})
    if backend == "onnx" and not _backends._cuda_provider_available():
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            image_encoder(backend=backend, device="cuda").fit(photos[:1])
    if backend == "openvino":
        with pytest.raises(ValueError, match="Intel GPUs"):
            image_encoder(backend=backend, device="cuda").fit(photos[:1])
        if "GPU" not in _backends._openvino_devices():
            with pytest.raises(ValueError, match="OpenVINO sees no such device"):
                image_encoder(backend=backend, device="gpu").fit(photos[:1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_precisions_map_to_each_runtime(backend, photos):
    if backend == "onnx":
        with pytest.raises(ValueError, match="fp32 only|not offered with backend='onnx'"):
            image_encoder(backend="onnx", precision="bf16").fit(photos[:1])
        return
    import openvino as ov

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = image_encoder(backend="openvino", precision="bf16").fit(photos[:3])
        out = encoder.transform(photos[:3])
    said = [str(w.message) for w in caught if "bf16 arithmetic" in str(w.message)]
    assert bool(said) != native  # a CPU without bf16 says so, and runs float32
    reference = image_encoder().fit(photos[:3]).transform(photos[:3])
    assert cosines(out, reference).min() >= (0.98 if native else 0.9999)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fine_tuning_refuses_a_backend_encoder(backend, photos):
    with pytest.raises(ValueError, match="tune with backend='torch'"):
        FineTuningClassifier(image_encoder(backend=backend)).fit(photos[:4], [0, 0, 1, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_embed_backend(backend, tmp_path, capsys, sst2_sample):
    from tests.test_cli import sktransfer_in_process

    source = tmp_path / "texts.csv"
    source.write_text("review\n" + "\n".join(f'"{t}"' for t in sst2_sample[0][:5]) + "\n")
    done = sktransfer_in_process(capsys, "embed", str(source), "-o", str(tmp_path / "out.npy"), "--column", "review",
                                 "--backend", backend, "--device", "cpu", "--no-cache", "--quiet")
    assert done.returncode == 0, done.stderr
    out = np.load(tmp_path / "out.npy")
    reference = TextEncoder(device="cpu").fit_transform(sst2_sample[0][:5])
    assert cosines(out, reference).min() >= 0.9999


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refit_follows_the_backend_parameter(backend, photos):
    encoder = image_encoder().fit(photos[:2])
    torch_out = encoder.transform(photos[:2])
    with pytest.raises(ValueError, match="changed from 'torch'"):
        encoder.set_params(backend=backend).transform(photos[:2])  # set_params does not refit
    encoder.fit(photos[:2])
    assert encoder.identity_.settings["backend"] == backend
    assert cosines(encoder.transform(photos[:2]), torch_out).min() >= 0.9999
    encoder.set_params(backend="torch").fit(photos[:2])
    assert "backend" not in encoder.identity_.settings and encoder.device_ == "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_export_is_made_again_with_a_warning(backend, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "exports"))
    model_registry.clear()
    expected = image_encoder(backend=backend).fit(photos[:2]).transform(photos[:2])
    (model_file,) = (tmp_path / "exports" / backend).glob("*/model.*ml" if backend == "openvino" else "*/model.onnx")
    model_file.write_bytes(model_file.read_bytes()[:200])  # truncated, as by a full disk
    model_registry.clear()
    with pytest.warns(UserWarning, match="(?s)does not match what was exported: .* Exporting it again"):
        encoder = image_encoder(backend=backend).fit(photos[:2])
    assert encoder.model_.network.exported
    np.testing.assert_allclose(encoder.transform(photos[:2]), expected, atol=1e-6)


@pytest.mark.parametrize("backend", [BACKENDS[1]])
def test_two_input_sizes_in_one_process_each_get_their_own_export(backend, photos):
    # An export is made for one input size: a second encoder at another size must not be served
    # the first one's network from the registry.
    for size in (224, 160):
        encoder = image_encoder(backend=backend, image_size=size).fit(photos[:3])
        reference = image_encoder(image_size=size).fit(photos[:3])
        assert cosines(encoder.transform(photos[:3]), reference.transform(photos[:3])).min() >= 0.9999
