"""ImageEncoder on torchvision's real MobileNetV2 IMAGENET1K_V1 weights (seeded offline)."""

import io
import pickle
import subprocess
import sys
import textwrap
import urllib.error
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import ImageEncoder, ModelNotFoundError, model_registry
from sktransfer._backbones import pool

WEIGHTS = "IMAGENET1K_V1"  # the checkpoint the set-up seeds; torchvision's DEFAULT is V2


def make_encoder(**params):
    params = {"weights": WEIGHTS, "device": "cpu", "num_workers": 0, **params}
    return ImageEncoder(**params)


@pytest.fixture(scope="module")
def photos(hymenoptera):
    return hymenoptera["train"]["ants"][:3] + hymenoptera["train"]["bees"][:3]


@pytest.fixture(scope="module")
def encoder(photos):
    return make_encoder().fit(photos)


@pytest.fixture(scope="module")
def photo_features(encoder, photos):
    return encoder.transform(photos)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def synthetic(mode="RGB", size=(80, 60), seed=0):
    """A small image with structure (a gradient and a square), so that features are informative."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.zeros((h, w, 3), dtype=np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    base[h // 4 : h // 2, w // 4 : w // 2] = rng.integers(0, 255, 3)
    return Image.fromarray(base, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(base, "RGB")


# ---------------------------------------------------------------- the features are real
def test_penultimate_features_reproduce_torchvision_logits(encoder, photos, photo_features):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    reference = mobilenet_v2(weights=weights).eval()
    transform = weights.transforms()
    with torch.inference_mode():
        logits = reference(torch.stack([transform(Image.open(p).convert("RGB")) for p in photos]))
        ours = reference.classifier(torch.from_numpy(photo_features))
        # the weights' own preset passed as preprocess: PIL's resize, the tutorial's pixels exactly
        tutorial = clone(encoder).set_params(preprocess=transform).fit(photos).transform(photos)
        exact = reference.classifier(torch.from_numpy(tutorial))
    np.testing.assert_allclose(exact.numpy(), logits.numpy(), atol=1e-3)
    # the default preset resizes the 8-bit tensor: pixels at most one level apart, the same classes
    np.testing.assert_allclose(ours.numpy(), logits.numpy(), atol=5e-2)
    assert (ours.argmax(1) == logits.argmax(1)).all()
    assert min(cosine(a, b) for a, b in zip(photo_features, tutorial)) > 0.9999
    assert photo_features.shape == (6, 1280) and photo_features.dtype == np.float32
    assert list(encoder.preprocess_.crop_size) == [224] and list(encoder.preprocess_.resize_size) == [256]


def test_default_preset_matches_torchvision_preset_within_one_level(photos):
    """ClassificationPreset against torchvision's ImageClassification on real photos and odd inputs:
    every interpolation the presets use, a grey PIL image, a uint8 tensor; a clear error otherwise."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    from sktransfer._backbones import ClassificationPreset

    images = [Image.open(p).convert("RGB") for p in photos[:3]] + [synthetic(size=(17, 300))]
    for interpolation in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC):
        ours = ClassificationPreset(crop_size=224, resize_size=232, interpolation=interpolation)
        theirs = ImageClassification(crop_size=224, resize_size=232, interpolation=interpolation)
        for image in images:
            a, b = ours(image), theirs(image)
            assert a.shape == b.shape == (3, 224, 224) and a.dtype == torch.float32 and a.is_contiguous()
            # one 8-bit level is 1 / (255 * std) in normalised units (bicubic may overshoot by one more)
            assert float((a - b).abs().max()) <= 2.01 / (255 * 0.224)
        assert torch.equal(ours(images[0].convert("L")), ours(images[0].convert("L").convert("RGB")))
        pixels = torch.from_numpy(np.array(images[0])).permute(2, 0, 1)
        assert torch.equal(ours(pixels), ours(images[0]))
    with pytest.raises(TypeError, match="RGB PIL.Image or a .3, H, W. uint8 tensor, got ndarray"):
        ours(np.zeros((8, 8, 3), np.uint8))
    # equal when they describe the same preprocessing (copies and pickles included), not otherwise
    import copy
    import pickle

    assert ours == copy.deepcopy(ours) == pickle.loads(pickle.dumps(ours))
    assert hash(ours) == hash(copy.deepcopy(ours))
    assert ours != ClassificationPreset(crop_size=224, resize_size=256, interpolation=InterpolationMode.BICUBIC)
    assert ours != ClassificationPreset(crop_size=224, resize_size=232)


def test_ants_vs_bees_well_above_chance(hymenoptera):
    train = hymenoptera["train"]["ants"][:30] + hymenoptera["train"]["bees"][:30]
    val = hymenoptera["val"]["ants"][:30] + hymenoptera["val"]["bees"][:30]
    y = [0] * 30 + [1] * 30
    clf = make_pipeline(make_encoder(precision="bf16"), LogisticRegression(max_iter=2000)).fit(train, y)
    assert clf.score(val, y) >= 0.8  # chance is 0.5; the PyTorch tutorial reports about 0.95


# ---------------------------------------------------------------- inputs
def test_every_input_type_gives_the_same_features(encoder, photos, photo_features):
    path = photos[0]
    image = Image.open(path)
    rgb = np.asarray(image.convert("RGB"))
    with open(path, "rb") as handle:
        raw = handle.read()
    import pathlib

    variants = {
        "str": [path],
        "pathlib": [pathlib.Path(path)],
        "bytes": [raw],
        "PIL": [Image.open(path)],
        "uint8 HWC": [rgb],
        "float HWC": [rgb.astype(np.float32) / 255.0],
        "stacked array": rgb[None],
        "Series": pd.Series([path]),
        "DataFrame": pd.DataFrame({"photo": [path]}),
        "object array": np.array([path], dtype=object),
    }
    for name, X in variants.items():
        out = encoder.transform(X)
        tol = 0.999999
        assert out.shape == (1, 1280), name
        assert cosine(out[0], photo_features[0]) > tol, name
    mixed = encoder.transform([path, raw, rgb, Image.open(photos[1]), photos[2]])
    np.testing.assert_allclose(mixed[[0, 1, 2]], np.repeat(photo_features[:1], 3, axis=0), atol=1e-4)
    np.testing.assert_allclose(mixed[3:], photo_features[1:3], atol=1e-5)


def test_grayscale_array_equals_gray_rgb(encoder):
    gray = np.asarray(synthetic("L"))
    a = encoder.transform([gray])[0]
    b = encoder.transform([np.repeat(gray[:, :, None], 3, axis=2)])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_every_pil_mode_converts_to_the_right_rgb(encoder):
    rgb = synthetic()
    gray = rgb.convert("L")
    gray_rgb = encoder.transform([gray.convert("RGB")])[0]
    white = encoder.transform([Image.new("RGB", rgb.size, (255, 255, 255))])[0]
    cases = {
        "L": (gray, gray_rgb, 0.999999),
        "LA opaque": (gray.convert("LA"), gray_rgb, 0.999999),
        "RGBA opaque": (rgb.convert("RGBA"), encoder.transform([rgb])[0], 0.999999),
        "I;16": (Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), gray_rgb, 0.999999),
        "F": (Image.fromarray(np.asarray(gray).astype(np.float32) / 255.0, "F"), gray_rgb, 0.999999),
        "CMYK": (rgb.convert("CMYK"), encoder.transform([rgb.convert("CMYK").convert("RGB")])[0], 0.999999),
        "1": (gray.convert("1"), encoder.transform([gray.convert("1").convert("RGB")])[0], 0.999999),
    }
    assert cases["I;16"][0].mode.startswith("I;16")
    # An in-memory I image has no range of its own (convert("I") keeps 0-255 of 8-bit data, 0-65535 of
    # 16-bit data): it is read through value_range, and refused without it.
    eight_bit = clone(encoder).set_params(value_range=(0, 255)).fit([gray])
    assert cosine(eight_bit.transform([gray.convert("I")])[0], gray_rgb) > 0.999999
    with pytest.raises(ValueError, match=r"mode I .*value_range=\(0, 255\) for 8-bit data"):
        encoder.transform([gray.convert("I")])
    for mode, (image, expected, tol) in cases.items():
        assert cosine(encoder.transform([image])[0], expected) > tol, mode
    # Transparency is composited onto white, not dropped to whatever colour the hidden pixels had.
    transparent = rgb.convert("RGBA")
    transparent.putalpha(0)
    assert cosine(encoder.transform([transparent])[0], white) > 0.999999
    la = gray.convert("LA")
    la.putalpha(0)
    assert cosine(encoder.transform([la])[0], white) > 0.999999
    palette = rgb.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    reopened = Image.open(io.BytesIO(buffer.getvalue()))
    assert reopened.mode == "P" and "transparency" in reopened.info
    expected = Image.alpha_composite(Image.new("RGBA", rgb.size, (255, 255, 255, 255)), reopened.convert("RGBA"))
    assert cosine(encoder.transform([reopened])[0], encoder.transform([expected.convert("RGB")])[0]) > 0.999999


def test_exif_orientation_is_applied(encoder, tmp_path):
    upright = synthetic(size=(90, 60))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes, plus a tag saying so
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
    plain = tmp_path / "upright.jpg"
    upright.save(plain, "JPEG", quality=95)
    rotated, reference, wrong = encoder.transform([str(path), str(plain), stored])
    assert cosine(rotated, reference) > 0.99  # JPEG artefacts differ between the two encodings
    assert cosine(rotated, reference) > cosine(rotated, wrong)


def test_animated_gif_gives_its_first_frame(encoder, tmp_path):
    first, second = synthetic(seed=1), synthetic(seed=2).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    out = encoder.transform([str(path)])[0]
    expected = encoder.transform([Image.open(path).convert("RGB")])[0]  # PIL opens on frame 0
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_real_placeholder_gif_encodes_as_the_image_it_is(encoder, data_dir):
    path = data_dir / "hymenoptera" / "train" / "ants" / "imageNotFound.gif"
    if not path.exists():
        pytest.skip("placeholder not in this copy of the data")
    out = encoder.transform([str(path)])
    assert np.isfinite(out).all() and np.abs(out).sum() > 0


# ---------------------------------------------------------------- bad input
@pytest.fixture
def bad_files(tmp_path, photos):
    truncated = tmp_path / "truncated.jpg"
    with open(photos[0], "rb") as handle:
        truncated.write_bytes(handle.read()[:3000])
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a jpeg")
    return {"missing": str(tmp_path / "absent.jpg"), "truncated": str(truncated), "text": str(not_an_image)}


@pytest.mark.parametrize(
    "kind, reason", [("missing", "file not found"), ("truncated", "truncated"), ("text", "not a readable image")]
)
def test_unreadable_items_raise_naming_index_path_and_reason(encoder, photos, bad_files, kind, reason):
    X = [photos[0], photos[1], bad_files[kind]]
    with pytest.raises(ValueError) as info:
        encoder.transform(X)
    message = str(info.value)
    assert "index 2" in message and bad_files[kind] in message and reason in message
    assert "on_error='nan'" in message


def test_on_error_nan_returns_nan_rows_and_warns(photos, photo_features, bad_files):
    enc = make_encoder(on_error="nan").fit(photos)
    X = [photos[0], bad_files["missing"], photos[1], bad_files["truncated"]]
    with pytest.warns(UserWarning, match=r"returned NaN rows for 2 of 4 items.*first at index 1"):
        out = enc.transform(X)
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(out[[0, 2]], photo_features[:2], atol=1e-5)


def test_decompression_bomb_limit_stays_on(encoder, photos, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # anything over 2000 pixels is a "bomb"
    with pytest.raises(ValueError, match="decompression-bomb limit stays on"):
        encoder.transform([photos[0]])


def test_bad_arrays_are_explained(encoder):
    with pytest.raises(ValueError, match=r"values span \[70000, 70000\], outside \[0, 1\]"):
        encoder.transform([np.full((8, 8, 3), 70000.0)])
    with pytest.raises(ValueError, match="not an image"):
        encoder.transform([np.zeros((8, 8, 5), dtype=np.uint8)])
    with pytest.raises(ValueError, match="unsupported item type"):
        encoder.transform([42])


# ---------------------------------------------------------------- invariances
def test_batch_size_and_num_workers_do_not_change_outputs(photos, photo_features):
    for batch_size, workers in [(1, 0), (4, 2), (64, 1)]:
        out = make_encoder(batch_size=batch_size, num_workers=workers).fit(photos).transform(photos)
        np.testing.assert_allclose(out, photo_features, atol=1e-5)


def test_duplicates_are_decoded_once_and_order_is_kept(encoder, photos, photo_features, monkeypatch):
    from sktransfer import _images

    calls = []
    original = _images.to_rgb
    monkeypatch.setattr(_images, "to_rgb", lambda item, *args: calls.append(item) or original(item, *args))
    X = [photos[2], photos[0], photos[2], photos[1], photos[0]]
    out = encoder.transform(X)
    assert sorted(calls) == sorted(set(X))
    np.testing.assert_allclose(out, photo_features[[2, 0, 2, 1, 0]], atol=1e-5)


# ---------------------------------------------------------------- layers, pooling, preprocessing
def test_layer_and_pooling_choices(photos, photo_features):
    # MobileNetV2's penultimate features are the average-pooled last feature map.
    avg = make_encoder(layer="features.18").fit(photos)
    np.testing.assert_allclose(avg.transform(photos), photo_features, atol=1e-5)
    assert list(avg.get_feature_names_out()[:2]) == ["imageencoder_0000", "imageencoder_0001"]
    assert make_encoder(layer="features.18", pooling="max").fit(photos).embedding_dim_ == 1280
    both = make_encoder(layer="features.18", pooling="avgmax").fit(photos[:2])
    out = both.transform(photos[:2])
    assert out.shape == (2, 2560)
    np.testing.assert_allclose(out[:, :1280], photo_features[:2], atol=1e-5)
    flat = make_encoder(layer="features.18", pooling=None).fit(photos[:1])
    assert flat.embedding_dim_ == 1280 * 7 * 7
    several = make_encoder(layer=["features.16.add", "features.18"]).fit(photos[:2])
    assert several.layer_dims_ == {"features.16.add": 160, "features.18": 1280}
    names = several.get_feature_names_out()
    assert names[0] == "imageencoder_features.16.add_000" and names[-1] == "imageencoder_features.18_1279"
    assert len(set(names)) == 1440
    with pytest.raises(ValueError, match="did you mean"):
        make_encoder(layer="features.81").fit(photos[:1])
    with pytest.raises(ValueError, match="pooling='cls'"):
        make_encoder(layer="features.18", pooling="cls").fit(photos[:1])


def test_flattening_a_huge_map_warns(photos):
    with pytest.warns(UserWarning, match="pooling=None"):
        make_encoder(layer="features.1.conv.1", pooling=None).fit(photos[:1])


def test_pool_takes_the_class_token_of_vit_sequences():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    assert torch.equal(pool(tokens, "auto", class_token=True, channels_last_maps=False), tokens[:, 0])
    assert torch.equal(pool(tokens, "auto", class_token=False, channels_last_maps=False), tokens.mean(1))
    nhwc = torch.rand(2, 4, 4, 6)
    assert pool(nhwc, "avg", class_token=False, channels_last_maps=True).shape == (2, 6)


def test_vit_default_features_are_the_class_token():
    vit = ImageEncoder("vit_b_16", weights=None, device="cpu", num_workers=0)
    torch.manual_seed(0)  # both encoders must draw the same random weights
    with pytest.warns(UserWarning, match="randomly initialised"):
        vit.fit([synthetic()])
    assert vit.embedding_dim_ == 768 and vit.preprocess_.crop_size == [224]
    layer = ImageEncoder("vit_b_16", weights=None, layer="encoder.ln", device="cpu", num_workers=0)
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        layer.fit([synthetic()])
    np.testing.assert_allclose(layer.transform([synthetic()]), vit.transform([synthetic()]), atol=1e-4)


def test_preprocessing_follows_the_weights_and_can_be_overridden(photos):
    from torchvision.models import get_model_weights

    inception = get_model_weights("inception_v3").DEFAULT.transforms()
    assert inception.crop_size == [299]  # never a hard-coded 224
    enc = make_encoder(image_size=160, crop=1.0).fit(photos[:1])
    assert enc.preprocess_.crop_size == [160] and enc.preprocess_.resize_size == [160]
    assert enc.transform(photos[:1]).shape == (1, 1280)


def test_custom_module_and_preprocess_callable(photos):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())

    def preprocess(image):
        return torch.from_numpy(np.asarray(image.resize((32, 32)), dtype=np.float32).transpose(2, 0, 1) / 255.0)

    enc = ImageEncoder(net, preprocess=preprocess, device="cpu", num_workers=0).fit(photos[:2])
    out = enc.transform(photos[:2])
    assert out.shape == (2, 4)
    with torch.inference_mode():
        expected = net(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in photos[:2]])).mean((2, 3))
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)
    assert net.training  # the user's module is never modified in place
    loads = sum(model_registry.load_counts.values())
    twin = clone(enc).fit(photos[:1])  # a clone hashes to the same identity: shared, not reloaded
    assert twin.model_ is enc.model_ and sum(model_registry.load_counts.values()) == loads
    assert twin.identity_ == enc.identity_


# ---------------------------------------------------------------- weights and errors
def test_weights_validation_and_offline_failure(photos, monkeypatch):
    with pytest.raises(ValueError, match="Did you mean 'mobilenet_v2'"):
        make_encoder(model="mobilenet_v22").fit(photos[:1])
    with pytest.raises(ValueError, match="choose one of: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        make_encoder(weights="IMAGENET22K").fit(photos[:1])

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    import torchvision.models._api as api

    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    with pytest.raises(ModelNotFoundError) as info:
        make_encoder(weights="IMAGENET1K_V2").fit(photos[:1])
    message = str(info.value)
    assert "mobilenet_v2-7ebf99e0.pth" in message and "IMAGENET1K_V1" in message
    assert "network access" in message


# ---------------------------------------------------------------- scikit-learn integration
def test_pandas_in_and_out(photos):
    frame = pd.DataFrame({"photo": photos[:3]}, index=[7, 8, 9])
    enc = make_encoder().set_output(transform="pandas").fit(frame)
    out = enc.transform(frame)
    assert list(out.index) == [7, 8, 9] and out.shape == (3, 1280)
    assert out.columns[0] == "photo_0000" and list(enc.feature_names_in_) == ["photo"]


def test_grid_search_loads_weights_once(hymenoptera):
    X = hymenoptera["train"]["ants"][:6] + hymenoptera["train"]["bees"][:6]
    y = [0] * 6 + [1] * 6
    model_registry.clear()
    pipe = make_pipeline(make_encoder(), LogisticRegression(max_iter=1000))
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(X, y)
    assert sum(model_registry.load_counts.values()) == 1


def test_pickle_is_small_and_predicts_identically_in_a_fresh_process(tmp_path, photos):
    pipe = make_pipeline(make_encoder(), LogisticRegression(max_iter=1000)).fit(photos, [0, 0, 0, 1, 1, 1])
    blob = pickle.dumps(pipe)
    assert len(blob) - len(pickle.dumps(pipe[-1])) < 100_000
    (tmp_path / "pipe.pkl").write_bytes(blob)
    np.save(tmp_path / "expected.npy", pipe.predict_proba(photos))
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        pipe = pickle.load(open({str(tmp_path / "pipe.pkl")!r}, "rb"))
        np.testing.assert_allclose(pipe.predict_proba({photos!r}), np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6)
        print("same predictions")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_bf16_features_stay_close_to_fp32(photos, photo_features):
    out = make_encoder(precision="bf16").fit(photos).transform(photos)
    assert out.dtype == np.float32
    assert min(cosine(a, b) for a, b in zip(out, photo_features)) > 0.99


def test_init_stores_parameters_only_and_no_warning_for_pretrained(photos):
    enc = ImageEncoder(weights=WEIGHTS, layer=["features.18"], pooling="max")
    assert not [k for k in vars(enc) if k.endswith("_")]
    assert clone(enc).get_params() == enc.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_encoder().fit(photos[:1]).transform(photos[:1])
