"""ClipEncoder: texts and images in one shared space (CLIP-style models) as a scikit-learn transformer."""

from __future__ import annotations

import numbers
import os

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ._backbones import DescribedPreprocess, resize_side
from ._content import folder_digest, text_key
from ._device import autocast
from ._identity import EncoderIdentity
from ._images import ImageDataset, collate, describe_item, is_image_item, item_key
from ._images import content_key as image_content_key
from ._messages import ItemError, setting, with_article
from ._pipeline import settle_failures
from ._registry import model_registry
from ._runtime import data_loader, quiet_hugging_face
from ._texts import TOKENIZER_LOCK, check_max_length, length_sorted_batches, warn_truncated
from .base import BaseEncoder, numbers_hint
from .model_store import resolve_text_model

__all__ = ["ClipEncoder"]

MODALITIES = ("auto", "text", "image", "mixed")


def _is_image_path(item) -> bool:
    return isinstance(item, os.PathLike) or (isinstance(item, str) and os.path.isfile(item))


def _kind(item, modality: str) -> str | None:
    """"text", "image" or None (neither) for one item under a column's modality."""
    if modality == "text":
        return "text" if isinstance(item, str) else None
    if modality == "mixed" and isinstance(item, str):  # a string naming an existing file is that image
        return "image" if _is_image_path(item) else "text"
    return "image" if is_image_item(item) else None


class _ImageProcessorPreprocess(DescribedPreprocess):
    """The model's own Hugging Face image processor, one RGB image to one (C, H, W) tensor."""

    def __init__(self, image_processor):
        self.image_processor = image_processor
        size = getattr(image_processor, "size", None) or {}
        edge = size.get("shortest_edge") if isinstance(size, dict) else None
        self.resize_size = [int(edge)] if edge else None

    def __call__(self, image):
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def settings(self) -> dict:
        config = self.image_processor.to_dict()
        return {k: v for k, v in sorted(config.items()) if not k.startswith("_") and k != "processor_class"}


def _pair_key(pair) -> bytes | None:
    """Cache key of a ``(kind, item)``: texts and images share a fingerprint, so the kind is in the key."""
    kind, item = pair
    if kind == "text":
        return b"t" + text_key(item)
    key = image_content_key(item)
    return None if key is None else b"i" + key


def _as_features(output) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipEncoder(BaseEncoder):
    """Encode texts or images into the shared space of a CLIP-style model.

    A caption lands near its photo: the base of zero-shot classification
    ([`ZeroShotClassifier`][sktransfer.ZeroShotClassifier]) and text-to-image search.

    Parameters
    ----------
    model : str or os.PathLike
        A CLIP-style transformers model (``CLIPModel``, or any with ``get_text_features`` and
        ``get_image_features``), used with its own tokenizer and image processor: a local folder,
        a hub id such as ``"openai/clip-vit-base-patch32"``, or a name in the sktransfer model
        directory or the Hugging Face cache.
    modality : {"auto", "text", "image", "mixed"}, default="auto"
        What the column holds. ``"auto"`` decides in ``fit``: strings are texts unless every
        string names an existing file; PIL images, arrays, bytes and ``pathlib`` paths are images;
        a column with both is an error that names one of each. ``"mixed"`` encodes each item by
        its kind (a string naming an existing file is an image, other strings texts).
    normalize : bool, default=True
        Scale every output row to unit length, as CLIP compares them (cosine similarity).
    max_length : int or None, default=None
        Token limit for texts; ``None`` uses the model's (77 for CLIP). Longer texts are cut
        and ``transform`` warns with the count.
    on_error : {"raise", "nan"}, default="raise"
        Items that cannot be encoded (a missing value, an unreadable image, an item of the wrong
        kind): ``"raise"`` raises a ``ValueError`` naming the index and the item; ``"nan"``
        returns NaN rows for them and warns with the count.
    jpeg_draft : bool, default=True
        Decode large JPEG files at a reduced scale that still leaves 4x the resize target (see
        [`ImageEncoder`][sktransfer.ImageEncoder]).
    num_workers : int or "auto", default="auto"
        Processes that decode images while the network runs (as in ``ImageEncoder``).
    device, batch_size, precision, show_progress, n_threads, cache
        As in [`TextEncoder`][sktransfer.TextEncoder]. ``precision`` ``"bf16"`` and ``"fp16"`` run
        under autocast; the output is float32 in every case.

    Attributes
    ----------
    identity_ : EncoderIdentity
        The model files' content hash and every output-changing setting (normalisation, token limit,
        image processor configuration, draft decoding, precision), shared by texts and images.
    modality_ : {"text", "image", "mixed"}
        What the fitted column holds.
    embedding_dim_ : int
        Dimension of the shared space (the model's ``projection_dim``).
    logit_scale_ : float
        The model's learned similarity scale (CLIP: 100), the inverse of the temperature
        ``ZeroShotClassifier`` uses by default.
    device_ : str
        The device the model runs on.

    See Also
    --------
    ZeroShotClassifier : Classify without training data by comparing items with label texts.
    TextEncoder, ImageEncoder : One kind of input, any sentence-transformers / vision model.

    Examples
    --------
    >>> from sktransfer import ClipEncoder  # doctest: +SKIP
    >>> photos = ClipEncoder("openai/clip-vit-base-patch32").fit_transform(paths)  # doctest: +SKIP
    >>> captions = ClipEncoder("openai/clip-vit-base-patch32").fit_transform(["a bee"])  # doctest: +SKIP
    >>> (photos @ captions.T).argmax()  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        **BaseEncoder._parameter_constraints,
        "model": [str, os.PathLike],
        "modality": [StrOptions(set(MODALITIES))],
        "normalize": ["boolean"],
        "max_length": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "nan"})],
        "jpeg_draft": ["boolean"],
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})]}
    _output_parameters = ("model", "modality", "normalize", "max_length", "jpeg_draft", "precision")

    def __init__(self, model, *, modality="auto", normalize=True, max_length=None, on_error="raise", jpeg_draft=True,
                 num_workers="auto", device="auto", batch_size=32, precision="fp32", show_progress=False, n_threads=None,
                 cache=None):
        self.model = model
        self.modality = modality
        self.normalize = normalize
        self.max_length = max_length
        self.on_error = on_error
        self.jpeg_draft = jpeg_draft
        self.num_workers = num_workers
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.show_progress = show_progress
        self.n_threads = n_threads
        self.cache = cache

    def fit(self, X, y=None):
        """Load the model and decide what the column holds; nothing is learned from the values.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of texts or images (see ``modality``).
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted encoder.
        """
        self._validate_params()
        # Decided once from this column, before validation reads every row by that kind.
        self.modality_ = self._column_modality(self._items_of(X))
        device, _, _ = self._begin_fit(X)
        name = os.fspath(self.model)
        location = resolve_text_model(name)
        draft = EncoderIdentity("ClipEncoder", name, folder_digest(location), {"weights": "float32"},
                                ("weights",), location)
        model, processor = model_registry.get(draft.registry_key(str(device)), lambda: self._load_model(draft, device))
        limit = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        check_max_length(self.max_length, limit, name)
        self.max_length_ = int(self.max_length or limit)
        preprocess = _ImageProcessorPreprocess(processor.image_processor)
        settings = {"weights": "float32", "precision": self.precision, "normalize": bool(self.normalize),
                    "max_length": self.max_length_, "image_processor": preprocess.settings(),
                    "jpeg_draft": bool(self.jpeg_draft) and resize_side(preprocess) is not None}
        self.embedding_dim_ = int(model.config.projection_dim)
        self.logit_scale_ = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
        self.preprocess_ = preprocess
        self._set_identity(EncoderIdentity("ClipEncoder", name, draft.content, settings, ("weights",), location),
                           (model, processor), device)
        return self

    def _load_model(self, identity: EncoderIdentity, device: torch.device):
        """The model and its processor, checked against the fitted content."""
        from transformers import AutoModel, AutoProcessor

        location = identity.location or resolve_text_model(identity.model)
        identity.check_content(folder_digest(location), location)
        with quiet_hugging_face():
            model = AutoModel.from_pretrained(location, local_files_only=True)
            processor = AutoProcessor.from_pretrained(location, local_files_only=True)
        if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
            raise ValueError(f"{identity.model!r} is {with_article(type(model).__name__)}, not a CLIP-style model with text and "
                             "image towers; use TextEncoder or ImageEncoder for it.")
        return model.eval().requires_grad_(False).to(device), processor

    def _column_modality(self, items: list) -> str:
        if self.modality != "auto":
            return self.modality
        strings = [i for i, item in enumerate(items) if isinstance(item, str)]
        paths = [i for i in strings if _is_image_path(items[i])]
        texts = [i for i in strings if i not in set(paths)]
        images = sorted(paths + [i for i, item in enumerate(items) if not isinstance(item, str) and is_image_item(item)])
        if texts and images:
            t, i = texts[0], images[0]
            raise ValueError(
                f"ClipEncoder got a column with both texts and images: index {t} is the text {items[t]!r:.80} and "
                f"index {i} is the image {describe_item(items[i])}. Encode each kind in its own column, pass "
                "modality='mixed' to encode each item by its kind (a string naming an existing file is an image), "
                "or modality='text' if every string is a text.")
        return "image" if images else "text"

    def _valid_rows(self, items: list) -> np.ndarray:
        modality = self.modality_  # decided in fit
        kinds = [_kind(item, modality) for item in items]
        valid = np.array([kind is not None for kind in kinds], dtype=bool)
        if self.on_error == "raise" and not valid.all():
            first = int(np.flatnonzero(~valid)[0])
            expected = {"text": "a string", "image": "an image", "mixed": "a string or an image"}[modality]
            raise ItemError(
                f"ClipEncoder (modality {modality!r}) expects {expected}, but the item at index {first} is "
                f"{describe_item(items[first])}. Clean the column, or set {setting('on_error', 'nan')} to get NaN rows "
                "for such items." + numbers_hint([items[i] for i in np.flatnonzero(~valid)]),
                first, items[first], f"not {expected}")
        return valid

    def transform(self, X):
        """Encode each item into the shared space.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of texts or images, of the kind seen in ``fit``.

        Returns
        -------
        X_out : ndarray of shape (n_samples, embedding_dim_), dtype float32
        """
        items, valid, (model, processor) = self._begin_transform(X)
        modality = self.modality_
        kinds = [_kind(item, modality) for item in items]
        texts = [items[i] for i in np.flatnonzero(valid) if kinds[i] == "text"]
        if texts:
            warn_truncated("ClipEncoder", processor.tokenizer, set(texts), self.max_length_,
                           "; CLIP reads short captions.")
        out, failures = self._encode_column(
            [(kind, item) for kind, item in zip(kinds, items)], valid,
            lambda pairs, on_batch: self._encode_pairs(model, processor, pairs, on_batch),
            dedupe_key=lambda pair: (pair[0], pair[1] if pair[0] == "text" else item_key(pair[1])),
            content_key=_pair_key)
        failures += [(row, items[row], "not a text or an image") for row in np.flatnonzero(~valid)]
        settle_failures("ClipEncoder", failures, len(items), self.on_error, describe=describe_item, verb="encode")
        return out

    def _encode_pairs(self, model, processor, pairs: list, on_batch):
        """``(kind, item)`` pairs: texts in length-sorted batches, then images through a DataLoader."""
        out = np.empty((len(pairs), self.embedding_dim_), dtype=np.float32)
        failures = {}
        text_rows = [i for i, (kind, _) in enumerate(pairs) if kind == "text"]
        image_rows = [i for i, (kind, _) in enumerate(pairs) if kind == "image"]
        device = torch.device(self.device_)
        with torch.inference_mode(), autocast(device, self.precision):
            batches = length_sorted_batches([item for _, item in pairs], self.batch_size, text_rows)
            for index in self._progress(batches, total=len(batches)) if batches else ():
                with TOKENIZER_LOCK:
                    tokens = processor.tokenizer([pairs[i][1] for i in index], padding=True, truncation=True,
                                                 max_length=self.max_length_, return_tensors="pt")
                features = _as_features(model.get_text_features(**tokens.to(device)))
                self._finish(out, index, features, on_batch)
            if image_rows:
                failures = self._encode_images(model, [pairs[i][1] for i in image_rows], image_rows, out, on_batch)
        return out, failures

    def _encode_images(self, model, images: list, rows: list, out, on_batch) -> dict:
        device = torch.device(self.device_)
        side = resize_side(self.preprocess_)
        draft = 4 * side if self.identity_.settings["jpeg_draft"] else None
        loader = data_loader(ImageDataset(images, self.preprocess_, draft, side), batch_size=self.batch_size,
                             num_workers=self.num_workers, device=device, collate_fn=collate)
        failures = {}
        for index, batch, errors in self._progress(loader, total=len(loader)):
            failures.update({rows[i]: reason for i, reason in errors})
            if errors and self.on_error == "raise":
                break
            if batch is not None:
                features = _as_features(model.get_image_features(pixel_values=batch.to(device, non_blocking=True)))
                self._finish(out, [rows[i] for i in index], features, on_batch)
        return failures

    def _finish(self, out, index, features, on_batch) -> None:
        if self.identity_.settings["normalize"]:
            features = torch.nn.functional.normalize(features.float(), p=2, dim=1)
        out[index] = features.float().cpu().numpy()  # off the accelerator as each batch finishes
        if on_batch is not None:
            on_batch(index, out[index])

