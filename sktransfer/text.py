"""TextEncoder: sentence-transformers models as a scikit-learn transformer."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import numbers
import os

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from . import _backends, _text_head
from ._quantize import items_per_call
from ._content import folder_digest, sha256_hex, text_key
from ._device import autocast
from ._identity import EncoderIdentity
from ._messages import setting
from ._pipeline import settle_failures
from ._registry import model_registry
from ._runtime import ordered_map, quiet_hugging_face, torch_threads
from ._text_head import CHUNK_OVERLAP, POOLINGS, chunk_average, output_vectors, resolve_head, sentence_vectors
from ._texts import TOKENIZER_LOCK, check_max_length, check_texts, length_sorted_batches, warn_truncated
from .base import BaseEncoder
from .model_store import resolve_text_model

__all__ = ["TextEncoder"]

class TextEncoder(BaseEncoder):
    """Encode texts with a frozen sentence-transformers model.

    Each text becomes one fixed-size vector (the model's sentence embedding), ready for any
    scikit-learn model. Identical texts are encoded once per call and batches are sorted by
    length, so padding wastes little compute.

    Parameters
    ----------
    model : str or os.PathLike, default="all-MiniLM-L6-v2"
        A sentence-transformers model: a short name (``"all-MiniLM-L6-v2"``), a hub id
        (``"org/name"``) or a local model folder. Names are looked up in the sktransfer model
        directory and the Hugging Face cache before the hub; see `sktransfer.model_store`.
    normalize : bool, default=False
        Scale every output row to unit Euclidean length. Models that already end in a
        ``Normalize`` module (all-MiniLM-L6-v2 does) return unit rows either way, and both
        settings share cache entries.
    max_length : int or None, default=None
        Truncate texts to this many tokens. ``None`` uses the model's own limit
        (256 word pieces for all-MiniLM-L6-v2). Every ``transform`` that meets a longer text
        warns with the count, cached or not.
    pooling : {"model", "mean", "cls", "max"}, default="model"
        How token vectors become one text vector. ``"model"`` uses the model's own modules
        after the transformer (a plain transformers folder has none and gets mean pooling).
        ``"mean"`` averages the token vectors under the attention mask, ``"cls"`` takes the
        first token's and ``"max"`` the per-dimension maximum; these skip the model's own
        modules after pooling (``Dense``, ``Normalize``): set ``normalize=True`` for unit rows.
    layers : int, sequence of int or None, default=None
        Which hidden layers the token vectors come from: ``None`` is the last layer (what the
        model was trained to output); ``-1`` is the last, ``-4`` the fourth from last, ``0``
        the embedding layer. Several layers are combined with ``layer_combine`` before pooling:
        the BERT paper's feature-based approach uses ``[-4, -3, -2, -1]``.
    layer_combine : {"mean", "sum", "concat"}, default="mean"
        How several ``layers`` are combined, token by token: their mean, their sum, or one
        longer vector (``concat``: the output has ``len(layers)`` times the hidden size).
        Ignored with a single layer.
    long_text : {"truncate", "chunk"}, default="truncate"
        Texts longer than ``max_length`` tokens: ``"truncate"`` encodes their first
        ``max_length`` tokens and warns; ``"chunk"`` encodes windows of ``max_length`` tokens
        overlapping by a quarter and averages them weighted by their token counts, so the whole
        text counts. Texts that fit in one window get the same vector either way.
    prompt : str or None, default=None
        A prefix added to every text before tokenizing, such as ``"query: "`` or
        ``"passage: "`` for E5-style models. The name of one of the model's own prompts
        (``model.prompts`` in sentence-transformers) means that prompt's text. With
        ``long_text="chunk"`` the prompt starts the text, so it is in the first window.
    on_error : {"raise", "empty", "nan"}, default="raise"
        Items that are not strings (None, NaN, pandas.NA, numbers...), in ``fit`` and
        ``transform`` alike: ``"raise"`` raises a ``ValueError`` naming the first and its index;
        ``"empty"`` encodes them as ``""``; ``"nan"`` returns NaN rows for them and warns.
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        With ``backend="onnx"``: ``"cpu"`` or ``"cuda[:N]"`` (``onnxruntime-gpu``); with
        ``backend="openvino"``: ``"cpu"`` or ``"gpu[.N]"`` (Intel GPUs).
    backend : {"torch", "onnx", "openvino"}, default="torch"
        What runs the transformer. ``"onnx"`` (``pip install "sktransfer[onnx]"``) and
        ``"openvino"`` (``pip install "sktransfer[openvino]"``) run an export of it, made once
        per model and runtime version into ``$SKTRANSFER_EXPORTS`` (default
        ``~/.cache/sktransfer/exports``); everything else is unchanged. The backend is part of
        the fingerprint; the text encoder page says when each is fastest.
    batch_size : int, default=32
        Texts per forward pass.
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Forward-pass arithmetic: ``"bf16"`` casts the weights to bfloat16 (warns on a CPU without
        bf16 instructions, where it is several times slower), ``"fp16"`` runs under autocast.
        With OpenVINO, its inference precision hint; ONNX Runtime offers fp32 and int8.
        ``"int8"`` (``backend="onnx"`` or ``"openvino"``) quantizes the export: ONNX Runtime
        dynamically, OpenVINO through NNCF calibrated on up to 64 fit texts (``calibration_``);
        ``fit`` measures the cosine to fp32 on fit texts (``fidelity_``) and warns below a mean
        of 0.99. Output is float32 in every case.
    show_progress : bool, default=False
        Show a progress bar over batches.
    n_threads : int or None, default=None
        CPU threads for the forward pass, applied only while ``transform`` runs. ``None`` leaves
        torch's setting alone.
    n_streams : int or "auto", default="auto"
        On a CPU, how many batches are encoded at once, each in its own thread with an equal
        share of the threads (faster on short texts: see the text encoder page); with torch and
        ONNX Runtime. ``"auto"`` uses 2 when at least 2 threads are available, else 1, and 1 on
        a GPU and with OpenVINO (its own pool is faster there); ``sktransfer speed`` measures both.
    cache : None, str, os.PathLike or EmbeddingCache, default=None
        Reuse embeddings across calls, folds, grid points and processes: each distinct text is
        encoded once per fingerprint. A path means ``EmbeddingCache(path)``.

    Attributes
    ----------
    fidelity_ : dict
        With ``precision="int8"``: ``{"min_cosine", "mean_cosine", "n_items", "held_out"}``, the
        int8 vectors of up to 64 fit texts against the float32 network's.
    calibration_ : list of tuple of ndarray
        With a calibrated int8 recipe (OpenVINO): the network inputs that set the activation
        ranges, pickled with the encoder so that the same int8 network can be made elsewhere.
    identity_ : EncoderIdentity
        What makes the vectors: the model name, a content hash of its files and the effective
        output-changing settings. The cache fingerprint (``identity_.fingerprint``) and the
        model registry key derive from it.
    device_ : str
        The device the model runs on.
    embedding_dim_ : int
        Number of output features.
    max_length_ : int
        Token limit in effect.
    n_features_in_ : int
        Number of input columns (1); only set when fitted on a 2-D input such as a DataFrame.
    feature_names_in_ : ndarray of shape (1,)
        Name of the input column; only set when fitted on a DataFrame or a named Series.

    See Also
    --------
    sentence_transformers.SentenceTransformer.encode : The function this transformer wraps.

    Notes
    -----
    The weights are not pickled: a pickle stores the model name and a content hash of its files,
    and where it is loaded the files found must hash the same, or ``transform`` raises
    [`ModelMismatchError`][sktransfer.ModelMismatchError]. Changing an output-changing parameter
    after ``fit`` makes ``transform`` raise until ``fit`` is called again.

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
        "model": [str, os.PathLike],
        "normalize": ["boolean"],
        "max_length": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "pooling": [StrOptions(set(POOLINGS))],
        "layers": [numbers.Integral, "array-like", None],
        "layer_combine": [StrOptions({"mean", "sum", "concat"})],
        "long_text": [StrOptions({"truncate", "chunk"})],
        "prompt": [str, None],
        "on_error": [StrOptions({"raise", "empty", "nan"})],
        "n_streams": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "backend": [StrOptions(set(_backends.BACKENDS))],
    }
    _output_parameters = ("model", "normalize", "max_length", "pooling", "layers", "layer_combine", "long_text",
                          "prompt", "precision", "backend")

    def __init__(
        self,
        model="all-MiniLM-L6-v2",
        *,
        normalize=False,
        max_length=None,
        pooling="model",
        layers=None,
        layer_combine="mean",
        long_text="truncate",
        prompt=None,
        on_error="raise",
        device="auto",
        backend="torch",
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
        self.pooling = pooling
        self.layers = layers
        self.layer_combine = layer_combine
        self.long_text = long_text
        self.prompt = prompt
        self.on_error = on_error
        self.device = device
        self.backend = backend
        self.batch_size = batch_size
        self.precision = precision
        self.show_progress = show_progress
        self.n_threads = n_threads
        self.n_streams = n_streams
        self.cache = cache

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Resolve and load the pretrained model; nothing is learned from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of texts, validated as ``transform`` validates it; only its column name
            is recorded.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted encoder.
        """
        device, items, valid = self._begin_fit(X)
        name = os.fspath(self.model)
        if not name.strip():
            raise ValueError("model is an empty name; pass a model name (e.g. 'all-MiniLM-L6-v2'), a hub id or a "
                             "model folder.")
        location = resolve_text_model(name)
        # bf16 weights are torch's bf16 mechanism; other backends export float32 weights and
        # take the precision as a hint when they compile.
        weights = "bfloat16" if self.precision == "bf16" and self.backend == "torch" else "float32"
        # The model's own facts (dimension, token limit, final Normalize) complete the settings;
        # the registry key needs only the content and the weights' dtype, known before loading.
        draft = EncoderIdentity("TextEncoder", name, folder_digest(location), {"weights": weights},
                                ("weights",), location)
        model = model_registry.get(draft.registry_key(str(device)), lambda: self._load_model(draft, device))
        limit = self._token_limit(model)
        check_max_length(self.max_length, limit, name)
        head, self.embedding_dim_, hidden_states = resolve_head(
            model, name, pooling=self.pooling, layers=self.layers, layer_combine=self.layer_combine,
            normalize=self.normalize)
        if hidden_states:
            # Hidden layers come from a copy of the model that returns them (a separate registry entry).
            draft = dataclasses.replace(draft, settings={**draft.settings, "hidden_states": True},
                                        model_settings=("weights", "hidden_states"))
            model = model_registry.get(draft.registry_key(str(device)), lambda: self._load_model(draft, device))
        self.max_length_ = int(self.max_length or model.max_seq_length or limit)
        settings = {**draft.settings, "precision": self.precision, **head, "max_length": self.max_length_}
        if self.long_text == "chunk":
            if not getattr(model.tokenizer, "is_fast", False):
                raise ValueError(f"long_text='chunk' needs a fast tokenizer, and {name!r} has a slow one "
                                 f"({type(model.tokenizer).__name__}); use long_text='truncate'.")
            settings["long_text"] = "chunk"
            settings["chunk_overlap"] = int(self.max_length_ * CHUNK_OVERLAP)
        prompt = self._resolve_prompt(model, name)
        if prompt:
            settings["prompt"] = prompt
        settings, shaping = self._backend_facets(settings, draft.model_settings, self.backend)
        identity = EncoderIdentity("TextEncoder", name, draft.content, settings, shaping, location)
        if self.backend != "torch":
            device = _backends.resolve_device(self.backend, self.device)
            if self.precision == "int8":
                identity, reference, rows = self._int8_identity(identity, "text", items, valid, device)
            model = model_registry.get(identity.registry_key(device), lambda: self._load_model(identity, device))
        self._set_identity(identity, model, device)
        if self.precision == "int8":
            self._measure_fidelity(reference, items, rows)
        return self

    def _load_model(self, identity: EncoderIdentity, device):
        """The model the identity names: torch's, or one whose transformer another backend runs."""
        if "backend" in identity.model_settings:
            return self._load_backend(identity, device)
        return self._load_torch(identity, device)

    def _load_torch(self, identity: EncoderIdentity, device):
        """The sentence-transformers model, checked against the identity's content hash first."""
        from sentence_transformers import SentenceTransformer

        location = identity.location or resolve_text_model(identity.model)
        identity.check_content(folder_digest(location), location)
        # A plain transformers folder (no sentence-transformers files) loads through transformers'
        # AutoModel with mean pooling, as sentence-transformers builds it.
        config_kwargs = {"output_hidden_states": True} if identity.settings.get("hidden_states") else None
        with quiet_hugging_face():
            model = SentenceTransformer(location, device=str(device), local_files_only=True,
                                        config_kwargs=config_kwargs)
        self._apply_tuned(identity, model)
        model.eval()
        model.requires_grad_(False)
        if identity.settings["weights"] == "bfloat16":
            # bfloat16 weights rather than autocast: on short texts autocast's per-op casts cost
            # much of what the bf16 matrix products gain (all of SST-2 train: 2.11x fp32 with bf16
            # weights, 1.73x with autocast; min cosine to fp32 0.9998).
            model.to(torch.bfloat16)
        return model

    def _load_backend(self, identity: EncoderIdentity, device: str):
        """A private torch copy whose transformer the identity's backend runs from its export (made
        if absent); tokenizer, pooling and the rest of the head stay sentence-transformers' own."""
        model = self._load_torch(self._torch_identity(identity), torch.device("cpu"))
        transformer = model[0]
        auto_model = _text_head.transformer_of(model, identity.model)
        accepted = inspect.signature(auto_model.forward).parameters
        inputs = tuple(name for name in model.tokenizer.model_input_names if name in accepted)
        hidden = bool(identity.settings.get("hidden_states"))

        def export_spec():
            # Two texts of different lengths: exporters specialise sizes 0 and 1, and both the
            # batch and the token axes must stay free.
            example = model.preprocess(["an example sentence for the export", "a second, longer example sentence "
                                        "so that the batch has padding"])
            return _backends.ExportSpec(_text_head.TokenNetwork(auto_model, inputs, hidden),
                                        tuple(example[name] for name in inputs), inputs, ("tokens",),
                                        tuple((0, 1) for _ in inputs))

        network = _backends.exported_network(
            identity.settings["backend"], self._network_payload(identity, inputs=list(inputs)), export_spec,
            device=device, precision=identity.settings["precision"], int8=self._int8_spec(identity))
        transformer.model = _text_head.RuntimeTransformer(network, auto_model.config, inputs, hidden)
        return model

    def trainable_model(self):
        """A private float32 torch copy of the fitted model on ``device_``, outside the registry: the
        seam fine-tuning trains through (content checked, tuned tensors applied)."""
        identity = self.identity_
        fp32 = dataclasses.replace(identity, settings={**identity.settings, "weights": "float32"})
        return self._load_model(fp32, torch.device(self.device_))

    def _resolve_prompt(self, model, name: str) -> str:
        """The prompt's text: one of the model's named prompts, or the string as given."""
        if self.prompt is None:
            return ""
        named = getattr(model, "prompts", None) or {}
        return named.get(self.prompt, self.prompt)

    @staticmethod
    def _token_limit(model):
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        return getattr(config, "max_position_embeddings", None)

    # ------------------------------------------------------------------ input
    def _requested_backend(self) -> str:
        return self.backend

    def _valid_rows(self, items: list) -> np.ndarray:
        return check_texts(items, self.on_error, "TextEncoder")

    def _items_inputs(self, model, identity: EncoderIdentity, items: list) -> tuple[list, list]:
        # One text per input, unpadded: padding tokens would widen the activation ranges.
        prompt = identity.settings.get("prompt") or None
        names = model[0].auto_model.inputs
        inputs = []
        for text in items:
            with TOKENIZER_LOCK:
                features = model.preprocess([text], prompt=prompt,
                                            processing_kwargs={"text": {"max_length": identity.settings["max_length"]}})
            inputs.append(tuple(features[name].numpy() for name in names))
        return inputs, []

    def _encode_items(self, model, items: list, on_batch=None):
        return self.encode_texts(model, items, on_batch)

    def _sample_key(self, item) -> str:
        return sha256_hex(item.encode("utf-8", "surrogatepass"))  # a hash: a spread sample, not the A-to-B texts

    # ------------------------------------------------------------------ transform
    def transform(self, X):
        """Encode each text into the model's sentence embedding.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of texts: a list, tuple, 1-D array, pandas Series or one-column DataFrame.

        Returns
        -------
        X_out : ndarray of shape (n_samples, embedding_dim_), dtype float32
            One row per input text, in input order.
        """
        items, valid, model = self._begin_transform(X)
        if self.identity_.settings.get("long_text") != "chunk":
            prompt = self.identity_.settings.get("prompt", "")
            warn_truncated("TextEncoder", model.tokenizer, {prompt + items[i] for i in np.flatnonzero(valid)},
                           self.max_length_, f". Set {setting('long_text', 'chunk')} to encode the whole text in "
                           "overlapping windows, or raise max_length (up to the model's limit).")
        out, _ = self._encode_column(items, valid, lambda texts, on_batch: self.encode_texts(model, texts, on_batch),
                                     dedupe_key=lambda text: text, content_key=text_key)
        settle_failures("TextEncoder", [(i, items[i], "not a string") for i in np.flatnonzero(~valid)], len(items),
                        self.on_error)
        return out

    # ------------------------------------------------------------------ encoding strategy
    def encode_texts(self, model, texts: list, on_batch=None):
        """Encode distinct texts in length-sorted batches, one or several streams at once.

        Returns the features in order and no failures; ``on_batch(positions, features)`` runs as
        each batch finishes. On a CPU, single-threaded streams keep every core busy where small
        batches leave torch's threads waiting (SST-2 at bf16: 1.26x one stream of 2 threads).
        """
        # A dynamic int8 network takes one text per call (its ranges are the call's: _quantize.recipe).
        batches = length_sorted_batches(texts, items_per_call(self.identity_.settings.get("int8")) or self.batch_size)
        out = np.empty((len(texts), self.embedding_dim_), dtype=np.float32)
        streams = self._forward_streams(len(batches))
        per_stream = max(1, torch.get_num_threads() // streams) if streams > 1 else None

        def encode(index):
            # Grad mode and autocast are thread-local: every stream enters the context itself.
            with self._inference_context():
                # Off the accelerator as each batch finishes: memory stays flat.
                return index, self._encode_batch(model, [texts[i] for i in index]).float().cpu().numpy()

        results = ordered_map(encode, batches, workers=streams, ahead=0 if streams == 1 else None,
                              initializer=torch.set_num_threads, initargs=(per_stream,))
        with torch_threads(per_stream), contextlib.closing(results):  # closing stops the streams on error
            for index, features in self._progress(results, total=len(batches)):
                out[index] = features
                if on_batch is not None:
                    on_batch(index, features)
        return out, {}

    def _forward_streams(self, n_batches: int) -> int:
        if self.device_ != "cpu" or n_batches < 2:
            return 1  # an accelerator runs one batch at a time; a single batch cannot be split
        if self.n_streams != "auto":
            return min(self.n_streams, n_batches)
        if self._backend() == "openvino":
            # Its own thread pool beats two single-thread requests (docs/speed_advice.json, 200 SST-2
            # sentences, 2 cores, AVX-512: int8 591 texts/s with one stream, 356 with two; ONNX Runtime
            # fp32 214 with two, 197 with one).
            return 1
        return 2 if torch.get_num_threads() >= 2 else 1

    @contextlib.contextmanager
    def _inference_context(self):
        """No autograd; autocast for fp16 (bf16 weights are already bfloat16)."""
        precision = self.identity_.settings["precision"]
        fp16 = precision == "fp16" and self._backend() == "torch"
        with torch.inference_mode(), autocast(self._torch_device(), "fp16" if fp16 else "fp32"):
            yield

    def _encode_batch(self, model, batch: list) -> torch.Tensor:
        from sentence_transformers.util import batch_to_device

        settings = self.identity_.settings
        chunk = settings.get("long_text") == "chunk"
        tokenizing = {"max_length": self.max_length_}
        if chunk:
            tokenizing.update(stride=settings["chunk_overlap"], return_overflowing_tokens=True)
        with TOKENIZER_LOCK:
            features = model.preprocess(batch, prompt=settings.get("prompt") or None,
                                        processing_kwargs={"text": tokenizing})
        owners = features.pop("overflow_to_sample_mapping", None)
        features = batch_to_device(features, self._torch_device())
        if not chunk:
            return output_vectors(model, features, settings)
        # Windows of long texts, at most batch_size per forward pass, then one average per text.
        tensors = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
        windows = [sentence_vectors(model, {**features, **{k: v[start:start + self.batch_size] for k, v in tensors.items()}},
                                    settings) for start in range(0, len(owners), self.batch_size)]
        average = chunk_average(torch.cat(windows), owners, features["attention_mask"].sum(1), len(batch))
        return output_vectors(model, features, settings, chunked=True, vectors=average)
