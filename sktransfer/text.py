"""TextEncoder: sentence-transformers models as a scikit-learn transformer."""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import threading
import warnings

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .base import BaseEncoder, column_to_list
from .model_store import folder_fingerprint, resolve_text_model

__all__ = ["TextEncoder"]

# Fast tokenizers set their truncation and padding state on each call and can raise "Already
# borrowed" when two threads use one at once (huggingface/transformers#47085), so concurrent
# streams, and users calling transform from several threads, tokenize one at a time.
_TOKENIZER_LOCK = threading.Lock()


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    # pandas.NA, pandas.NaT and numpy.datetime64("NaT") without importing pandas.
    return type(value).__name__ in {"NAType", "NaTType"} or (
        isinstance(value, np.generic) and value.dtype.kind in "fcmM" and bool(np.isnan(value))
    )


class TextEncoder(BaseEncoder):
    """Encode texts with a frozen sentence-transformers model.

    Each text becomes one fixed-size vector (the model's sentence embedding), ready for any
    scikit-learn model. Identical texts are encoded once per call and batches are sorted by
    length, so padding wastes little compute.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        A sentence-transformers model: a short name (``"all-MiniLM-L6-v2"``), a hub id
        (``"org/name"``) or a local model folder. Names are looked up in the sktransfer model
        directory and the Hugging Face cache before the hub; see :mod:`sktransfer.model_store`.
    normalize : bool, default=False
        Scale every output row to unit Euclidean length.
    max_length : int or None, default=None
        Truncate texts to this many tokens. ``None`` uses the model's own limit
        (256 word pieces for all-MiniLM-L6-v2). A warning reports how many texts were cut.
    on_error : {"raise", "empty", "nan"}, default="raise"
        What to do with items that are not strings (None, NaN, pandas.NA, numbers...):
        ``"raise"`` raises a ``ValueError`` naming the first such item and its index;
        ``"empty"`` encodes them as the empty string; ``"nan"`` returns a row of NaN for them
        (for a downstream ``SimpleImputer`` or a row filter). Empty strings are valid texts.
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    batch_size : int, default=32
        Texts per forward pass.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Forward-pass arithmetic. ``"bf16"`` casts the model's weights to bfloat16 (faster than
        autocast on short texts; cosine to fp32 >= 0.999); ``"fp16"`` runs under autocast.
        Output is float32 in every case.
    show_progress : bool, default=False
        Show a progress bar over batches.
    n_threads : int or None, default=None
        CPU threads for the forward pass, applied only while ``transform`` runs and restored
        afterwards (torch's thread count is process-wide). ``None`` leaves torch's setting alone.
        Useful when several encoders or joblib workers share the cores.
    n_streams : int or "auto", default="auto"
        On a CPU, how many batches are encoded at once, each in its own thread with an equal
        share of the torch threads (the split applies only while ``transform`` runs). Short
        texts leave one multi-threaded forward pass waiting on its own threads; on all of
        SST-2 on a 2-core machine, two single-threaded streams took bf16 from 2.10x to 2.65x
        the speed of ``SentenceTransformer.encode`` at fp32 (fp32: 1.01x to 1.15x). ``"auto"``
        uses 2 streams when at least 2 threads are available, and 1 on a GPU, with one thread
        or for a single batch. Outputs do not depend on it beyond float noise.
    cache : None, str, os.PathLike or EmbeddingCache, default=None
        Reuse embeddings across calls, folds, grid points and processes: each distinct text is
        encoded once per fingerprint (model files, normalize, max_length, precision). A path
        means ``EmbeddingCache(path)``.

    Attributes
    ----------
    model_identity_ : str
        Absolute path of the model folder that was loaded.
    device_ : str
        The device the model runs on.
    embedding_dim_ : int
        Number of output features.
    max_length_ : int
        Token limit in effect.
    n_features_in_ : int
        Number of input columns (1); only set when fitted on a 2-D input such as a DataFrame.
    feature_names_in_ : ndarray of shape (1,)
        Name of the input column; only set when fitted on a DataFrame.
    n_truncated_ : int
        Number of texts longer than ``max_length_`` in the last ``transform`` call.

    See Also
    --------
    sentence_transformers.SentenceTransformer.encode : The function this transformer wraps.

    Notes
    -----
    The weights are not pickled: a pickled TextEncoder stores the model name and reloads the
    model (once per process) on first use. Fitting learns nothing from the data.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sktransfer import TextEncoder
    >>> texts = ["a gripping, beautiful film", "dull and far too long",
    ...          "a joy from start to finish", "i want those two hours back"]
    >>> clf = make_pipeline(TextEncoder(), LogisticRegression()).fit(texts, [1, 0, 1, 0])
    >>> clf.predict(["wonderful acting", "boring plot"]).tolist()
    [1, 0]
    """

    _parameter_constraints: dict = {
        **BaseEncoder._parameter_constraints,
        "model": [str],
        "normalize": ["boolean"],
        "max_length": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "empty", "nan"})],
        "n_streams": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    def __init__(
        self,
        model="all-MiniLM-L6-v2",
        *,
        normalize=False,
        max_length=None,
        on_error="raise",
        device="auto",
        batch_size=32,
        precision="fp32",
        show_progress=False,
        n_threads=None,
        n_streams="auto",
        cache=None,
    ):
        self.model = model
        self.normalize = normalize
        self.max_length = max_length
        self.on_error = on_error
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.show_progress = show_progress
        self.n_threads = n_threads
        self.n_streams = n_streams
        self.cache = cache

    # ------------------------------------------------------------------ model
    def _model_identity(self):
        return resolve_text_model(self.model)

    def _load_model(self, identity, device):
        from sentence_transformers import SentenceTransformer

        from transformers.utils import logging as hf_logging

        # The per-tensor "Loading weights" bar is noise inside a grid search; restore the
        # user's setting afterwards.
        bar_was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(identity, device=str(device), local_files_only=True)
        finally:
            if bar_was_enabled:
                hf_logging.enable_progress_bar()
        model.eval()
        model.requires_grad_(False)
        if self.precision == "bf16":
            # bfloat16 weights rather than autocast: on short texts autocast's per-op casts cost
            # much of what the bf16 matrix products gain (all of SST-2 train: 2.11x fp32 with bf16
            # weights, 1.73x with autocast; min cosine to fp32 0.9998). The registry keys models
            # by precision.
            model.to(torch.bfloat16)
        return model

    @contextlib.contextmanager
    def _inference_context(self):
        if self.precision != "bf16":
            with super()._inference_context():
                yield
            return
        with torch.inference_mode():  # the weights are bfloat16 already: no autocast
            yield

    def _configure(self, model):
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.embedding_dim_ = int(get_dim())
        limit = self._token_limit(model)
        if self.max_length is not None and limit is not None and self.max_length > limit:
            raise ValueError(
                f"max_length={self.max_length} exceeds what {self.model!r} can read ({limit} tokens); "
                f"use max_length <= {limit}."
            )
        self.max_length_ = int(self.max_length or model.max_seq_length or limit)
        self.n_truncated_ = 0

    @staticmethod
    def _token_limit(model):
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        return getattr(config, "max_position_embeddings", None)

    # ------------------------------------------------------------------ input
    def _prepare_items(self, X):
        items = column_to_list(X, "TextEncoder")
        bad = [i for i, item in enumerate(items) if not isinstance(item, str)]
        nan_rows = np.zeros(len(items), dtype=bool)
        if bad and self.on_error == "raise":
            first = bad[0]
            kind = "a missing value" if _is_missing(items[first]) else f"a {type(items[first]).__name__}"
            raise ValueError(
                f"TextEncoder expects strings, but the item at index {first} is {kind} "
                f"({items[first]!r}); {len(bad)} of {len(items)} items are not strings. Clean the "
                "column (e.g. X.fillna('')), or set on_error='empty' to encode them as empty "
                "strings or on_error='nan' to return NaN rows for them."
            )
        if self.on_error == "empty":
            for i in bad:
                items[i] = ""
        else:
            nan_rows[bad] = True
            if bad:  # the policy was chosen, but the count must not go unnoticed (as for images)
                warnings.warn(
                    f"TextEncoder returned NaN rows for {len(bad)} of {len(items)} items that are not "
                    f"strings (on_error='nan'); first at index {bad[0]} ({items[bad[0]]!r}).",
                    UserWarning,
                    stacklevel=3,
                )
        self._truncated = []
        return items, nan_rows

    def _item_size(self, item):
        return len(item)

    def _content_key(self, item):
        return hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _fingerprint_parts(self):
        return {
            **super()._fingerprint_parts(),
            "model": folder_fingerprint(self.model_identity_),
            "normalize": bool(self.normalize),
            "max_length": self.max_length_,
            # bf16 once meant autocast over float32 weights; those vectors differ slightly.
            **({"bf16": "weights"} if self.precision == "bf16" else {}),
        }

    def _cache_description(self):
        return (
            f"TextEncoder(model={self.model!r}, normalize={self.normalize}, max_length={self.max_length_}, "
            f"precision={self.precision!r})"
        )

    # ------------------------------------------------------------------ encoding
    def _encode_batch(self, model, batch):
        from sentence_transformers.util import batch_to_device

        with _TOKENIZER_LOCK:
            features = model.preprocess(batch, processing_kwargs={"text": {"max_length": self.max_length_}})
            mask = features.get("attention_mask")
            if mask is not None:
                self._count_truncated(model, batch, mask)
        features = batch_to_device(features, model.device)
        embeddings = model(features)["sentence_embedding"]
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings.float(), p=2, dim=1)
        return embeddings

    def _forward_streams(self, n_batches):
        if torch.device(self.device_).type != "cpu" or n_batches < 2:
            return 1  # an accelerator runs one batch at a time; a single batch cannot be split
        if self.n_streams != "auto":
            return min(self.n_streams, n_batches)
        return 2 if torch.get_num_threads() >= 2 else 1

    def _count_truncated(self, model, batch, mask):
        # Only texts that filled the whole window can have been cut; count their real length.
        full = torch.nonzero(mask.sum(dim=1) >= self.max_length_).flatten().tolist()
        if full:
            lengths = model.tokenizer([batch[i] for i in full], truncation=False, verbose=False)["input_ids"]
            self._truncated.extend(len(ids) for ids in lengths if len(ids) > self.max_length_)

    def _finish_transform(self):
        truncated = getattr(self, "_truncated", [])
        self.n_truncated_ = len(truncated)
        if truncated:
            warnings.warn(
                f"TextEncoder truncated {len(truncated)} distinct text(s) longer than "
                f"max_length={self.max_length_} tokens (longest: {max(truncated)} tokens). "
                "Raise max_length (up to the model's limit) or split long texts.",
                UserWarning,
                stacklevel=3,
            )
        self._truncated = []
