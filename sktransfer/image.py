"""ImageEncoder: any torchvision or timm backbone (or your own module) as a frozen feature extractor."""

from __future__ import annotations

import functools
import inspect
import numbers
import os
import warnings

import numpy as np
import torch
from PIL import Image
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from . import _backbones, _backends, _timm
from ._backbones import Backbone, effective_pooling, probe_image, resize_side
from ._columns import column_to_list
from ._content import sha256_hex
from ._device import autocast
from ._identity import EncoderIdentity
from ._images import (ImageDataset, check_images, check_value_range, collate, content_key, decode_ahead, describe_item,
                      item_key, unsupported_reason)
from ._pipeline import settle_failures
from ._registry import model_registry
from ._runtime import data_loader, ordered_map
from .base import BaseEncoder, indexed_names

__all__ = ["ImageEncoder"]

#: Flattened (pooling=None) outputs above this many features trigger a size warning.
LARGE_OUTPUT = 100_000

#: Largest shorter side (``image_size / crop``) images may be resized to: beyond, one image costs gigabytes.
MAX_RESIZE_SIDE = 4096


def _source(model, weights):
    """What ``model`` names: the user's module, a timm network or a torchvision model."""
    if isinstance(model, nn.Module):
        return _backbones.ModuleSource(model)
    if _timm.is_timm(model):
        return _timm.TimmSource(model, weights)
    return _backbones.TorchvisionSource(model, weights)


class _ExportedOutputs(nn.Module):
    """A backbone's selected layer outputs as a tuple: the module a backend exports."""

    def __init__(self, backbone):
        super().__init__()
        self.network = backbone.network  # registered, so that the exporters see its weights
        self._backbone = backbone

    def forward(self, batch):
        outputs = self._backbone(batch)
        return tuple(outputs[name] for name in self._backbone.layers)


class _BackendBackbone(Backbone):
    """A Backbone whose ``network`` is a `_backends.Network` (ONNX Runtime, OpenVINO): same layers, same pooling."""

    def __call__(self, batch: torch.Tensor, n_threads=None) -> dict:
        outputs = self.network.run([batch.numpy()], n_threads)
        return {name: torch.from_numpy(output) for name, output in zip(self.layers, outputs)}


class ImageEncoder(BaseEncoder):
    """Encode images with a frozen pretrained network.

    Parameters
    ----------
    model : str or torch.nn.Module, default="mobilenet_v2"
        A torchvision classification model name (``torchvision.models.list_models()``), your own
        module, or ``"timm:<name>"`` for any timm model (``timm.create_model(name,
        pretrained=True, num_classes=0)`` with timm's own data config for preprocessing; needs
        ``pip install "sktransfer[timm]"``). A module is used as given (its output, pooled if
        spatial), pickled with the estimator and told apart by everything ``forward`` can read;
        pair it with ``preprocess``. State with no content (a lock) raises ``IdentityError``
        unless the module states ``__sktransfer_identity__ = "..."``.
    weights : str, torchvision WeightsEnum or None, default="DEFAULT"
        Pretrained weights of a torchvision model: ``"DEFAULT"`` (torchvision's best), a name
        such as ``"IMAGENET1K_V1"``, or ``None`` for a seeded random initialisation (warns: the
        features are not pretrained); checkpoints load through torchvision's loader. For a timm
        model: ``"DEFAULT"`` (timm's default tag), a tag such as ``"in1k"``, or ``None``.
    layer : str, list of str or None, default=None
        ``None`` gives the penultimate representation (the input of the classifier head). A node
        name (``torchvision.models.feature_extraction.get_graph_node_names``; for timm, a
        ``model.feature_info`` stage such as ``"blocks.4"``) selects that node; a list
        concatenates several, each pooled.
    pooling : {"auto", "avg", "max", "avgmax", "cls"} or None, default="auto"
        Reduction of spatial maps and token sequences: ``"auto"`` averages maps and takes the
        class token of ViT-style sequences; ``"avgmax"`` concatenates average and max;
        ``None`` flattens (warns above 100,000 features).
    image_size : int or None, default=None
        Side of the square the network sees. ``None``: the weights' own (224 for most ImageNet
        models, 299 for Inception v3, 384 or 518 for some ViTs).
    crop : float in (0, 1] or None, default=None
        Fraction of the resized shorter side kept by the centre crop. ``None``: the weights' own
        (0.875 for most); ``1.0`` keeps the whole side. ``image_size / crop`` may not exceed 4096.
    preprocess : callable or None, default=None
        Replaces the weights' preprocessing: takes an RGB ``PIL.Image`` (every input is converted
        to one first) and returns a ``(C, H, W)`` float tensor. It must be deterministic; it is
        identified by its code and state, so an in-place edit after ``fit`` asks for a refit.
    on_error : {"raise", "nan"}, default="raise"
        Missing, unreadable, truncated or closed images, paths that are not regular files, images
        over the decompression-bomb limit, values outside their range: ``"raise"`` raises a
        ``ValueError`` naming the index, the item and the reason; ``"nan"`` returns NaN rows for
        them and warns with the count. Never a zero vector.
    jpeg_draft : bool, default=True
        Decode large JPEG files at 1/2, 1/4 or 1/8 scale when that still leaves at least 4x the
        resize target. Set False for bit-exact parity with a full decode.
    value_range : tuple of (float, float) or None, default=None
        The range that data which are not 8-bit come from, mapped onto black..white (float and
        integer arrays, 16-bit, ``I`` and ``F`` images). ``None``: the container's own range,
        never guessed from the values (floats 0-1, 16-bit 0-65535); integer arrays other than
        uint8/uint16 and ``I`` images made in memory need it. Values outside the range are an
        error, never clipped: floats holding 0-255 need ``(0, 255)``, 12-bit data ``(0, 4095)``.
        8-bit data are always 0-255. Part of the fingerprint when set.
    num_workers : int or "auto", default="auto"
        Processes that decode and preprocess while the network runs. ``"auto"``: with a GPU,
        one per core beyond the first (at most 8); on a CPU none up to 2 cores, ``cores // 4``
        (at most 4) beyond; none for a single batch.
    device : str, default="auto"
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        With ``backend="onnx"``: ``"cpu"`` or ``"cuda[:N]"`` (``onnxruntime-gpu``); with
        ``backend="openvino"``: ``"cpu"`` or ``"gpu[.N]"`` (Intel GPUs). ``"auto"`` takes the
        backend's GPU when it has one.
    backend : {"torch", "onnx", "openvino"}, default="torch"
        What runs the network. ``"onnx"`` (ONNX Runtime, ``pip install "sktransfer[onnx]"``)
        and ``"openvino"`` (``pip install "sktransfer[openvino]"``) run an export of the same
        resolved network, made once and kept in ``$SKTRANSFER_EXPORTS`` (default
        ``~/.cache/sktransfer/exports``), never pickled. Part of the fingerprint. Which is
        fastest depends on the CPU: see the image encoder page.
    batch_size : int, default=32
        Images per forward pass.
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Forward-pass arithmetic: autocast with torch (bf16 warns on a CPU without bf16
        instructions, where it is several times slower), the inference precision hint with
        OpenVINO (float32 with a warning on a CPU without bf16); ONNX Runtime offers fp32 and
        int8. ``"int8"`` (``backend="onnx"`` or ``"openvino"``) quantizes the export statically,
        calibrated on up to 64 fit images (``calibration_``; ``fit`` then reads them); ``fit``
        measures the cosine to fp32 on fit images (``fidelity_``) and warns below a mean of
        0.99. Output is float32 in every case.
    show_progress : bool, default=False
        Show a progress bar over batches.
    n_threads : int or None, default=None
        CPU threads for the forward pass while ``transform`` runs, restored afterwards.
        ``None`` leaves torch's setting alone.
    cache : None, str, os.PathLike or EmbeddingCache, default=None
        Reuse embeddings across calls, folds and processes: each distinct image (by content) is
        encoded once per fingerprint. A path means ``EmbeddingCache(path)``.

    Attributes
    ----------
    fidelity_ : dict
        With ``precision="int8"``: ``{"min_cosine", "mean_cosine", "n_items", "held_out"}``, the
        int8 features of up to 64 fit images against the float32 network's.
    calibration_ : list of tuple of ndarray
        With ``precision="int8"``: the preprocessed images (float16) that set the activation
        ranges, pickled with the encoder so that the same int8 network can be made elsewhere.
    identity_ : EncoderIdentity
        What makes the vectors: the model, a content hash of its checkpoint or module, and the
        effective output-changing settings (layers, the pooling each layer really gets, the
        preprocessing, jpeg_draft, value_range when set, precision, backend). The cache
        fingerprint (``identity_.fingerprint``) and the model registry key derive from it.
    device_ : str
        The device the network runs on.
    preprocess_ : callable
        The preprocessing in effect.
    layer_dims_ : dict
        Number of output features of each selected layer, in order.
    embedding_dim_ : int
        Total number of output features.
    n_features_in_ : int
        Number of input columns (1); only set when fitted on a 2-D input such as a DataFrame.
    feature_names_in_ : ndarray of shape (1,)
        Name of the input column; only set when fitted on a DataFrame.

    See Also
    --------
    TextEncoder : The same contract for texts.

    Notes
    -----
    Accepted items, mixed freely: paths of regular files (a pipe or a device is refused, never
    read), file bytes, PIL images of any mode, uint8 and uint16 arrays (H, W), (H, W, 3) or
    (H, W, 4), float arrays in [0, 1]. Every mode is converted to RGB (alpha onto white), EXIF
    orientation applied, animations give their first frame: one picture, the same features.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import ImageEncoder
    >>> images = [np.full((64, 48, 3), 200, dtype=np.uint8), np.zeros((32, 32), dtype=np.uint8)]
    >>> ImageEncoder(weights="IMAGENET1K_V1").fit_transform(images).shape
    (2, 1280)
    """

    _parameter_constraints: dict = {
        **BaseEncoder._parameter_constraints,
        "model": [str, nn.Module],
        "weights": "no_validation",  # a name or a torchvision WeightsEnum, checked in fit
        "layer": [str, list, tuple, None],
        "pooling": [StrOptions(_backbones.POOLINGS), None],
        "image_size": [Interval(numbers.Integral, 16, None, closed="left"), None],
        "crop": [Interval(numbers.Real, 0, 1, closed="right"), None],
        "preprocess": [callable, None],
        "on_error": [StrOptions({"raise", "nan"})],
        "jpeg_draft": ["boolean"],
        "value_range": [tuple, list, None],  # two finite numbers, low < high: checked in fit
        "num_workers": [Interval(numbers.Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "backend": [StrOptions(set(_backends.BACKENDS))]}
    _output_parameters = ("model", "weights", "layer", "pooling", "image_size", "crop", "preprocess",
                          "jpeg_draft", "value_range", "precision", "backend")

    def __init__(self, model="mobilenet_v2", *, weights="DEFAULT", layer=None, pooling="auto", image_size=None,
                 crop=None, preprocess=None, on_error="raise", jpeg_draft=True, value_range=None, num_workers="auto",
                 device="auto", backend="torch", batch_size=32, precision="fp32", show_progress=False, n_threads=None,
                 cache=None):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.crop = crop
        self.preprocess = preprocess
        self.on_error = on_error
        self.jpeg_draft = jpeg_draft
        self.value_range = value_range
        self.num_workers = num_workers
        self.device = device
        self.backend = backend
        self.batch_size = batch_size
        self.precision = precision
        self.show_progress = show_progress
        self.n_threads = n_threads
        self.cache = cache

    def fit(self, X, y=None):
        """Resolve and load the network and its preprocessing; nothing is learned from ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1), or an array of images
            One column of images, validated as ``transform`` validates it (item kinds, stacked
            arrays); only its column name is recorded. Files are not read, except with
            ``precision="int8"``: up to 128 of them calibrate and measure the int8 network.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted encoder.
        """
        device, items, valid = self._begin_fit(X)
        value_range = check_value_range(self.value_range)
        layers = self._layers()
        source = _source(self.model, self.weights)
        name, content = source.name, source.content()
        draft = EncoderIdentity("ImageEncoder", name, content, {"layers": layers}, ("layers",))
        backbone = model_registry.get(draft.registry_key(str(device)), lambda: self._load_torch(draft, device))
        preprocess = self.preprocess
        if preprocess is None:
            preprocess = source.preprocessing(self.image_size, self.crop)
            side = resize_side(preprocess)
            if side is not None and side > MAX_RESIZE_SIDE:
                raise ValueError(
                    f"image_size={self.image_size} with crop={self.crop} resizes every image to a "
                    f"{side}-pixel shorter side (limit {MAX_RESIZE_SIDE}); raise crop or lower image_size.")
        pooling = self._probe(backbone, preprocess, device)
        self.preprocess_ = preprocess
        described = _backbones.preprocessing_settings(preprocess)
        settings = {"layers": layers, "pooling": pooling, "preprocess": described,
                    "jpeg_draft": bool(self.jpeg_draft) and resize_side(preprocess) is not None,
                    "precision": self.precision}
        if value_range is not None:  # absent by default, so default fingerprints stay those of earlier versions
            settings["value_range"] = list(value_range)
        summary = {"preprocess": _backbones.preprocessing_summary(described)}
        settings, shaping = self._backend_facets(settings, draft.model_settings, self.backend)
        if self.backend != "torch":
            shaping += ("preprocess",)  # an export is made for one input size: its registry entry too
        identity = EncoderIdentity("ImageEncoder", name, content, settings, shaping, summary=summary)
        if self.backend != "torch":
            device = _backends.resolve_device(self.backend, self.device)
            if self.precision == "int8":
                identity, reference, rows = self._int8_identity(identity, "image", items, valid, device)
            backbone = model_registry.get(identity.registry_key(device), lambda: self._load_backend(identity, device))
        self._set_identity(identity, backbone, device)
        if self.precision == "int8":
            self._measure_fidelity(reference, items, rows)
        return self

    def _layers(self):
        if self.layer is None:
            return None
        layers = [self.layer] if isinstance(self.layer, str) else list(self.layer)
        if not layers or not all(isinstance(name, str) for name in layers):
            raise ValueError(f"layer must be a node name or a non-empty list of names, got {self.layer!r}")
        return layers

    def _load_model(self, identity: EncoderIdentity, device):
        if "backend" in identity.model_settings:
            return self._load_backend(identity, device)
        return self._load_torch(identity, device)

    def _load_torch(self, identity: EncoderIdentity, device: torch.device) -> Backbone:
        """The torch backbone the identity names, its content checked first."""
        source = _source(self.model, self.weights)
        identity.check_content(source.content(), source.location)
        network = source.create()
        self._apply_tuned(identity, network)  # tuned tensors of the full network, applied before BatchNorm is folded
        backbone = source.build(network, identity.settings["layers"])
        memory_format = torch.channels_last if device.type != "mps" else torch.preserve_format
        backbone.network.to(device, memory_format=memory_format)
        return backbone

    def _load_backend(self, identity: EncoderIdentity, device: str) -> _BackendBackbone:
        """The identity's backend running an export of its torch backbone."""
        torch_identity = self._torch_identity(identity)
        cpu = torch.device("cpu")
        backbone = model_registry.get(torch_identity.registry_key("cpu"), lambda: self._load_torch(torch_identity, cpu))
        input_shape = tuple(self.preprocess_(probe_image()).shape)

        def export_spec():
            # Batch 2: exporters specialise sizes 0 and 1, and the batch axis must stay free.
            return _backends.ExportSpec(_ExportedOutputs(backbone), (torch.zeros((2, *input_shape)),), ("pixels",),
                                        tuple(f"out{i}" for i in range(len(backbone.layers))), ((0,),))

        network = _backends.exported_network(
            identity.settings["backend"], self._network_payload(identity, input=list(input_shape)), export_spec,
            device=device, precision=identity.settings["precision"], int8=self._int8_spec(identity))
        return _BackendBackbone(**{**vars(backbone), "network": network})  # the same layout, one output_dims

    def _probe(self, backbone: Backbone, preprocess, device) -> dict:
        """Output sizes and the pooling each layer really gets, from one forward pass on a probe."""
        probe = preprocess(probe_image())
        if not isinstance(probe, torch.Tensor) or probe.ndim != 3:
            raise ValueError(f"preprocess returned {type(probe).__name__}, expected a (C, H, W) tensor")
        # Output sizes depend on the input size and pooling only; clones share the answer.
        probe_key = (tuple(probe.shape), self.pooling)
        known = backbone.output_dims.get(probe_key)
        if known is None:
            with torch.inference_mode(), autocast(device, self.precision):
                outputs = backbone(probe.unsqueeze(0).to(device))
                known = {name: (int(backbone.pooled(outputs[name], self.pooling).shape[1]),
                                effective_pooling(outputs[name], self.pooling, backbone.class_token))
                         for name in backbone.layers}
            backbone.output_dims[probe_key] = known
        self.layer_dims_ = {name: dim for name, (dim, _) in known.items()}
        self.embedding_dim_ = sum(self.layer_dims_.values())
        if self.embedding_dim_ > LARGE_OUTPUT:
            warnings.warn(f"ImageEncoder outputs {self.embedding_dim_:,} features per image "
                          f"({self.embedding_dim_ * 4 / 2**20:.1f} MiB per image as float32) with pooling=None; "
                          "use pooling='avg' (or 'max', 'avgmax') unless you need the full map.", UserWarning,
                          stacklevel=3)
        already_vectors = [name for name, (_, effective) in known.items() if effective is None]
        if already_vectors and self.pooling != "auto":
            raise ValueError(
                f"pooling={self.pooling!r} has nothing to pool: the output of {already_vectors[0]!r} is already a "
                "vector (the network pooled it). Keep pooling='auto', or choose a layer that outputs a feature map "
                "(e.g. the last feature block; list them with "
                "torchvision.models.feature_extraction.get_graph_node_names(model)[1]).")
        return {name: effective for name, (_, effective) in known.items()}

    def _requested_backend(self) -> str:
        return self.backend

    def _items_of(self, X) -> list:
        if isinstance(X, np.ndarray) and X.dtype != object and X.ndim in (3, 4):
            if X.ndim == 3 and (X.shape[-1] in (3, 4) or X.shape[0] in (3, 4)):
                layout = "(H, W, channels)" if X.shape[-1] in (3, 4) else "(channels, H, W)"
                raise ValueError(f"ImageEncoder got one array of shape {X.shape}, which looks like a single "
                                 f"{layout} image rather than a stack of grayscale images. Wrap it in a "
                                 "list ([image]) for one image (channels last), pass a stack (N, H, W, C), or "
                                 "list(stack) for 3 or 4 grayscale images or images 3 or 4 pixels wide.")
            return list(X)  # a stack of images: (N, H, W) or (N, H, W, C)
        if isinstance(X, (Image.Image, os.PathLike)):
            raise ValueError("ImageEncoder expects a sequence of images (one per sample); wrap a single image in a list.")
        return column_to_list(X, "ImageEncoder")

    def _check_columns(self, X, *, reset):
        if isinstance(X, np.ndarray) and X.dtype != object and X.ndim in (3, 4):
            X = np.empty((len(X), 1), dtype=object)  # a stack is one column of images
        super()._check_columns(X, reset=reset)

    def _valid_rows(self, items: list) -> np.ndarray:
        return check_images(items, self.on_error, "ImageEncoder")

    def _items_inputs(self, model, identity: EncoderIdentity, items: list) -> tuple[list, list]:
        # Decoded and preprocessed as transform does, so the ranges are those of the real inputs.
        side = resize_side(self.preprocess_)
        value_range = identity.settings.get("value_range")
        dataset = ImageDataset(items, self.preprocess_, 4 * side if identity.settings["jpeg_draft"] else None, side,
                               None if value_range is None else tuple(value_range))
        inputs, failed = [], []
        for position in range(len(dataset)):
            _, tensor, reason = dataset[position]
            if tensor is None:
                failed.append((position, reason))
            else:
                inputs.append((tensor.unsqueeze(0).numpy(),))
        return inputs, failed

    def _encode_items(self, model, items: list, on_batch=None):
        return self._encode_images(model, items, on_batch)

    def _sample_key(self, item) -> str | None:
        kind, value = item_key(item)
        if kind == "object":
            return None  # an in-memory image: no key without decoding it
        return sha256_hex(value.encode("utf-8", "surrogatepass") if kind == "path" else value)

    def _describe(self, item) -> str:
        return describe_item(item)

    def transform(self, X):
        """Encode each image into the selected layers' pooled features.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1), or an array of images
            File paths, bytes, PIL images or arrays (mixed freely), or a stacked array
            ``(N, H, W)`` / ``(N, H, W, C)``.

        Returns
        -------
        X_out : ndarray of shape (n_samples, embedding_dim_), dtype float32
            One row per input image, in input order.
        """
        items, valid, backbone = self._begin_transform(X)
        # In-memory images are keyed by the pixels the network sees, which value_range shapes.
        keyed = functools.partial(content_key, value_range=self._value_range())
        out, failures = self._encode_column(
            items, valid, lambda images, on_batch: self._encode_images(backbone, images, on_batch),
            dedupe_key=item_key, content_key=keyed)
        failures += [(row, items[row], unsupported_reason(items[row])) for row in np.flatnonzero(~valid)]
        settle_failures("ImageEncoder", failures, len(items), self.on_error, describe=describe_item)
        return out

    def __setstate__(self, state):
        # A pickle of an earlier version lacks the parameters added since (value_range): each takes
        # its default, which is what that version did, so repr, get_params and clone work on it.
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and parameter.default is not inspect.Parameter.empty:
                state.setdefault(name, parameter.default)
        super().__setstate__(state)

    def _value_range(self):  # the fitted one; a pickle of an earlier version has none
        found = self.identity_.settings.get("value_range")
        return None if found is None else tuple(found)

    def _encode_images(self, backbone, items, on_batch):
        """Decode and preprocess ahead (worker processes, else a thread) while the network encodes."""
        device = self._torch_device()
        on_torch = self._backend() == "torch"
        settings = self.identity_.settings
        side = resize_side(self.preprocess_)
        # At least 4x the resize target, so the antialiased resize still does a real reduction:
        # features within 2e-4 cosine of a full decode (1e-2 when DCT-scaling down to the target).
        draft = 4 * side if settings["jpeg_draft"] else None
        dataset = ImageDataset(items, self.preprocess_, draft, side, self._value_range())
        loader = data_loader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                             device=torch.device("cuda") if self.device_ != "cpu" else device, collate_fn=collate)
        out = np.empty((len(items), self.embedding_dim_), dtype=np.float32)
        failures = {}
        # Without decoding processes a thread decodes ahead, except for torch on a CPU, whose threads
        # already fill the cores (398 photos, 2 cores: torch 41 img/s with it, 43 without; ONNX 85-91, 68).
        ahead = loader.num_workers == 0 and len(loader) > 1 and (not on_torch or device.type != "cpu")
        batches = decode_ahead(dataset, self.batch_size) if ahead else loader
        # Torch runs channels-last convolutions faster; the runtimes take plain NCHW arrays.
        memory_format = torch.channels_last if on_torch and device.type != "mps" else torch.contiguous_format
        forward, streams = backbone, 1
        if not on_torch and self.device_ == "cpu":
            # Two batches at once, each on half the threads, waste less than two threads sharing one
            # (398 photos, 2 cores, ONNX Runtime: 83 img/s against 70).
            threads = self.n_threads or torch.get_num_threads()
            streams = 2 if threads >= 2 else 1
            forward = functools.partial(backbone, n_threads=max(1, threads // streams))
        elif not on_torch:
            forward = functools.partial(backbone, n_threads=self.n_threads)
        pooling = settings["pooling"]

        def ready():
            for index, batch, errors in self._progress(batches, total=len(loader)):
                failures.update(errors)
                if errors and self.on_error == "raise":
                    return  # no point encoding the rest: the first failure is reported now
                if batch is not None:
                    yield index, batch.to(device, non_blocking=True).contiguous(memory_format=memory_format)

        results = ordered_map(lambda job: (job[0], forward(job[1])), ready(), workers=streams, ahead=streams - 1,
                              name="sktransfer-stream")
        try:
            with torch.inference_mode(), autocast(device, settings["precision"] if on_torch else "fp32"):
                for index, outputs in results:
                    features = torch.cat([backbone.pooled(outputs[name], pooling[name]) for name in backbone.layers], 1)
                    out[index] = features.float().cpu().numpy()  # off the accelerator batch by batch: memory stays flat
                    if on_batch is not None:
                        on_batch(index, out[index])
        finally:
            results.close()
            if batches is not loader:
                batches.close()  # stops the decoding thread now, not whenever the generator is collected
        return out, failures

    def _feature_names(self, prefix):
        if len(self.layer_dims_) == 1:
            return super()._feature_names(prefix)
        return [name for layer, dim in self.layer_dims_.items() for name in indexed_names(f"{prefix}_{layer}", dim)]
