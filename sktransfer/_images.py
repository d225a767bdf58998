"""Reading every kind of image a user has into RGB, the way a careful person would.

``to_rgb`` is the single entry point: it accepts a path, raw bytes, a PIL image or a NumPy array
and returns an 8-bit RGB ``PIL.Image``. Every source takes the same route to the network, so the
same picture gives the same features whether it arrives as a file, a uint8 array or floats (float
and 16-bit data are scaled to 8 bits: pretrained networks were trained on 8-bit images). Failures
raise :class:`ImageReadError` with a reason a user can act on; callers add the index.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._content import bytes_key, file_content_key, pixels_key

__all__ = ["ImageReadError", "check_resized_size", "content_key", "describe_item", "is_image_item", "item_key", "to_rgb"]

#: Transparent pixels are composited onto this colour (white, as image viewers show them).
BACKGROUND = (255, 255, 255)


class ImageReadError(ValueError):
    """An item could not be read as an image; the message says why."""


def describe_item(item) -> str:
    """Short description of an item for error messages (a path stays a path)."""
    if isinstance(item, (str, os.PathLike)):
        return repr(os.fspath(item))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, Image.Image):
        return f"<PIL image {item.mode} {item.size[0]}x{item.size[1]}>"
    if isinstance(item, np.ndarray):
        return f"<array {item.dtype} {item.shape}>"
    return f"<{type(item).__name__}: {item!r:.60}>"


def item_key(item):
    """Key under which identical items are encoded once per call.

    Paths are keyed by their resolved location and bytes by their value (equal bytes, one
    encoding; never a truncated hash, which could merge two different files); in-memory images by
    object identity (hashing every pixel array would cost more than it saves here).
    """
    if isinstance(item, (str, os.PathLike)):
        return ("path", os.path.realpath(os.fspath(item)))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(item))
    return ("object", id(item))


def content_key(item) -> bytes | None:
    """Digest of an item's content for the embedding cache, or None if it cannot be read.

    A file and its bytes share a key (same content, same vector); a renamed file keeps its key
    and an edited one gets a new one (a file is re-hashed when its stat signature changes, so any
    replacement or write is seen: see :mod:`sktransfer._content`). In-memory images (PIL images,
    arrays) are keyed by the 8-bit RGB pixels that
    :func:`to_rgb` makes of them, which is exactly what the network sees: palette, transparency,
    EXIF orientation, frame and bit depth all count, and nothing else does.
    """
    try:
        if isinstance(item, (str, os.PathLike)):
            return file_content_key(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes_key(item)
        if isinstance(item, (Image.Image, np.ndarray)):
            rgb = to_rgb(item)
            return pixels_key(rgb.size, rgb.tobytes())
    except (OSError, ValueError):
        return None  # unreadable: not cached, and the encoder reports the failure
    return None


def is_image_item(item) -> bool:
    """Whether ``item`` is of a kind :func:`to_rgb` reads (its content is checked later)."""
    return isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray))


def _open(item, draft_size: int | None) -> Image.Image:
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.exists():
            raise ImageReadError(f"file not found: {os.fspath(item)!r}")
        if path.is_dir():
            raise ImageReadError(f"{os.fspath(item)!r} is a folder, not an image file")
        source = path
    else:
        source = io.BytesIO(bytes(item))
    image = None
    try:
        image = Image.open(source)
        if draft_size and image.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale when the file is much larger than the model's input:
            # the DCT does the downscaling, far cheaper than decoding everything and resizing.
            image.draft(image.mode if image.mode in ("CMYK", "L") else "RGB", (draft_size, draft_size))
        image.load()
    except Image.DecompressionBombError as exc:
        _close(image)
        raise ImageReadError(
            f"{exc} Pillow's decompression-bomb limit stays on; if you trust this file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS before encoding."
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        _close(image)  # a failed decode must not leave the file open
        raise ImageReadError(f"unreadable or truncated image ({exc})") from None
    return image


def _close(image) -> None:
    if image is not None:
        image.close()


def check_resized_size(image: Image.Image, resize_side: int | None, where: str = "") -> None:
    """Refuse an image whose resize would exceed the decompression-bomb limit.

    The shorter side is resized to ``resize_side``, so a thin image (1x20000) grows to a huge one
    (256x5,120,000): the limit that guards decoding must guard the resize too.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if resize_side is None or limit is None:
        return
    short, long = sorted(image.size)
    resized = resize_side * int(long * resize_side / short)
    if resized > limit:
        raise ImageReadError(
            f"a {image.width}x{image.height} image{where} would be resized to {resized:,} pixels (shorter side "
            f"{resize_side}), above Pillow's decompression-bomb limit of {limit:,}; crop or pad it to a less "
            "extreme aspect ratio, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        )


def _pil_to_rgb(image: Image.Image):
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"image has no pixels ({image.width}x{image.height})")
    # Animated formats: the first frame is the image.
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High-bit-depth grayscale: scale the real range to 8 bits instead of clipping at 255
        # (what Image.convert does). Pretrained networks saw 8-bit images, so nothing is lost.
        values = np.asarray(image, dtype=np.float32)
        if mode.startswith("I;16"):
            return _float_to_rgb(values / 65535.0)
        return _float_to_rgb(values / _range_of(values, "float" if mode == "F" else "32-bit integer"))
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _range_of(values: np.ndarray, kind: str) -> float:
    """The range a high-bit-depth image's values come from: [0, 1], [0, 255] or [0, 65535].

    The smallest of the three that holds the maximum, so 8-bit data stored as floats or 12-bit
    sensor data in a float TIFF keep their brightness. Non-finite, negative or larger values
    have no such reading and are refused.
    """
    if not np.isfinite(values).all():
        raise ImageReadError(f"{kind} image contains NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0.0 or high > 65535.0:
        raise ImageReadError(
            f"{kind} image values span [{low:.3g}, {high:.3g}]; images must lie in [0, 1], [0, 255] or "
            "[0, 65535] (rescale the data to one of them, or pass it as uint8)"
        )
    return 1.0 if high <= 1.0 else 255.0 if high <= 255.0 else 65535.0


def _float_to_rgb(values: np.ndarray) -> Image.Image:
    """[0, 1] floats (H, W) or (H, W, 3) to an 8-bit RGB image, rounding to nearest."""
    pixels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").convert("RGB")


def _array_to_rgb(array: np.ndarray):
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.size == 0:
        raise ImageReadError(f"array of shape {array.shape} has no pixels")
    if array.dtype == np.uint8:
        mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.shape[2] if array.ndim == 3 else 2]
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), mode=mode))
    if array.dtype.kind == "f":
        array = array / _range_of(array, "float array")  # the same rule as PIL float images
        if array.ndim == 3 and array.shape[2] == 4:  # composite the alpha channel onto white
            alpha = array[:, :, 3:4]
            array = array[:, :, :3] * alpha + (1.0 - alpha) * np.asarray(BACKGROUND) / 255.0
        return _float_to_rgb(array)
    if array.dtype == np.uint16:
        return _array_to_rgb(array.astype(np.float32) / 65535.0)
    raise ImageReadError(f"array dtype {array.dtype} is not supported; use uint8, uint16 or float (in [0, 1], [0, 255] or [0, 65535])")


def to_rgb(item, draft_size: int | None = None):
    """Read one item as an 8-bit RGB ``PIL.Image``.

    Parameters
    ----------
    item : str, os.PathLike, bytes, PIL.Image.Image or numpy.ndarray
        A file path, the encoded bytes of a file, an image, or an array (uint8 HxW / HxWx3 /
        HxWx4, uint16, or float in [0, 1], [0, 255] or [0, 65535]).
    draft_size : int or None, default=None
        Let JPEG files decode at a reduced scale, no smaller than this on either side.

    Returns
    -------
    image : PIL.Image.Image
        Mode RGB, EXIF orientation applied, first frame of animations, alpha composited onto white.

    Raises
    ------
    ImageReadError
        Missing file, unreadable or truncated data, decompression bomb, unsupported array.
    """
    if isinstance(item, Image.Image):
        try:
            item.load()
            if getattr(item, "n_frames", 1) > 1:  # read frame 0 without moving the caller's image
                position = item.tell()
                item.seek(0)
                first = item.copy()
                item.seek(position)
                item = first
        except (OSError, EOFError) as exc:
            raise ImageReadError(f"unreadable or truncated image ({exc})") from None
        return _pil_to_rgb(item)
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item)
    if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _pil_to_rgb(_open(item, draft_size))
    raise ImageReadError(
        f"unsupported item type {type(item).__name__}; pass a file path, bytes, a PIL image or a NumPy array"
    )
