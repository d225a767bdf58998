"""Image-input defects (issue 28): each gets a named error or a documented rule, never a hang or a silent wrong image."""

import gc
import io
import os
import pickle
import re
import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import DATA_DIR
from PIL import Image
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import EmbeddingCache, ImageEncoder
from sktransfer import _images as images_module
from sktransfer._content import NotRegularFileError, file_content_key, file_digest
from sktransfer._images import content_key, to_rgb

WEIGHTS = "IMAGENET1K_V1"
DEFAULT_FINGERPRINT = "617a3b5bd63a"  # tests/test_identity.py pins it too


def make(**params):
    return ImageEncoder(weights=WEIGHTS, device="cpu", num_workers=0, **params).fit([np.zeros((8, 8), np.uint8)])


@pytest.fixture(scope="module")
def images():
    return make()


@pytest.fixture(scope="module")
def lenient():
    return make(on_error="nan")


def encoded(image, fmt="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(size=(40, 32), top=200.0):
    """A grey ramp (H, W) of floats from 0 to ``top``."""
    return np.linspace(0.0, top, size[0] * size[1]).reshape(size[1], size[0])


def within(seconds, function, *args):
    """``function(*args)`` in a thread; a call that does not return in time fails the test instead of hanging it."""
    result = {}

    def run():
        try:
            result["value"] = function(*args)
        except BaseException as exc:  # handed to the test below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(function, '__name__', function)} did not return within {seconds} s (it hangs)")
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---------------------------------------------------------------------- 1. the decompression-bomb limit
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own notice, before our error
def test_images_over_the_pixel_limit_follow_on_error_between_one_and_two_times_the_limit(images, lenient,
                                                                                        monkeypatch, tmp_path):
    small, over, far_over = (encoded(Image.new("RGB", (side, side), "olive")) for side in (300, 400, 500))
    path = tmp_path / "over.png"
    path.write_bytes(over)
    # 300x300 is under it (and so is the 256x256 resize), 400x400 1.6 times over it, 500x500 2.5 times.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    assert np.isfinite(images.transform([small])).all()
    for item, size in [(over, "400x400 = 160,000 pixels"), (str(path), "400x400 = 160,000 pixels"),
                       (far_over, "250000 pixels")]:
        with pytest.raises(ValueError, match=rf"index 1 .*\({size}\) exceeds .*limit stays on.*MAX_IMAGE_PIXELS"):
            images.transform([small, item])
    with pytest.warns(UserWarning, match="NaN rows for 2 of 3"):
        out = lenient.transform([over, small, far_over])
    assert np.isnan(out[[0, 2]]).all() and np.isfinite(out[1]).all()
    # The warning is not the mechanism: under -W error the refusal is the same error.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"index 0 .*exceeds limit of 100000 pixels.*limit stays on"):
            images.transform([over])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the limit switched off: decoded
    assert np.isfinite(images.transform([over, far_over])).all()


def test_a_raised_limit_reaches_decoding_processes(monkeypatch):
    # A spawned decoding process imports Pillow afresh, with the default limit; the dataset carries
    # the limit in force when transform started.
    from torch.utils import data

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    dataset = images_module.ImageDataset([encoded(Image.new("RGB", (150, 100)))], lambda image: torch.zeros(3, 2, 2),
                                         None, None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # what a fresh process would have
    monkeypatch.setattr(data, "get_worker_info", lambda: object())
    _, tensor, reason = dataset[0]
    assert reason is None and Image.MAX_IMAGE_PIXELS == 20_000


def test_advice_keeps_the_style_it_was_asked_in_inside_decoding_processes():
    # The CLI builds its datasets inside flag_style; a decoding process runs outside it, so the
    # dataset carries the style, and a float photo out of [0, 1] is advised in the CLI's terms.
    from sktransfer._messages import flag_style

    bright = np.full((8, 8, 3), 200.0, dtype=np.float32)
    with flag_style():
        for_cli = images_module.ImageDataset([bright], lambda image: torch.zeros(3, 2, 2), None, None)
    for_python = images_module.ImageDataset([bright], lambda image: torch.zeros(3, 2, 2), None, None)
    assert "--value-range 0,255" in for_cli[0][2] and "value_range=(0, 255)" not in for_cli[0][2]
    assert "value_range=(0, 255)" in for_python[0][2] and "--value-range" not in for_python[0][2]


# ---------------------------------------------------------------------- 2. the range of float and 16-bit data
def test_floats_are_read_as_zero_to_one_and_other_ranges_are_named_not_guessed(images):
    dark = gradient(top=1.0).astype(np.float32)  # a dark photo stored as 0-255 floats: every value <= 1
    bright = np.rint(gradient(top=200.0)).astype(np.float32)
    ranged = make(value_range=(0, 255))
    as_uint8 = images.transform([np.rint(dark).astype(np.uint8), np.rint(bright).astype(np.uint8)])
    np.testing.assert_allclose(ranged.transform([dark, bright]), as_uint8, atol=1e-5)
    # Without value_range a 0-255 photo is refused, naming the index, its span and the fix, so the
    # dark ones of the same set cannot be silently read 255 times too bright beside it.
    with pytest.raises(ValueError, match=r"index 1 .*values span \[0, 200\], outside \[0, 1\].*value_range=\(0, 255\)"):
        images.transform([dark, bright])
    for dtype in (np.float16, np.float32, np.float64):  # every float width reads [0, 1] alike
        unit = (bright / 255).astype(dtype)
        np.testing.assert_allclose(images.transform([unit]), as_uint8[1:], atol=1e-5, err_msg=str(dtype))
    np.testing.assert_allclose(images.transform([Image.fromarray(bright / 255)]), as_uint8[1:], atol=1e-5)


def test_twelve_bit_data_keep_their_brightness_only_with_their_range(images, tmp_path):
    twelve = np.rint(gradient(top=4095.0))
    expected = images.transform([np.rint(twelve / 4095 * 255).astype(np.uint8)])
    as_16_bit = images.transform([np.rint(twelve / 65535 * 255).astype(np.uint8)])
    tiff = tmp_path / "twelve.tif"
    Image.fromarray(twelve.astype(np.float32)).save(tiff)  # a float TIFF of 12-bit sensor data
    # Read as [0, 1] by default: refused (it was divided by 65535: 16 times too dark).
    with pytest.raises(ValueError, match=r"F \(float\) image values span \[0, 4095\].*value_range=\(0, 4095\)"):
        images.transform([str(tiff)])
    twelve_bit = make(value_range=(0, 4095))
    uint16 = np.rint(twelve).astype(np.uint16)
    png16 = encoded(Image.fromarray(uint16))
    for item in (str(tiff), uint16, png16, twelve.astype(np.float32)):
        np.testing.assert_allclose(twelve_bit.transform([item]), expected, atol=1e-5)
    # 16-bit containers are 0-65535 by default (the PNG standard scales 12-bit data to it).
    np.testing.assert_allclose(images.transform([uint16, png16]), np.repeat(as_16_bit, 2, 0), atol=1e-5)
    with pytest.raises(ValueError, match=r"uint16 array values span \[65535, 65535\], outside value_range=\(0, 4095\)"):
        twelve_bit.transform([np.full((8, 8), 65535, np.uint16)])


def test_integer_images_read_in_the_range_of_their_container(images, tmp_path):
    gray = np.rint(gradient(top=255.0)).astype(np.uint8)
    reference = images.transform([gray])
    # An I image made in memory has no range of its own: convert("I") keeps 0-255 of 8-bit data.
    eight_bit = make(value_range=(0, 255))
    np.testing.assert_allclose(eight_bit.transform([Image.fromarray(gray).convert("I")]), reference, atol=1e-5)
    # A 16-bit PGM decodes to an I image of 0-65535, like a 16-bit PNG.
    sixteen = gray.astype(np.uint16) * 257
    pgm = tmp_path / "depth.pgm"
    pgm.write_bytes(b"P5 40 32 65535\n" + sixteen.astype(">u2").tobytes())
    with Image.open(pgm) as opened:
        assert opened.mode == "I"
        np.testing.assert_allclose(images.transform([str(pgm), opened, sixteen]), np.repeat(reference, 3, 0),
                                   atol=1e-5)
    with pytest.raises(ValueError, match=r"in-memory I \(32-bit integer\) image values span \[0, 65535\]"):
        eight_bit.transform([Image.open(pgm).convert("I").copy()])
    np.testing.assert_allclose(make(value_range=(0, 65535)).transform([Image.open(pgm).convert("I").copy()]),
                               reference, atol=1e-5)
    # Integer arrays other than uint8 and uint16 have no standard range: value_range, or an error.
    with pytest.raises(ValueError, match=r"index 0 .*dtype int64 has no standard range.*value_range"):
        images.transform([gray.astype(np.int64)])
    np.testing.assert_allclose(make(value_range=(0, 255)).transform([gray.astype(np.int64)]), reference, atol=1e-5)
    np.testing.assert_allclose(make(value_range=(-1, 1)).transform([gray / 127.5 - 1]), reference, atol=1e-5)


def test_value_range_enters_the_identity_and_the_cache_keys(images, tmp_path):
    assert images.identity_.fingerprint.startswith(DEFAULT_FINGERPRINT)
    assert "value_range" not in images.identity_.settings
    ranged = make(value_range=(0, 255))
    assert ranged.identity_.settings["value_range"] == [0.0, 255.0]
    assert ranged.identity_.fingerprint != images.identity_.fingerprint
    assert make(value_range=[0.0, 255.0]).identity_.fingerprint == ranged.identity_.fingerprint
    assert make(value_range=(0, 4095)).identity_.fingerprint != ranged.identity_.fingerprint
    photo = (0.1 + gradient(top=0.3)).astype(np.float32)  # 0.1-0.4: black under value_range=(0, 255)
    assert not np.allclose(ranged.transform([photo]), images.transform([photo]), atol=1e-3)
    # In-memory images are keyed by the pixels the network sees under the range in force.
    dark = np.rint(photo).astype(np.uint8)
    assert content_key(photo, value_range=(0, 255)) == content_key(dark) != content_key(photo)
    cache = EmbeddingCache(tmp_path / "cache")
    one, other = make(cache=cache), make(cache=cache, value_range=(0, 255))
    np.testing.assert_allclose(one.transform([photo]), images.transform([photo]), atol=1e-5)
    np.testing.assert_allclose(other.transform([photo]), ranged.transform([photo]), atol=1e-5)
    changed = make(value_range=(0, 255)).set_params(value_range=(0, 4095))
    with pytest.raises(ValueError, match="value_range was changed from .* after fit"):
        changed.transform([photo])


def test_value_range_changes_the_fingerprint_exactly_when_the_output_changes(images):
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),  # 8-bit: never rescaled
             rng.integers(0, 256, (32, 40), dtype=np.uint16),
             rng.random((32, 40, 3)).astype(np.float32)]
    fingerprints, outputs = {}, {}
    for name, value_range in {"default": None, "(0, 255)": (0, 255), "[0.0, 255.0]": [0.0, 255.0],
                              "(0, 4095)": (0, 4095), "(0, 65535)": (0, 65535)}.items():
        encoder = clone(images).set_params(value_range=value_range).fit(items)
        fingerprints[name], outputs[name] = encoder.identity_.fingerprint, encoder.transform(items)
    names = list(fingerprints)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            differ = not np.allclose(outputs[a], outputs[b], atol=1e-6)
            assert (fingerprints[a] != fingerprints[b]) == differ, (a, b)
            np.testing.assert_allclose(outputs[a][0], outputs[b][0], atol=1e-6)  # the uint8 row never moves


@pytest.mark.parametrize("bad", [(255, 0), (0, 0), (0,), (0, 1, 2), (0, float("inf")), (0, float("nan")),
                                 (True, 2), ("0", "255")])
def test_value_range_must_be_two_finite_increasing_numbers(bad):
    with pytest.raises(ValueError, match=r"value_range must be None or \(low, high\)"):
        make(value_range=bad)


def test_value_range_of_a_wrong_type_is_an_invalid_parameter():
    with pytest.raises(InvalidParameterError, match="value_range"):
        make(value_range="0-255")


# ---------------------------------------------------------------------- 3. every PIL mode
ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}


@pytest.mark.parametrize("mode", sorted(set(Image.MODES) | {"RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV",
                                                                 "RGBA", "LA", "PA", "La", "RGBa", "RGBX", "I;16",
                                                                 "I;16B", "I;16L", "I;16N", "I", "F"}))
def test_every_pil_mode_converts(images, mode):
    image = Image.new(mode, (24, 16))
    if mode == "I":  # made in memory: 8- or 16-bit, only value_range can say (refused without it)
        with pytest.raises(ValueError, match="mode I"):
            to_rgb(image)
        images = make(value_range=(0, 255))
    ranged = {"value_range": (0, 255)} if mode == "I" else {}
    assert to_rgb(image, **ranged).mode == "RGB"
    out = images.transform([image])
    assert out.shape == (1, 1280) and np.isfinite(out).all()
    if mode in ALPHA_MODES:  # fully transparent: white, whatever the hidden colour
        assert to_rgb(image, **ranged).getpixel((0, 0)) == (255, 255, 255)


def test_premultiplied_alpha_is_composited_like_straight_alpha():
    assert to_rgb(Image.new("La", (2, 2), (50, 128))).getpixel((0, 0)) == \
        to_rgb(Image.new("LA", (2, 2), (100, 128))).getpixel((0, 0))
    assert to_rgb(Image.new("RGBa", (2, 2), (50, 25, 0, 128))).getpixel((0, 0)) == \
        to_rgb(Image.new("RGBA", (2, 2), (100, 50, 0, 128))).getpixel((0, 0))


def test_sixteen_bit_modes_of_every_byte_order_keep_their_values():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    for mode, data in [("I;16", values.tobytes()), ("I;16L", values.astype("<u2").tobytes()),
                       ("I;16B", values.astype(">u2").tobytes()), ("I;16N", values.tobytes())]:
        rgb = to_rgb(Image.frombytes(mode, (3, 1), data))
        assert [rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255], mode


# ---------------------------------------------------------------------- 4. paths that are not regular files
@pytest.fixture
def special_paths(tmp_path):
    fifo = tmp_path / "stream.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    found = {"a named pipe": fifo, "a named pipe (through a link)": link, "a folder": folder}
    if os.path.exists("/dev/zero"):
        found["a character device"] = "/dev/zero"
    return found


@pytest.mark.parametrize("cached", [False, True])
def test_paths_that_are_not_regular_files_are_refused_before_reading(images, lenient, special_paths, tmp_path,
                                                                     cached):
    photo = encoded(Image.new("RGB", (32, 32), "teal"))
    cache = EmbeddingCache(tmp_path / "cache") if cached else None
    strict, tolerant = (make(cache=cache, on_error=policy) for policy in ("raise", "nan")) if cached \
        else (images, lenient)
    for kind, path in special_paths.items():
        expected = "is a folder" if kind == "a folder" else rf"is not a regular file \({kind.split(' (')[0]}\)"
        where = re.escape(f"index 1 ('{path}'): '{path}' ")
        with pytest.raises(ValueError, match=where + expected):
            within(30, strict.transform, [photo, str(path)])
    with pytest.warns(UserWarning, match=r"NaN rows for \d of .*first at index 1 .* is not a regular file"):
        out = within(30, tolerant.transform, [photo, *map(str, special_paths.values())])
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()


def test_content_hashes_never_read_special_files(special_paths):
    for kind, path in special_paths.items():
        for hashing in (file_content_key, file_digest):
            with pytest.raises(NotRegularFileError, match=rf"is not a regular file \({kind.split(' (')[0]}\)"):
                within(30, hashing, path)


def test_missing_files_and_broken_links_say_which(images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="file not found: .* is a symbolic link to a missing file"):
        images.transform([str(broken)])
    with pytest.raises(ValueError, match=r"index 0 .*file not found: '.*absent.png'"):
        images.transform([str(tmp_path / "absent.png")])


# ---------------------------------------------------------------------- 5. closed PIL images
def test_a_closed_pil_image_is_named_with_the_fix(images, lenient, tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "navy").save(path)
    reference = images.transform([str(path)])
    with Image.open(path) as closed:
        pass
    with pytest.raises(ValueError, match=r"index 1 .*was closed before its pixels were read.*im\.load\(\).*im\.copy\(\)"):
        images.transform([str(path), closed])
    released = Image.open(path)
    released.load()
    released.close()  # close() releases the pixels even of a loaded image
    with pytest.raises(ValueError, match="was closed"):
        images.transform([released])
    with pytest.warns(UserWarning, match="NaN rows for 2 of 3"):
        assert np.isnan(lenient.transform([closed, str(path), released])[[0, 2]]).all()
    with Image.open(path) as loaded:
        loaded.load()  # the fix the message gives: read inside the block
        copied = loaded.copy()
    np.testing.assert_allclose(images.transform([loaded, copied]), np.repeat(reference, 2, 0), atol=1e-5)


def test_a_closed_animated_image_on_another_frame_is_named(images, tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as animated:
        animated.seek(1)
        animated.load()
    with pytest.raises(ValueError, match="was closed"):
        images.transform([animated])
    with Image.open(path) as first:
        first.load()  # on frame 0 and loaded: readable after the block
    np.testing.assert_allclose(images.transform([first]), images.transform([str(path)]), atol=1e-5)


# ---------------------------------------------------------------------- 6. no file handle left open
def test_decoding_leaves_no_file_open(lenient, tmp_path):
    animated = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green")]
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=50)
    pages = tmp_path / "pages.tif"
    frames[0].save(pages, save_all=True, append_images=frames[1:])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(encoded(Image.new("RGB", (64, 64), "green"))[:60])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    placeholder = DATA_DIR / "hymenoptera" / "train" / "ants" / "imageNotFound.gif"  # a GIF of the real data set
    items = [str(animated), str(pages), str(truncated), str(text), str(tmp_path / "absent.png"), animated.read_bytes()]
    if placeholder.exists():
        items.append(str(placeholder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = lenient.transform(items)
        del out
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    for item in items:  # the reader itself, item by item, as the decoding processes call it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                to_rgb(item)
            except ValueError:
                pass
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], item


def test_a_tensor_is_refused_with_how_to_pass_it(images):
    with pytest.raises(ValueError, match=r"index 0 .*unsupported item type Tensor.*permute\(1, 2, 0\)\.numpy\(\)"):
        images.transform([torch.rand(3, 8, 8)])


# ---------------------------------------------------------------------- review: ambiguous I, lazy bombs, spans
def test_an_in_memory_i_image_without_value_range_is_refused_never_read_257_times_too_bright(images, tmp_path):
    dark = np.linspace(0, 199, 32 * 40).reshape(32, 40).astype(np.uint16)  # a dark 16-bit PNG: max 199
    path = tmp_path / "dark16.png"
    Image.fromarray(dark).save(path)
    from_file = images.transform([str(path)])
    with Image.open(path) as opened:
        in_memory = opened.convert("I")
    assert in_memory.format is None and in_memory.mode == "I"
    with pytest.raises(ValueError, match=r"index 1 .*mode I .*spanning \[0, 199\].*value_range=\(0, 255\) for "
                                         r"8-bit data or value_range=\(0, 65535\) for 16-bit data"):
        images.transform([str(path), in_memory])
    with pytest.raises(ValueError, match=r"mode I "):  # Image.fromarray of int32 too: no format, no range
        images.transform([Image.fromarray(dark.astype(np.int32))])
    # Stated, it is read as stated: 16-bit gives the file's vectors.
    np.testing.assert_allclose(make(value_range=(0, 65535)).transform([in_memory]), from_file, atol=1e-5)
    with Image.open(path) as opened:  # decoded from a file: the format says 16-bit
        np.testing.assert_allclose(images.transform([opened]), from_file, atol=1e-5)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Image.open's, at 1-2x the limit
def test_a_lazily_opened_image_obeys_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "40x40.png"
    Image.new("RGB", (40, 40), "red").save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"40x40 = 1,600 pixels\) exceeds the limit of 1,000"):
        to_rgb(str(path))
    with Image.open(path) as lazy, pytest.raises(ValueError, match=r"40x40 = 1,600 pixels\) exceeds the limit"):
        to_rgb(lazy)
    with Image.open(path) as loaded:  # already decoded: in memory, the limit protects nothing
        loaded.load()
        assert to_rgb(loaded).size == (40, 40)


@pytest.mark.parametrize("value_range", [(-1e308, 1e308), (0, float("inf")), (1, 1), (2, 1)])
def test_a_value_range_whose_span_overflows_is_refused(value_range):
    with pytest.raises(ValueError, match=r"value_range must be .*finite span"):
        make(value_range=value_range)


def test_an_encoder_pickled_before_value_range_existed_has_its_default():
    encoder = make()
    old = pickle.loads(pickle.dumps(encoder))
    del old.__dict__["value_range"]  # what an earlier version pickled: no such parameter, no digest of it
    old._fitted_digests.pop("value_range", None)
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.value_range is None and loaded.get_params()["value_range"] is None
    assert "ImageEncoder(" in repr(loaded)
    assert clone(loaded).get_params() == encoder.get_params()
    image = np.zeros((8, 8), np.uint8)
    np.testing.assert_allclose(loaded.transform([image]), encoder.transform([image]), atol=1e-6)
