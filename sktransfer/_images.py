"""Reading every kind of image a user has into 8-bit RGB: `to_rgb`, and `ImageDataset` for a DataLoader.
Data that are not 8-bit are scaled from their container's range or ``value_range``, never guessed
from their values (a dark 0-255 float photo would read as a bright [0, 1] one), never clipped.
"""

from __future__ import annotations

import io
import math
import numbers
import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ._columns import numbers_hint
from ._content import NotRegularFileError, bytes_key, file_content_key, open_regular_file, pixels_key
from ._messages import ItemError, flag_style, flags_on, setting
from ._runtime import ordered_map

__all__ = ["IMAGE_EXTENSIONS", "ImageDataset", "ImageReadError", "check_images", "check_value_range", "collate", "content_key",
           "decode_ahead", "describe_item", "is_image_item", "item_key", "to_rgb", "unsupported_reason"]

#: File name endings read as image files where a path could be either (a folder, a list, a column).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

#: Transparent pixels are composited onto white, as image viewers show them.
BACKGROUND = (255, 255, 255)

#: The range each container's values are read in when no ``value_range`` is given.
SIXTEEN_BIT, UNIT = (0.0, 65535.0), (0.0, 1.0)

#: PIL modes whose pixels are not 8-bit: scaled by `_scaled`, not by ``Image.convert``.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

CLOSED = ("the PIL image was closed before its pixels were read (its `with Image.open(...)` block ended, or "
          ".close() was called); read it while it is open (im.load() inside the block, or pass im.copy()), or "
          "pass the file path instead")


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


def unsupported_reason(item) -> str:
    """Why an item of a kind no image reader accepts is refused, and what to pass instead."""
    reason = f"unsupported item type {type(item).__name__}; pass a file path, bytes, a PIL image or a NumPy array"
    if type(item).__module__.split(".")[0] == "torch":  # a tensor: say how to pass it, and how floats read
        reason += (" (a tensor: tensor.numpy(), or tensor.permute(1, 2, 0).numpy() for a (C, H, W) one; floats "
                   "are read as [0, 1])")
    return reason


def check_value_range(value_range) -> tuple[float, float] | None:
    """The ``value_range`` parameter as ``(low, high)`` floats, or None; a clear error for anything else."""
    if value_range is None:
        return None
    ok = (isinstance(value_range, (tuple, list)) and len(value_range) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)
                  for v in value_range)
          and value_range[0] < value_range[1]
          and math.isfinite(float(value_range[1]) - float(value_range[0])))  # (-1e308, 1e308) overflows
    if not ok:
        raise ValueError(
            f"value_range must be None or (low, high), two finite numbers with low < high and a finite span "
            f"high - low, such as (0, 255) or (0, 4095), got {value_range!r}")
    return float(value_range[0]), float(value_range[1])


def item_key(item):
    """Key of identical items within a call: bytes by value, in-memory images by identity (hashing costs more)."""
    if isinstance(item, (str, os.PathLike)):
        return ("path", os.path.realpath(os.fspath(item)))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(item))
    return ("object", id(item))


def content_key(item, value_range=None) -> bytes | None:
    """Digest of an item's content for the cache (in-memory images: their `to_rgb` pixels), or None."""
    try:
        if isinstance(item, (str, os.PathLike)):
            return file_content_key(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes_key(item)
        if isinstance(item, (Image.Image, np.ndarray)):
            rgb = to_rgb(item, value_range=value_range)
            return pixels_key(rgb.size, rgb.tobytes())
    except (OSError, ValueError):
        pass  # unreadable: not cached, and the encoder reports the failure
    return None


def is_image_item(item) -> bool:
    """Whether ``item`` is of a kind `to_rgb` reads (its content is checked later)."""
    return isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray))


def check_images(items: list, on_error: str, owner: str) -> np.ndarray:
    """The rows of a kind `to_rgb` reads; with ``on_error="raise"`` an `ItemError` names the first other."""
    valid = np.fromiter((is_image_item(item) for item in items), dtype=bool, count=len(items))
    if on_error == "raise" and not valid.all():
        bad = np.flatnonzero(~valid)
        item, reason = items[bad[0]], unsupported_reason(items[bad[0]])
        raise ItemError(f"{owner} could not read the item at index {bad[0]} ({describe_item(item)}): {reason}. Fix "
                        f"or remove it, or set {setting('on_error', 'nan')} to get NaN rows for such items."
                        + numbers_hint([items[i] for i in bad]), int(bad[0]), item, reason)
    return valid


def _open_path(item):
    path = os.fspath(item)
    try:
        return open_regular_file(path)
    except NotRegularFileError as exc:
        if exc.kind == "a folder":
            raise ImageReadError(f"{path!r} is a folder, not an image file") from None
        raise ImageReadError(
            f"{path!r} is not a regular file ({exc.kind}), so it is not read (a pipe or a device may never "
            "end); pass the path of an image file, or read the data yourself and pass its bytes") from None
    except FileNotFoundError:
        link = " is a symbolic link to a missing file" if os.path.lexists(path) else ""
        raise ImageReadError(f"file not found: {path!r}{link}") from None
    except PermissionError:
        raise ImageReadError(f"permission denied: {path!r} cannot be read by this process") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ImageReadError(f"cannot open {path!r} ({getattr(exc, 'strerror', None) or exc})") from None


def _bomb(message: str) -> str:
    return (f"{message} Pillow's decompression-bomb limit stays on; if you trust this file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS before encoding.")


def _check_pixel_limit(size) -> None:
    """Refuse what Pillow only warns about (up to twice the limit): warning filters are process-wide."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = max(1, size[0]) * max(1, size[1])  # Pillow's own count
    if limit is not None and pixels > limit:
        raise ImageReadError(_bomb(
            f"Image size ({size[0]}x{size[1]} = {pixels:,} pixels) exceeds the limit of {limit:,} pixels, "
            "could be decompression bomb DOS attack."))


def _decode(source, draft_size: int | None) -> Image.Image:
    image = None
    try:
        image = Image.open(source)
        _check_pixel_limit(image.size)
        if draft_size and image.format == "JPEG":  # the DCT downscales, far cheaper than a resize
            image.draft(image.mode if image.mode in ("CMYK", "L") else "RGB", (draft_size, draft_size))
        image.load()
        return image
    except (ImageReadError, Image.DecompressionBombError, Image.DecompressionBombWarning,  # the warning: -W error
            OSError, SyntaxError, ValueError, EOFError) as exc:
        if image is not None:
            image.close()
        if isinstance(exc, ImageReadError):
            raise
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise ImageReadError(_bomb(str(exc))) from None
        if isinstance(exc, UnidentifiedImageError):
            raise ImageReadError("not a readable image (unknown or corrupt format)") from None
        raise ImageReadError(f"unreadable or truncated image ({exc})") from None


def _read_encoded(item, draft_size: int | None, value_range) -> Image.Image:
    source = _open_path(item) if isinstance(item, (str, os.PathLike)) else io.BytesIO(bytes(item))
    with source:  # formats with frames (GIF, TIFF) keep their file open after load: ours to close
        image = _decode(source, draft_size)
        try:
            rgb = _pil_to_rgb(image, value_range, from_file=True)
            return rgb if rgb is not image else image.copy()  # the pixels outlive the file
        finally:
            image.close()


def _check_resized_size(image: Image.Image, resize_side: int | None) -> None:
    """Refuse a thin image whose resize is a bomb (1x20000 at shorter side 256: 256x5,120,000)."""
    limit = Image.MAX_IMAGE_PIXELS
    if resize_side is None or limit is None:
        return
    short, long = sorted(image.size)
    resized = resize_side * int(long * resize_side / short)
    if resized > limit:
        raise ImageReadError(
            f"the {image.width}x{image.height} image would be resized to {resized:,} pixels (shorter side "
            f"{resize_side}), above Pillow's decompression-bomb limit of {limit:,}; crop or pad it to a less "
            "extreme aspect ratio, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it")


def _is_closed(image: Image.Image) -> bool:
    if getattr(image, "tile", None):  # not loaded yet: the pixels are still in the file
        return getattr(image, "fp", None) is None
    try:
        image.im  # noqa: B018 (close() leaves an error here that says the image is closed)
    except (ValueError, AssertionError) as exc:
        return isinstance(exc, ValueError)
    return False


def _first_frame(image: Image.Image) -> Image.Image:
    """Frame 0 of a PIL image, loaded; an animated image passed in stays on its frame."""
    if _is_closed(image):
        raise ImageReadError(CLOSED)
    try:
        position = image.tell()
        if position == 0:
            image.load()
            return image
        image.seek(0)
        try:
            return image.copy()
        finally:
            image.seek(position)
    except (OSError, EOFError, ValueError, AssertionError) as exc:
        if _is_closed(image) or "closed" in str(exc):
            raise ImageReadError(CLOSED) from None
        raise ImageReadError(f"unreadable or truncated image ({exc})") from None


def _pil_to_rgb(image: Image.Image, value_range=None, from_file: bool = False):
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"image has no pixels ({image.width}x{image.height})")
    image = ImageOps.exif_transpose(image)
    if (mode := image.mode) == "RGB":
        return image
    if mode in WIDE_MODES:
        # Scaled from the container's range, not clipped at 255 as Image.convert does. Pillow decodes
        # 16-bit files as 0-65535 (I;16 or I); an I image made in memory may hold 0-255 or 0-65535
        # (convert("I") keeps either) and its values cannot tell which, so value_range must say.
        if mode == "F":
            default, what = UNIT, "F (float) image"
        elif mode.startswith("I;16") or from_file:
            default, what = SIXTEEN_BIT, f"{mode} (16-bit) image"
        elif value_range is None:
            values = np.asarray(image)
            raise ImageReadError(
                f"an in-memory PIL image of mode I (32-bit integer, no file format: made by convert('I'), copy() "
                f"or Image.fromarray) has values spanning [{int(values.min())}, {int(values.max())}] and no range "
                "of its own: convert('I') keeps 0-255 of 8-bit data and 0-65535 of 16-bit data, which its values "
                f"cannot tell apart. Set {_range_advice((0, 255), None)} for 8-bit data or "
                f"{_range_advice((0, 65535), None)} for 16-bit data (or pass the file path, whose format says)")
        else:
            default, what = None, "in-memory I (32-bit integer) image"
        return _float_to_rgb(_scaled(np.asarray(image), value_range, default, what))
    if mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _range_advice(value_range=None, owner: str | None = "ImageEncoder") -> str:
    if value_range is None:
        return setting("value_range", None, owner=owner, shown="(low, high)")
    return setting("value_range", tuple(int(v) if float(v).is_integer() else v for v in value_range), owner=owner)


def _suggested_range(low: float, high: float) -> str:
    if low >= 0.0:
        for top, data in ((255, "8-bit values"), (4095, "12-bit data"), (65535, "16-bit data")):
            if high <= top:
                return f"if they are {data}, pass {_range_advice((0, top))}"
    if low >= -1.0 and high <= 1.0:
        return f"if they were normalised to [-1, 1], pass {_range_advice((-1, 1))}"
    return f"pass {_range_advice()} with the range they come from"


def _scaled(values: np.ndarray, value_range, default: tuple, what: str) -> np.ndarray:
    """``values`` mapped onto [0, 1] from ``value_range`` or ``default``; values outside are an error."""
    values = values.astype(np.result_type(values.dtype, np.float32), copy=False)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{what} contains NaN or infinity; replace those pixels (np.nan_to_num) first")
    low, high = float(values.min()), float(values.max())
    lo, hi = default if value_range is None else value_range
    if low < lo or high > hi:
        span = f"{what} values span [{low:.6g}, {high:.6g}]"
        if value_range is not None:
            raise ImageReadError(f"{span}, outside {_range_advice(value_range, None)}; values "
                                 f"are never clipped: pass {_range_advice()} with the range the data come from")
        raise ImageReadError(
            f"{span}, outside [{lo:g}, {hi:g}], the range of {what}s when no range is given (it is never guessed "
            f"from the values); {_suggested_range(low, high)}")
    return (values - lo) / (hi - lo)


def _float_to_rgb(values: np.ndarray) -> Image.Image:
    pixels = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").convert("RGB")


def _array_to_rgb(array: np.ndarray, value_range=None):
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.size == 0:
        raise ImageReadError(f"array of shape {array.shape} has no pixels")
    if array.dtype == np.uint8:
        mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.shape[2] if array.ndim == 3 else 2]
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), mode=mode))
    kind = array.dtype.kind
    default = UNIT if kind == "f" else SIXTEEN_BIT if array.dtype == np.uint16 else None
    if default is None and kind not in "iu":
        raise ImageReadError(f"array dtype {array.dtype} is not supported; use uint8, uint16 or float (read as [0, 1]; "
                             f"other ranges with {_range_advice()})")
    if default is None and value_range is None:
        raise ImageReadError(
            f"array dtype {array.dtype} has no standard range; pass {_range_advice()} with the range its values "
            "come from (such as (0, 255)), or convert it to uint8 or uint16")
    array = _scaled(array, value_range, default, f"{array.dtype} array")  # alpha shares the range
    if array.ndim == 3 and array.shape[2] == 4:  # composite the alpha channel onto white
        alpha = array[:, :, 3:4]
        array = array[:, :, :3] * alpha + (1.0 - alpha) * np.asarray(BACKGROUND) / 255.0
    return _float_to_rgb(array)


def to_rgb(item, draft_size: int | None = None, value_range=None):
    """One item as an 8-bit RGB ``PIL.Image`` (EXIF orientation applied, first frame, alpha onto white), or an
    `ImageReadError`; JPEG files may decode at a reduced scale no smaller than ``draft_size``."""
    if isinstance(item, Image.Image):
        if getattr(item, "tile", None):  # opened lazily (Image.open): decoding it is still to come
            _check_pixel_limit(item.size)
        return _pil_to_rgb(_first_frame(item), value_range, from_file=item.format is not None)
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item, value_range)
    if isinstance(item, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _read_encoded(item, draft_size, value_range)
    raise ImageReadError(unsupported_reason(item))


class ImageDataset(torch.utils.data.Dataset):
    """Reads and preprocesses one item per index; a failure is returned, not raised. The pixel limit
    and flag style travel with it: a spawned decoding process starts with neither."""

    def __init__(self, items, preprocess, draft_size, resize_side, value_range=None):
        self.items, self.preprocess, self.value_range = items, preprocess, value_range
        self.draft_size, self.resize_side = draft_size, resize_side
        self.pixel_limit, self.flags = Image.MAX_IMAGE_PIXELS, flags_on()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        if torch.utils.data.get_worker_info() is not None:  # a decoding process of ours, not the user's
            Image.MAX_IMAGE_PIXELS = self.pixel_limit
        try:
            with flag_style(self.flags):
                image = to_rgb(self.items[index], self.draft_size, self.value_range)
                _check_resized_size(image, self.resize_side)
                tensor = self.preprocess(image)
        except ImageReadError as exc:
            return index, None, str(exc)
        except Exception as exc:  # a user's preprocess callable may raise anything
            return index, None, f"{type(exc).__name__}: {exc}"
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
            return index, None, f"preprocessing returned {type(tensor).__name__}, expected a (C, H, W) tensor"
        return index, tensor, None


def collate(samples):
    ok = [(index, tensor) for index, tensor, _ in samples if tensor is not None]
    return ([index for index, _ in ok], torch.stack([tensor for _, tensor in ok]) if ok else None,
            [(index, reason) for index, tensor, reason in samples if tensor is None])


def decode_ahead(dataset: ImageDataset, batch_size: int, ahead: int = 2):
    """Collated batches in order while one thread decodes the next ``ahead`` (decoding releases the GIL)."""
    return ordered_map(lambda start: collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]),
                       range(0, len(dataset), batch_size), workers=1, ahead=ahead, name="sktransfer-decode")
