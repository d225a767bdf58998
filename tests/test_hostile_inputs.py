"""Hostile inputs (issue 12): each gets a named error or a documented result, never a silent wrong one."""

import io
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import clone

from sktransfer import ImageEncoder, TextEncoder

WEIGHTS = "IMAGENET1K_V1"


@pytest.fixture(scope="module")
def images():
    return ImageEncoder(weights=WEIGHTS, device="cpu", num_workers=0).fit([np.zeros((8, 8), np.uint8)])


@pytest.fixture(scope="module")
def texts():
    return TextEncoder(device="cpu").fit(["x"])


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------- images
def test_thin_images_are_refused_before_the_resize_allocates_them(images):
    thin = png_bytes(Image.new("L", (20000, 1), 128))
    assert len(thin) < 1000
    with pytest.raises(ValueError, match=r"20000x1 image would be resized to 1,310,720,000 pixels"):
        images.transform([thin])


@pytest.mark.parametrize("shape", [(40, 30, 3), (40, 30, 4), (3, 40, 30), (4, 40, 30)])
def test_one_unwrapped_image_array_is_refused(images, shape):
    with pytest.raises(ValueError, match="looks like a single .* Wrap it in a list"):
        images.transform(np.zeros(shape, dtype=np.uint8))
    assert images.transform(np.zeros((2, 40, 30), dtype=np.uint8)).shape == (2, 1280)  # a grayscale stack


def test_float_images_follow_one_rule_whatever_their_container(images):
    # Issue 28: a float's range comes from its container ([0, 1]) or from value_range, never
    # from the values (a dark 0-255 photo was read as [0, 1], 255x too bright).
    gray = np.linspace(0, 200, 48 * 40, dtype=np.float32).reshape(40, 48)
    as_uint8 = images.transform([np.rint(gray).astype(np.uint8)])
    np.testing.assert_allclose(images.transform([gray / 255]), as_uint8, atol=1e-5, err_msg="float array, 0-1")
    np.testing.assert_allclose(images.transform([Image.fromarray(gray / 255, "F")]), as_uint8, atol=1e-5)
    in_255 = clone(images).set_params(value_range=(0, 255)).fit([gray])
    for name, item in {"F image, 0-255": Image.fromarray(gray, "F"), "float array, 0-255": gray}.items():
        np.testing.assert_allclose(in_255.transform([item]), as_uint8, atol=1e-5, err_msg=name)
    twelve_bit = Image.fromarray(gray * 4095 / 200, "F")  # a float TIFF of 12-bit data keeps its brightness
    in_4095 = clone(images).set_params(value_range=(0, 4095)).fit([twelve_bit])
    reference = images.transform([np.rint(gray * 255 / 200).astype(np.uint8)])
    np.testing.assert_allclose(in_4095.transform([twelve_bit]), reference, atol=1e-5)
    for bad, match in [(np.full((8, 8), np.nan, np.float32), "NaN or infinity"),
                       (np.full((8, 8), np.inf, np.float32), "NaN or infinity"),
                       (np.full((8, 8), -1.0, np.float32), r"span \[-1, -1\]"),
                       (np.full((8, 8), 1e6, np.float32), r"span \[1e\+06"),
                       (gray, r"value_range=\(0, 255\)")]:  # 0-255 data without value_range: named, not guessed
        for item in (bad, Image.fromarray(bad, "F")):
            with pytest.raises(ValueError, match=match):
                images.transform([item])


def test_pooling_that_has_nothing_to_pool_is_refused():
    for pooling in ["max", "avgmax", "cls", None, "avg"]:
        with pytest.raises(ValueError, match="has nothing to pool"):
            ImageEncoder(weights=WEIGHTS, device="cpu", pooling=pooling).fit([np.zeros((8, 8), np.uint8)])
    pooled = ImageEncoder(weights=WEIGHTS, device="cpu", layer="features.18", pooling="max").fit(["x.jpg"])
    assert pooled.embedding_dim_ == 1280


def test_empty_images_animated_images_and_failed_opens(images, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"no pixels \(0x0\)"):
        images.transform([Image.new("RGB", (0, 0))])
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    animated = Image.open(path)
    animated.seek(1)
    out = images.transform([animated])
    assert animated.tell() == 1  # the caller's image is left on its frame
    np.testing.assert_allclose(out, images.transform([str(path)]), atol=1e-5)  # frame 0 is the image
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_bytes(Image.new("RGB", (64, 64), "green"))[:60])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    with pytest.raises(ValueError, match="index 0"):
        images.transform([str(truncated)])
    assert opened and all(image.fp is None or image.fp.closed for image in opened)  # the failed open closed its file


def test_crop_too_small_is_a_named_error():
    with pytest.raises(ValueError, match="limit 4096"):
        ImageEncoder(weights=WEIGHTS, crop=1e-9).fit([np.zeros((8, 8), np.uint8)])


# ---------------------------------------------------------------------- texts and estimator use
def test_fit_transform_reads_a_generator_once(texts):
    out = clone(texts).fit_transform(text for text in ["a film", "a dull film"])
    assert out.shape == (2, 384)
    np.testing.assert_allclose(out, texts.transform(["a film", "a dull film"]), atol=1e-6)


def test_lone_surrogates_get_a_named_error(texts):
    with pytest.raises(ValueError, match=r"index 1 .* lone surrogate '\\ud800'.*errors='replace'"):
        texts.transform(["fine", "broken \ud800 text"])
    with pytest.raises(ValueError, match="lone surrogate"):
        clone(texts).fit(["\udcff"])


def test_booleans_are_not_integers_and_empty_model_names_are_refused():
    from sklearn.utils._param_validation import InvalidParameterError

    for params in [{"n_threads": True}, {"batch_size": True}, {"n_streams": True}]:
        with pytest.raises(InvalidParameterError, match="bool"):
            TextEncoder(**params).fit(["a"])
    for name in ["", "  "]:
        with pytest.raises(ValueError, match="empty name"):
            TextEncoder(model=name).fit(["a"])


def test_two_threads_share_one_encoder_without_mixing_state(texts):
    long = "word " * 300
    batches = [["a film", long], ["another film", "a third film"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text is truncated
        expected = [texts.transform(batch) for batch in batches]
    before = dict(vars(texts))  # the objects themselves: a per-call list or count would be replaced
    results = {}

    def run(i):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[i] = texts.transform(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        np.testing.assert_allclose(results[i], expected[i], atol=1e-5)
    assert vars(texts).keys() == before.keys()  # no per-call count stored on the estimator
    assert all(vars(texts)[name] is value for name, value in before.items())


def test_a_series_with_another_name_is_refused(texts):
    fitted = clone(texts).fit(pd.Series(["x"], name="a"))
    with pytest.raises(ValueError, match="fitted on the column 'a' and is given a Series named 'b'"):
        fitted.transform(pd.Series(["x"], name="b"))
    assert fitted.transform(pd.Series(["x"], name="a")).shape == (1, 384)
    assert fitted.transform(["x"]).shape == (1, 384)  # unnamed input carries no name to compare


# ---------------------------------------------------------------------- command line
def test_embed_checks_the_output_before_encoding(tmp_path):
    # The input names a missing photo: had encoding started first, that would be the error.
    listing = tmp_path / "photos.txt"
    listing.write_text(f"{tmp_path / 'absent.jpg'}\n")
    from test_docs import sktransfer_in_process  # cli.main here; tests/test_cli.py runs the entry point

    taken = tmp_path / "out.npy"
    taken.mkdir()  # the output path is a folder
    result = sktransfer_in_process(["embed", str(listing), "-o", str(taken), "--no-cache"], {})
    assert result.returncode == 2, result.stderr
    assert f"cannot write the output {taken}: it is a folder" in result.stderr
    inside_a_file = sktransfer_in_process(["embed", str(listing), "-o", str(listing / "out.npy"), "--no-cache"], {})
    assert inside_a_file.returncode == 2 and "output folder does not exist" in inside_a_file.stderr


def test_error_messages_keep_their_closing_quote():
    from sktransfer.cli import error_message

    denied = OSError(13, "Permission denied")
    denied.filename = "/data/out.npy"
    assert error_message(denied) == "[Errno 13] Permission denied: '/data/out.npy'"
    assert error_message(KeyError("photo")) == "photo"
    from sktransfer._messages import flag_style, setting

    with flag_style():  # advice is written as flags when it is built, never rewritten afterwards
        assert error_message(ValueError(f"bad item; set {setting('on_error', 'nan')} to skip")) == \
            "bad item; set --on-error nan to skip"
    assert error_message(ValueError("bad item; set on_error='nan' to skip")) == "bad item; set on_error='nan' to skip"
