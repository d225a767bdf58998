"""One identity per fitted encoder: the registry and the cache never hand out another model's vectors.

Each ``test_defect_*`` reproduces one defect of issue 11 as it was on main before the identity
existed (each failed there); the property tests vary every constructor parameter and every
attribute of an input that reaches the network, and check that the cache fingerprint or content
key changes exactly when the output does.
"""

import copy
import io
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from identity_helpers import changed, image_encoder, tensor_preprocess, textured, use_cls_pooling
from sktransfer import EmbeddingCache, ImageEncoder, ModelMismatchError, TextEncoder, model_registry
from sktransfer._images import content_key
from sktransfer.model_store import resolve_text_model
from sktransfer.text import text_key



def assert_keys_follow_outputs(keys: dict, outputs: dict) -> None:
    """For every pair of cases: the keys differ exactly when the outputs do."""
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (keys[a] != keys[b]) == changed(outputs[a], outputs[b]), (a, b)


def fingerprints_and_outputs(base, variants: dict, items) -> tuple[dict, dict]:
    """Fit ``clone(base).set_params(**params)`` for each variant on ``items``: fingerprints and outputs."""
    fingerprints, outputs = {}, {}
    for name, params in variants.items():
        encoder = clone(base).set_params(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation, random weights, flattened maps
            outputs[name] = encoder.fit(items).transform(items)
        fingerprints[name] = encoder.identity_.fingerprint
    return fingerprints, outputs


# ---------------------------------------------------------------------- the 12 defects
def test_defect_1_modules_that_differ_only_in_weight_free_layers_get_their_own_network():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    relu, tanh = nn.Sequential(copy.deepcopy(conv), nn.ReLU()), nn.Sequential(copy.deepcopy(conv), nn.Tanh())
    for a, b in zip(relu.state_dict().values(), tanh.state_dict().values()):
        assert torch.equal(a, b)  # same class, same state_dict: only the activation differs
    preprocess, images = tensor_preprocess(32), [textured(seed=1), textured(seed=2)]
    outputs = {}
    for name, module in [("relu", relu), ("tanh", tanh)]:
        encoder = ImageEncoder(module, preprocess=preprocess, device="cpu", num_workers=0).fit(images)
        outputs[name] = encoder.transform(images)
        with torch.inference_mode():
            expected = module(torch.stack([preprocess(image) for image in images])).mean((2, 3))
        np.testing.assert_allclose(outputs[name], expected.numpy(), atol=1e-5)
    assert changed(outputs["relu"], outputs["tanh"])


def test_defect_1_resnet_with_max_pooling_is_not_served_the_average_pooled_network():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    average = resnet18(weights=None)
    maximum = copy.deepcopy(average)
    maximum.avgpool = nn.AdaptiveMaxPool2d(1)
    images = [textured(seed=3)]
    a = ImageEncoder(average, device="cpu", num_workers=0).fit(images)
    b = ImageEncoder(maximum, device="cpu", num_workers=0).fit(images)
    assert a.identity_.fingerprint != b.identity_.fingerprint
    assert a.identity_.registry_key("cpu") != b.identity_.registry_key("cpu")
    assert changed(a.transform(images), b.transform(images))


def test_defect_2_preprocessing_closures_are_told_apart_by_what_they_produce(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2), nn.ReLU())
    cache = EmbeddingCache(tmp_path / "cache")
    images = [textured(seed=4), textured(seed=5)]
    small = ImageEncoder(net, preprocess=tensor_preprocess(64), device="cpu", num_workers=0, cache=cache)
    large = ImageEncoder(net, preprocess=tensor_preprocess(224), device="cpu", num_workers=0, cache=cache)
    small.fit(images).transform(images)
    served = large.fit(images).transform(images)
    assert cache.stats.last["hits"] == 0
    own = clone(large).set_params(cache=None).fit(images).transform(images)
    np.testing.assert_allclose(served, own, atol=1e-6)


def test_defect_2_nondeterministic_preprocessing_is_refused():
    rng = np.random.default_rng(0)

    def jitter(image):
        return torch.from_numpy(np.asarray(image.resize((32, 32)), dtype=np.float32).transpose(2, 0, 1)
                                + rng.random())

    with pytest.raises(ValueError, match="deterministic"):
        ImageEncoder(nn.Conv2d(3, 2, 3), preprocess=jitter, device="cpu").fit([textured()])


def palette_image(palette_seed, transparency=None):
    indices = np.arange(48 * 40, dtype=np.uint8).reshape(40, 48) % 64
    image = Image.fromarray(indices, "P")
    palette = np.random.default_rng(palette_seed).integers(0, 256, 768, dtype=np.uint8)
    image.putpalette(palette.tobytes())
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def test_defect_3_palette_images_are_keyed_by_their_colours(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = image_encoder(cache=cache).fit([palette_image(0)])
    first, second, transparent = palette_image(0), palette_image(1), palette_image(0, transparency=5)
    assert np.array_equal(np.asarray(first), np.asarray(second))  # same indices, other palette
    for image in (first, second, transparent):
        served = encoder.transform([image])
        own = clone(encoder).set_params(cache=None).fit([image]).transform([image])
        np.testing.assert_allclose(served, own, atol=1e-6)
    assert len({content_key(image) for image in (first, second, transparent)}) == 3


def test_defect_4_a_model_folder_edited_in_place_is_a_new_model(tmp_path, minilm_copy):
    from sentence_transformers import SentenceTransformer

    cache = EmbeddingCache(tmp_path / "cache")
    texts = ["a gripping film", "dull and far too long"]
    before = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(texts)
    old = before.transform(texts)
    use_cls_pooling(minilm_copy)
    after = TextEncoder(model=str(minilm_copy), device="cpu", cache=cache).fit(texts)
    new = after.transform(texts)
    assert after.identity_.fingerprint != before.identity_.fingerprint
    reference = SentenceTransformer(str(minilm_copy), device="cpu").encode(texts)
    np.testing.assert_allclose(new, reference, atol=1e-5)
    assert changed(new, old)
    # The encoder fitted before the edit keeps its own model and its own fingerprint...
    np.testing.assert_array_equal(before.transform(texts), old)
    # ...but its pickle, loaded where the old model is no longer in memory, finds another model
    # under that path and says so.
    restored = pickle.loads(pickle.dumps(before))
    model_registry.clear()
    with pytest.raises(ModelMismatchError, match="different model"):
        restored.transform(texts)


@pytest.mark.parametrize("parameter, value", [("normalize", True), ("max_length", 16), ("precision", "bf16")])
def test_defect_5_changing_an_output_parameter_after_fit_needs_a_refit(tmp_path, parameter, value):
    texts = ["a gripping film", "dull and far too long"]
    encoder = TextEncoder(device="cpu", cache=EmbeddingCache(tmp_path / "cache")).fit(texts)
    encoder.transform(texts)
    encoder.set_params(**{parameter: value})
    with pytest.raises(ValueError, match=f"{parameter} was changed .* Call fit again"):
        encoder.transform(texts)
    refitted = encoder.fit(texts).transform(texts)
    np.testing.assert_allclose(refitted, clone(encoder).set_params(cache=None).fit(texts).transform(texts),
                               atol=1e-6)
    encoder.set_params(batch_size=1, show_progress=False)  # not output-changing: no refit needed
    encoder.transform(texts)


def test_defect_5_image_parameters_changed_after_fit_need_a_refit():
    encoder = image_encoder().fit([textured()])
    encoder.set_params(crop=1.0)
    with pytest.raises(ValueError, match="crop was changed"):
        encoder.transform([textured()])


def test_defect_6_a_pickle_finds_its_model_by_name_on_another_machine(tmp_path):
    source = resolve_text_model("all-MiniLM-L6-v2")
    here, there = tmp_path / "here", tmp_path / "there"
    for root in (here, there):
        shutil.copytree(source, root / "my-model")
    texts = ["a gripping film", "dull and far too long"]
    script = textwrap.dedent(
        """
        import os, pickle, sys, numpy as np
        from sktransfer import TextEncoder
        texts = {texts!r}
        if sys.argv[1] == "fit":
            encoder = TextEncoder("my-model", device="cpu").fit(texts)
            open({pkl!r}, "wb").write(pickle.dumps(encoder))
            np.save({npy!r}, encoder.transform(texts))
        else:
            encoder = pickle.loads(open({pkl!r}, "rb").read())
            np.testing.assert_allclose(encoder.transform(texts), np.load({npy!r}), atol=1e-6)
            print("found by name")
        """
    ).format(texts=texts, pkl=str(tmp_path / "enc.pkl"), npy=str(tmp_path / "out.npy"))

    def run(step, models):
        env = {**os.environ, "SKTRANSFER_MODELS": str(models), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-c", script, step], capture_output=True, text=True, env=env)

    assert run("fit", here).returncode == 0
    assert str(here).encode() not in (tmp_path / "enc.pkl").read_bytes()  # no path of the first machine
    shutil.rmtree(here)
    result = run("load", there)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "found by name" in result.stdout


def test_defect_7_random_initialisation_is_the_same_after_a_reload_and_in_a_fresh_process(tmp_path):
    images = [textured(seed=6)]
    with pytest.warns(UserWarning, match="randomly initialised"):
        first = image_encoder(weights=None).fit(images)
    out = first.transform(images)
    model_registry.clear()
    with pytest.warns(UserWarning, match="randomly initialised"):
        again = image_encoder(weights=None).fit(images)
    np.testing.assert_array_equal(again.transform(images), out)
    assert again.identity_.fingerprint == first.identity_.fingerprint
    (tmp_path / "enc.pkl").write_bytes(pickle.dumps(first))
    np.save(tmp_path / "images.npy", np.asarray(images[0]))
    np.save(tmp_path / "out.npy", out)
    script = textwrap.dedent(
        f"""
        import pickle, warnings, numpy as np
        warnings.simplefilter("ignore")
        encoder = pickle.loads(open({str(tmp_path / "enc.pkl")!r}, "rb").read())
        out = encoder.transform([np.load({str(tmp_path / "images.npy")!r})])
        np.testing.assert_allclose(out, np.load({str(tmp_path / "out.npy")!r}), atol=1e-6)
        print("same random features")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_defect_8_fit_and_transform_validate_input_alike():
    stack = np.stack([np.asarray(textured(seed=s)) for s in range(4)])  # (4, H, W, 3)
    pipe = make_pipeline(image_encoder(), LogisticRegression()).fit(stack, [0, 1, 0, 1])
    assert pipe.predict(stack).shape == (4,)
    single = np.asarray(textured())  # one (H, W, 3) image without a list
    for method in ("fit", "transform"):
        with pytest.raises(ValueError, match=r"looks like a single \(H, W, channels\) image"):
            getattr(pipe[0] if method == "transform" else image_encoder(), method)(single)
    with pytest.raises(ValueError, match=r"index 1 is a missing value"):
        TextEncoder().fit(["fine", float("nan"), None, object()])
    with pytest.raises(ValueError, match=r"index 0 is a float"):
        TextEncoder().fit([1.0, "text"])
    with pytest.raises(ValueError, match=r"index 1 .*unsupported item type NoneType"):
        image_encoder().fit([np.asarray(textured()), None])
    TextEncoder(on_error="nan").fit(["fine", None])  # the policy applies to fit as to transform


def test_defect_9_truncation_is_reported_on_cached_calls_and_transform_writes_no_state(tmp_path):
    texts = ["short", "word " * 40]
    encoder = TextEncoder(device="cpu", max_length=16, cache=EmbeddingCache(tmp_path / "cache")).fit(texts)
    for _ in range(2):  # a miss, then a full hit
        state = dict(vars(encoder))
        with pytest.warns(UserWarning, match=r"truncated 1 distinct text\(s\) longer than max_length=16"):
            encoder.transform(texts)
        assert vars(encoder).keys() == state.keys()
        assert all(vars(encoder)[k] is v for k, v in state.items()), "transform wrote fitted state"
    assert encoder.cache.stats.last["hits"] == 2


def test_defect_10_autocast_precisions_share_one_model_and_live_models_are_kept(sst2_sample):
    model_registry.clear()
    images = [textured()]
    encoders = [image_encoder(precision=p).fit(images) for p in ("fp32", "bf16", "fp16")]
    assert len({id(e.model_) for e in encoders}) == 1
    assert sum(model_registry.load_counts.values()) == 1
    previous = model_registry.max_models
    model_registry.max_models = 1
    try:
        TextEncoder(device="cpu").fit(sst2_sample[0][:2])  # evicts the image model from the LRU...
        assert encoders[0].identity_.registry_key("cpu") not in model_registry.keys()
        clone(encoders[0]).fit(images)  # ...but a live estimator holds it: its clone gets it back
        assert model_registry.load_counts[encoders[0].identity_.registry_key("cpu")] == 1
    finally:
        model_registry.max_models = previous


def test_defect_11_memory_bytes_zero_reads_the_disk(tmp_path):
    import sqlite3

    texts = ["a fine film", "a dull film"]
    path = tmp_path / "cache"
    TextEncoder(cache=EmbeddingCache(path)).fit(texts).transform(texts)  # fills a memory layer
    with sqlite3.connect(path / "embeddings.sqlite3") as db:
        db.execute("DELETE FROM embeddings")
    disk_only = EmbeddingCache(path, memory_bytes=0)
    TextEncoder(cache=disk_only).fit(texts).transform(texts)
    assert disk_only.stats.last == {"hits": 0, "misses": 2, "corrupt": 0}


def test_defect_12_parameter_validation_gaps():
    with pytest.raises(ValueError, match="limit 4096"):
        image_encoder(crop=1e-4).fit([textured()])
    with pytest.raises(ValueError, match="limit 4096"):
        image_encoder(image_size=4000).fit([textured()])
    folder = pathlib.Path(resolve_text_model("all-MiniLM-L6-v2"))
    by_path = TextEncoder(model=folder, device="cpu").fit(["a"])
    np.testing.assert_allclose(by_path.transform(["a film"]), TextEncoder(device="cpu").fit(["a"]).transform(["a film"]),
                               atol=1e-6)
    for params in [{"batch_size": True}, {"n_threads": True}, {"max_length": True}]:
        with pytest.raises(InvalidParameterError, match="bool"):
            TextEncoder(**params).fit(["a"])
    with pytest.raises(InvalidParameterError, match="bool"):
        image_encoder(num_workers=True).fit([textured()])


# ---------------------------------------------------------------------- property tests
LONG_TEXT = "The soundtrack alone is worth the ticket, and the final twenty minutes are among the best things " \
            "the director has ever put on screen, " * 2
TEXTS = ["a gripping film", "dull and far too long", "", LONG_TEXT]


def test_text_fingerprint_changes_exactly_when_the_output_does(tmp_path, minilm_copy):
    base = TextEncoder(device="cpu")
    use_cls_pooling(minilm_copy)
    variants = {
        "defaults": {},
        # output-changing parameters, at values that change and values that do not change the output
        "model=other folder": {"model": str(minilm_copy)},
        "model=same folder as a Path": {"model": pathlib.Path(resolve_text_model("all-MiniLM-L6-v2"))},
        "normalize=True (the model already normalises)": {"normalize": True},
        "max_length=16": {"max_length": 16},
        "max_length=256 (the model's own)": {"max_length": 256},
        "precision=bf16": {"precision": "bf16"},
        "precision=fp16": {"precision": "fp16"},
        "pooling=mean": {"pooling": "mean"},
        "pooling=mean, normalize (the model's own head)": {"pooling": "mean", "normalize": True},
        "pooling=cls": {"pooling": "cls"},
        "pooling=max": {"pooling": "max"},
        "layers=-1 (the last, as by default)": {"layers": -1},
        "layers=-2": {"layers": -2},
        "layers=last four": {"layers": [-4, -3, -2, -1]},
        "layers=last four, summed": {"layers": [-4, -3, -2, -1], "layer_combine": "sum"},
        "layers=last two, concatenated": {"layers": [-2, -1], "layer_combine": "concat"},
        "layer_combine=concat on one layer": {"layer_combine": "concat"},
        "long_text=chunk at max_length=16": {"long_text": "chunk", "max_length": 16},
        "prompt": {"prompt": "query: "},
        "prompt=the model's own (empty) query prompt": {"prompt": "query"},
        # parameters that must not matter
        "on_error=empty": {"on_error": "empty"},
        "on_error=nan": {"on_error": "nan"},
        "batch_size=1": {"batch_size": 1},
        "device=cpu": {"device": "cpu"},
        "show_progress": {"show_progress": True},
        "n_threads=1": {"n_threads": 1},
        "n_streams=1": {"n_streams": 1},
        "n_streams=2": {"n_streams": 2, "batch_size": 2},
        "cache": {"cache": str(tmp_path / "cache")},
    }
    fingerprints, outputs = fingerprints_and_outputs(base, variants, TEXTS)
    assert_keys_follow_outputs(fingerprints, outputs)
    # backend changes the fingerprint and the output only by float noise: tests/test_backends.py
    assert set().union(*variants.values()) | {"backend"} == set(base.get_params()), "every parameter is varied"


def big_jpeg(path):
    """A 4096x3072 JPEG with fine texture: large enough for draft decoding to change pixels."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(small).resize((4096, 3072), Image.NEAREST).save(path, quality=90)
    return str(path)


def test_image_fingerprint_changes_exactly_when_the_output_does(tmp_path, hymenoptera):
    from torchvision.transforms._presets import ImageClassification

    from torchvision.models import MobileNet_V2_Weights

    # A float image too, for value_range (8-bit files ignore it).
    float_image = np.linspace(0, 1, 40 * 48 * 3, dtype=np.float32).reshape(40, 48, 3)
    images = [big_jpeg(tmp_path / "big.jpg"), hymenoptera["train"]["bees"][0], float_image]
    base = image_encoder()
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    # Two layer names that compute the same thing (MobileNetV2's "features.18" averaged is its
    # penultimate output) are not unified: different layers, different entries (a miss, never
    # a wrong vector), so those pairs are left out here.
    variants = {
        "defaults": {},
        "model=own module": {"model": module, "weights": None},
        "weights=None": {"weights": None},
        "weights=the same checkpoint as an enum": {"weights": MobileNet_V2_Weights.IMAGENET1K_V1},
        "layer=features.16.add": {"layer": "features.16.add"},
        "layer list": {"layer": ["features.16.add", "features.17.conv.3"]},
        "pooling=max on a map": {"layer": "features.16.add", "pooling": "max"},
        "pooling=avg on a map (what auto does)": {"layer": "features.16.add", "pooling": "avg"},
        "image_size=160": {"image_size": 160},
        "image_size=224 (the weights' own)": {"image_size": 224},
        "crop=1.0": {"crop": 1.0},
        "crop=0.875 (the weights' own)": {"crop": 0.875},
        "preprocess=the weights' own preset": {"preprocess": ImageClassification(crop_size=224, resize_size=256)},
        "preprocess=closure": {"preprocess": tensor_preprocess(224)},
        "jpeg_draft=False": {"jpeg_draft": False},
        "value_range=(0, 255)": {"value_range": (0, 255)},
        "precision=bf16": {"precision": "bf16"},
        "precision=fp16": {"precision": "fp16"},
        # parameters that must not matter
        "on_error=nan": {"on_error": "nan"},
        "num_workers=1": {"num_workers": 1},
        "batch_size=1": {"batch_size": 1},
        "device=cpu": {"device": "cpu"},
        "show_progress": {"show_progress": True},
        "n_threads=1": {"n_threads": 1},
        "cache": {"cache": str(tmp_path / "cache")},
    }
    fingerprints, outputs = fingerprints_and_outputs(base, variants, images)
    assert_keys_follow_outputs(fingerprints, outputs)
    # backend changes the fingerprint and the output only by float noise: tests/test_backends.py
    assert set().union(*variants.values()) | {"backend"} == set(base.get_params()), "every parameter is varied"


def jpeg_with_orientation(image, orientation):
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return Image.open(io.BytesIO(buffer.getvalue()))


def centre_pixel_changed(pixels):
    changed_pixels = pixels.copy()
    h, w = pixels.shape[:2]
    changed_pixels[h // 2, w // 2] = 255 - changed_pixels[h // 2, w // 2]
    return changed_pixels


def test_image_content_key_changes_exactly_when_the_output_does():
    # Keys are taken on the RGB image before preprocessing (which the fingerprint covers), so a
    # pixel that the centre crop discards still counts: such pairs are a miss, never a wrong
    # vector, and are left out here.
    encoder = image_encoder().fit([textured()])
    rgb = textured(seed=8)
    pixels = np.asarray(rgb)
    gray = rgb.convert("L")
    la_opaque = gray.convert("LA")
    transparent = rgb.convert("RGBA")
    transparent.putalpha(0)
    variants = {
        "RGB": rgb,
        "same pixels as uint8 array": pixels,
        "same pixels as float array": pixels.astype(np.float32) / 255.0,
        "same pixels as RGBA, opaque": rgb.convert("RGBA"),
        "one central pixel changed": Image.fromarray(centre_pixel_changed(pixels)),
        "one column wider": rgb.resize((97, 72)),
        "L": gray,
        "LA opaque (same pixels as L)": la_opaque,
        "RGBA transparent": transparent,
        "palette A": palette_image(0),
        "palette B": palette_image(1),
        "palette A with transparency": palette_image(0, transparency=5),
        "JPEG upright": jpeg_with_orientation(rgb, 0),
        "JPEG with EXIF orientation 6": jpeg_with_orientation(rgb, 6),
    }
    keys = {name: content_key(image) for name, image in variants.items()}
    outputs = {name: encoder.transform([image])[0] for name, image in variants.items()}
    assert_keys_follow_outputs(keys, outputs)
    assert len(set(keys.values())) >= 10  # the cases are not all one image


def test_text_keys_are_exact_bytes():
    # Equal strings share a key whatever their type; any other byte sequence gets its own (texts
    # that a tokenizer maps to the same tokens, such as NFC and NFD accents, are separate entries:
    # a miss, never a wrong vector).
    assert text_key("a film") == text_key(np.str_("a film")) == text_key(str(np.array(["a film"])[0]))
    distinct = ["a film", "a film ", "A film", "caf\u00e9", "cafe\u0301", "", "\ud800"]
    assert len({text_key(t) for t in distinct}) == len(distinct)


def test_defaults_keep_the_fingerprints_of_earlier_versions():
    # New options enter the settings only where they differ from the model's own behaviour, so
    # the cache entries users already have (the fingerprints docs/cache.md shows) stay valid. The
    # image default changed when its preset moved to the 8-bit tensor resize (other vectors, by at
    # most one pixel level: another fingerprint, so earlier entries are misses, never served).
    assert TextEncoder(device="cpu").fit(["x"]).identity_.fingerprint.startswith("fddfe7a6a160")
    assert image_encoder().fit([textured()]).identity_.fingerprint.startswith("617a3b5bd63a")
