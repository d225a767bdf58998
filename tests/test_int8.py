"""precision="int8": a quantized export, calibrated on the fit items where the recipe needs it, whose
cosine to float32's vectors is measured at fit (``fidelity_``) and whose identity says how it was made.

Real weights (all-MiniLM-L6-v2, MobileNetV2) on a few items: ONNX Runtime quantizes the text
network dynamically (nothing learned from the fit items) and the image network statically (ranges
from the fit photos); OpenVINO quantizes both through NNCF, calibrated.
"""

import importlib.util
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import ClipEncoder, EmbeddingCache, FineTuningClassifier, ImageEncoder, TextEncoder, _quantize
from sktransfer._identity import ModelMismatchError

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                reason="the onnx extra is not installed: pip install 'sktransfer[onnx]'")
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                                reason="the openvino extra is not installed: pip install 'sktransfer[openvino]'")


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def image_encoder(**params):
    return ImageEncoder(**{"weights": "IMAGENET1K_V1", "device": "cpu", "num_workers": 0, "batch_size": 4, **params})


@pytest.fixture(scope="module")
def texts(sst2_sample):
    return sst2_sample[0][:16]


@pytest.fixture(scope="module")
def photos(hymenoptera):
    return hymenoptera["val"]["ants"][:4] + hymenoptera["val"]["bees"][:4]


@pytest.fixture(scope="module")
def onnx_text(texts):
    return TextEncoder(device="cpu", backend="onnx", precision="int8").fit(texts)


@pytest.fixture(scope="module")
def onnx_image(photos):
    return image_encoder(backend="onnx", precision="int8").fit(photos)


@needs_onnx
def test_onnx_text_int8_is_close_to_fp32_and_says_how_close(onnx_text, texts):
    fp32 = TextEncoder(device="cpu", backend="onnx").fit(texts)
    out, expected = onnx_text.transform(texts), fp32.transform(texts)
    assert out.shape == expected.shape and out.dtype == np.float32
    found = cosines(out, expected)
    assert found.min() > 0.9 and found.mean() > 0.97
    # The figures fit recorded are those of the same comparison (all 16 texts, dynamic: no calibration).
    fidelity = onnx_text.fidelity_
    assert fidelity["n_items"] == len(texts) and fidelity["held_out"] is True
    assert fidelity["min_cosine"] == pytest.approx(found.min(), abs=1e-4)
    assert fidelity["mean_cosine"] == pytest.approx(found.mean(), abs=1e-4)
    settings = onnx_text.identity_.settings["int8"]
    assert settings["method"] == "dynamic" and settings["calibration"] is None
    assert settings["tool"].startswith("onnxruntime-")
    assert "calibration_" not in vars(onnx_text)
    assert onnx_text.identity_.fingerprint != fp32.identity_.fingerprint
    # Dynamic quantization learns nothing from the fit items: any fit gives the same identity.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two short sentences: a fidelity below the warning threshold
        other = TextEncoder(device="cpu", backend="onnx", precision="int8").fit(["a different sentence", "and another"])
    assert other.identity_.fingerprint == onnx_text.identity_.fingerprint
    np.testing.assert_allclose(other.transform(texts), out, atol=1e-5)


@needs_onnx
def test_a_text_vector_does_not_depend_on_its_batch_mates(onnx_text, texts):
    # Dynamic ranges are one call's: batched, a text's vector moved with the texts beside it
    # (cosine 0.95 between batch_size 32 and 1). One text per call keeps it the text's own.
    out = onnx_text.transform(texts)
    np.testing.assert_allclose(clone(onnx_text).set_params(batch_size=1).fit(texts).transform(texts), out, atol=1e-5)
    np.testing.assert_allclose(onnx_text.transform(texts[::-1] + ["another text beside them"])[:len(texts)][::-1],
                               out, atol=1e-5)
    assert onnx_text.identity_.settings["int8"]["ranges"] == "per item"


@needs_nncf
def test_openvino_int8_vectors_do_not_depend_on_the_batch_size_beyond_rounding(texts):
    # Static ranges: a different batch shape changes float rounding, which may move a value across
    # an int8 step (max difference 6e-4 on 64 SST-2 sentences, cosine 0.999996).
    encoder = TextEncoder(device="cpu", backend="openvino", precision="int8").fit(texts)
    one = clone(encoder).set_params(batch_size=1).fit(texts)
    assert one.identity_.fingerprint == encoder.identity_.fingerprint
    assert cosines(one.transform(texts), encoder.transform(texts)).min() > 0.9999


@needs_onnx
def test_onnx_image_int8_is_calibrated_on_the_fit_photos(onnx_image, photos):
    fp32 = image_encoder(backend="onnx").fit(photos)
    out, expected = onnx_image.transform(photos), fp32.transform(photos)
    assert cosines(out, expected).min() > 0.9
    settings = onnx_image.identity_.settings["int8"]
    assert settings["method"] == "static-qdq" and settings["calibration"] is not None
    calibration = onnx_image.calibration_
    assert len(calibration) == len(photos) and calibration[0][0].shape == (1, 3, 224, 224)
    assert calibration[0][0].dtype == np.float16
    assert onnx_image.fidelity_["n_items"] == len(photos)
    assert onnx_image.fidelity_["held_out"] is False  # 8 photos: all calibrate, all are measured
    # The calibration is part of the identity: other photos, another network; the same photos, the same.
    again = image_encoder(backend="onnx", precision="int8").fit(list(reversed(photos)))
    assert again.identity_.fingerprint == onnx_image.identity_.fingerprint
    other = image_encoder(backend="onnx", precision="int8").fit(photos[:6])
    assert other.identity_.fingerprint != onnx_image.identity_.fingerprint
    assert other.identity_.settings["int8"]["calibration"] != settings["calibration"]
    assert onnx_image.identity_.fingerprint != fp32.identity_.fingerprint
    # Batch size changes nothing beyond float noise.
    np.testing.assert_allclose(clone(onnx_image).set_params(batch_size=3).fit(photos).transform(photos), out,
                               atol=1e-4)


@needs_onnx
def test_cache_info_shows_the_int8_recipe_and_fidelity(onnx_text, texts, tmp_path):
    encoder = clone(onnx_text).set_params(cache=str(tmp_path / "cache")).fit(texts)
    encoder.transform(texts[:3])
    described = EmbeddingCache(tmp_path / "cache").info()
    shown = str(described)
    assert "int8" in shown and "dynamic by onnxruntime" in shown and "cosine to fp32" in shown, shown


@needs_onnx
def test_a_pickle_quantizes_again_elsewhere_from_what_it_carries(onnx_image, photos, tmp_path):
    blob = pickle.dumps(onnx_image)
    assert len(blob) < 3 * 2**20  # 8 calibration photos as float16, no network
    np.save(tmp_path / "expected.npy", onnx_image.transform(photos))
    (tmp_path / "model.pkl").write_bytes(blob)
    script = (
        "import pickle, sys, numpy as np\n"
        f"e = pickle.load(open({str(tmp_path / 'model.pkl')!r}, 'rb'))\n"
        f"out = e.transform({[str(p) for p in photos]!r})\n"
        "print(e.model_.network.exported)\n"
        f"np.testing.assert_allclose(out, np.load({str(tmp_path / 'expected.npy')!r}), atol=1e-4)\n")
    env = {**__import__("os").environ, "SKTRANSFER_EXPORTS": str(tmp_path / "fresh-exports")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "True"  # made again in the empty export folder


@needs_onnx
def test_calibration_inputs_and_the_quantizer_version_are_checked(onnx_image, photos, monkeypatch, tmp_path):
    from sktransfer import model_registry

    # Checked where they are used: when the int8 network is made (here, in an empty export folder).
    monkeypatch.setenv("SKTRANSFER_EXPORTS", str(tmp_path / "exports"))
    tampered = pickle.loads(pickle.dumps(onnx_image))
    tampered.calibration_[0] = (tampered.calibration_[0][0] * 0,)
    model_registry.clear()
    with pytest.raises(ModelMismatchError, match="other calibration inputs"):
        tampered.transform(photos[:1])
    missing = pickle.loads(pickle.dumps(onnx_image))
    del missing.calibration_
    with pytest.raises(ModelMismatchError, match="holds no calibration inputs"):
        missing.transform(photos[:1])
    versions = _quantize.recipe("onnx", "image")["versions"]
    monkeypatch.setattr(_quantize, "_version", lambda module: "0.0.1" if module == "onnxruntime" else
                        {"torch": versions["exporter"][6:], "onnxscript": versions["onnxscript"]}[module])
    other_tool = pickle.loads(pickle.dumps(onnx_image))
    with pytest.raises(ModelMismatchError, match=r"Install onnxruntime==\d"):
        other_tool.transform(photos[:1])
    model_registry.clear()


@needs_onnx
def test_low_fidelity_warns_with_the_figure_and_the_alternatives(texts, monkeypatch):
    monkeypatch.setattr(_quantize, "FIDELITY_WARNING", 1.01)
    with pytest.warns(UserWarning, match=r"mean cosine of 0\.9\d+ \(min 0\.\d+\) to float32's on 16 fit items"):
        TextEncoder(device="cpu", backend="onnx", precision="int8").fit(texts)


@needs_onnx
def test_int8_refusals_name_the_fix(texts, tmp_path):
    from sktransfer.testing import make_tiny_clip

    with pytest.raises(ValueError, match="backend='onnx' or backend='openvino'"):
        TextEncoder(device="cpu", precision="int8").fit(texts)
    with pytest.raises(ValueError, match="ClipEncoder runs on torch only"):
        ClipEncoder(make_tiny_clip(tmp_path / "clip"), device="cpu", precision="int8").fit(texts)
    with pytest.raises(InvalidParameterError):
        FineTuningClassifier(TextEncoder(), precision="int8").fit(texts, [0, 1] * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="none of the 2 can be encoded"):
            TextEncoder(device="cpu", backend="onnx", precision="int8", on_error="nan").fit([None, 3.0])


@needs_onnx
def test_unreadable_fit_items_are_named_or_left_out_of_calibration_and_fidelity(onnx_image, photos, tmp_path):
    from sktransfer._messages import ItemError

    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(ItemError, match=r"index 8 .*missing\.jpg"):
        image_encoder(backend="onnx", precision="int8").fit(photos + [missing])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tolerant = image_encoder(backend="onnx", precision="int8", on_error="nan").fit(photos + [missing])
    # Left out: the same calibration as the readable photos alone, and 8 rows compared, not 9.
    assert tolerant.identity_.fingerprint == onnx_image.identity_.fingerprint
    assert tolerant.fidelity_["n_items"] == len(photos)
    assert tolerant.fidelity_["mean_cosine"] == pytest.approx(onnx_image.fidelity_["mean_cosine"], abs=1e-4)


def test_the_fit_sample_is_distinct_and_does_not_depend_on_the_input_order():
    texts = [f"review number {i}" for i in range(150)]
    encoder = TextEncoder()
    valid = np.ones(len(texts), dtype=bool)
    chosen = [texts[i] for i in encoder._fit_sample(texts, valid)]
    assert len(chosen) == len(set(chosen)) == 150
    shuffled = list(np.random.default_rng(3).permutation(texts)) + texts[:20]  # and duplicates
    again = [shuffled[i] for i in encoder._fit_sample(shuffled, np.ones(len(shuffled), dtype=bool))]
    assert again == chosen  # the same calibration and fidelity items, in the same order


@needs_onnx
def test_a_refit_without_int8_drops_the_int8_state(onnx_image, photos):
    encoder = pickle.loads(pickle.dumps(onnx_image))
    encoder.set_params(precision="fp32").fit(photos[:2])
    assert "calibration_" not in vars(encoder) and "fidelity_" not in vars(encoder)
    assert "int8" not in encoder.identity_.settings


@needs_nncf
@pytest.mark.parametrize("kind", ["text", "image"])
def test_openvino_int8_through_nncf(kind, texts, photos):
    items = texts if kind == "text" else photos
    make = (lambda **p: TextEncoder(device="cpu", **p)) if kind == "text" else image_encoder
    encoder = make(backend="openvino", precision="int8").fit(items)
    expected = make(backend="openvino").fit(items).transform(items)
    found = cosines(encoder.transform(items), expected)
    assert found.min() > 0.9
    settings = encoder.identity_.settings["int8"]
    assert settings["tool"].startswith("nncf-") and settings["calibration"] is not None
    assert settings["model_type"] == ("transformer" if kind == "text" else "default")
    assert encoder.fidelity_["mean_cosine"] == pytest.approx(found.mean(), abs=1e-3)


def test_importing_the_package_and_the_advisor_imports_no_runtime_or_quantizer():
    code = ("import sys, sktransfer, sktransfer.speed, sktransfer.cli; "
            "print(sorted({'onnx', 'onnxruntime', 'openvino', 'nncf'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
