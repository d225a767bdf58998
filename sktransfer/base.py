"""What every sktransfer encoder shares, in the style of scikit-learn's ``preprocessing/_encoders.py``.

``fit`` resolves the source into an `EncoderIdentity` (`BaseEncoder._set_identity`); ``transform``
is `BaseEncoder._begin_transform` and one `BaseEncoder._encode_column` (`sktransfer._pipeline`).
Each encoder supplies the hooks declared below (docs/architecture.md). Pickles carry the parameters
and the identity, never weights nor a path: the model is found again by name where loaded.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data
from tqdm.auto import tqdm

from . import _backends, _quantize
from ._content import object_digest, sha256_hex
from ._device import PRECISIONS, fallback_device, resolve_device, warn_slow_bf16
from ._identity import EncoderIdentity, ModelMismatchError
from ._columns import column_to_list, is_dataframe, is_missing, numbers_hint, read_once, series_name
from ._pipeline import encode_column, settle_failures, warn_nan_rows
from ._registry import model_registry
from ._weights import apply_weights, weights_from_bytes
from ._runtime import torch_threads
from .cache import EmbeddingCache, as_cache

__all__ = ["BaseEncoder", "DocLinkMixin", "column_to_list", "indexed_names", "is_missing", "numbers_hint", "read_once",
           "warn_nan_rows"]

#: Where the documentation site lives; the estimators' HTML repr links to their page there.
DOCS_URL = "https://sktransfer.readthedocs.io/en/latest/"


class DocLinkMixin:
    """The HTML repr's "?" link of every public estimator: its entry in the API reference.

    mkdocstrings gives each ``::: sktransfer.Name`` of docs/api.md the anchor ``sktransfer.Name``,
    so the link lands on the class itself (tests/test_estimator_checks.py checks that every
    public estimator has one there).
    """

    _doc_link_module = "sktransfer"
    _doc_link_template = DOCS_URL + "api/#sktransfer.{estimator_name}"


def indexed_names(prefix: str, n: int) -> list[str]:
    """``prefix_0 ... prefix_{n-1}`` with the index zero-padded so that names sort in order."""
    width = len(str(n - 1))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


def _shown(value) -> str:
    """A parameter's value as an error message shows it (never used to compare)."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class BaseEncoder(DocLinkMixin, TransformerMixin, BaseEstimator):
    """Base class for frozen pretrained encoders; not meant to be used directly.

    Holds the parameters every encoder shares (``device``, ``batch_size``, ``precision``,
    ``show_progress``, ``n_threads``, ``cache``: each encoder documents them) and the helpers
    and hooks the module docstring lists.
    """

    _parameter_constraints: dict = {
        "device": [str],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "precision": [StrOptions(set(PRECISIONS))],
        "show_progress": ["boolean"],
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "cache": [None, str, os.PathLike, EmbeddingCache],
    }

    #: Parameters that change the vectors; each encoder lists its own. ``transform`` refuses to
    #: run when one was changed after ``fit``.
    _output_parameters: tuple = ("precision",)

    # ------------------------------------------------------------------ validation
    def _validate_params(self):
        super()._validate_params()
        # numbers.Integral admits True and False; batch_size=True is a mistake, not 1.
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            integral = any(isinstance(c, Interval) and c.type is numbers.Integral for c in constraints
                           if not isinstance(c, str))
            if integral and isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an int, got {value!r} (a bool)."
                )

    # ------------------------------------------------------------------ hooks each encoder supplies
    def _items_of(self, X) -> list:
        """The column as a list of items; an encoder that accepts more containers overrides it."""
        return column_to_list(X, type(self).__name__)

    def _valid_rows(self, items: list) -> np.ndarray:
        """Its reader's checks: the rows to encode, with ``on_error`` applied to the others."""
        raise NotImplementedError

    def _load_model(self, identity: EncoderIdentity, device):
        """Its source: the model the identity names, checked against the identity's content."""
        raise NotImplementedError

    def _requested_backend(self) -> str:
        """The runner ``fit`` asks for: encoders with a ``backend`` parameter return it."""
        return "torch"

    # ------------------------------------------------------------------ fit and transform
    def _items_inputs(self, model, identity: EncoderIdentity, items: list) -> tuple[list, list]:
        """The network inputs of ``items`` for int8 calibration (one tuple of arrays with a batch axis
        of 1 per item that could be read) and the ``(position, reason)`` of the others."""
        raise NotImplementedError

    def _encode_items(self, model, items: list, on_batch=None) -> tuple[np.ndarray, dict]:
        """Its encoding strategy: distinct items to vectors, ``{position: reason}`` for failures."""
        raise NotImplementedError

    def _sample_key(self, item) -> str | None:
        """A key of ``item`` that orders the int8 fit sample whatever the input's order, and says which
        items are the same (None: the item has no stable key, such as an in-memory image)."""
        raise NotImplementedError

    def _describe(self, item) -> str:
        """How an error names one of its items."""
        return repr(item)

    # ------------------------------------------------------------------ fit and transform
    def _begin_fit(self, X) -> tuple[torch.device, list, np.ndarray]:
        """Validate the parameters and ``X`` and resolve the device, before any model is loaded;
        returns the device, the items and the mask of rows to encode.

        With another backend, torch only loads the model to export it, on the CPU.
        """
        self._validate_params()
        items, valid = self.read_column(X, reset=True)
        for attribute in ("calibration_", "fidelity_"):  # an earlier int8 fit's
            self.__dict__.pop(attribute, None)
        backend = self._requested_backend()
        _backends.check_precision(backend, self.precision, type(self).__name__)
        if backend == "torch":
            device = resolve_device(self.device)
            warn_slow_bf16(type(self).__name__, device, self.precision)
            return device, items, valid
        _backends.require(backend)
        _backends.resolve_device(backend, self.device)
        return torch.device("cpu"), items, valid

    # ------------------------------------------------------------------ int8
    def _int8_identity(self, identity: EncoderIdentity, kind: str, items: list, valid: np.ndarray, device):
        """The identity of ``identity``'s network quantized to int8, and the float32 model it is measured against.

        A calibrated recipe takes the network inputs of up to ``CALIBRATION_ITEMS`` fit items
        (the first of `_fit_sample`, an order by content) as ``calibration_``: fitted state that pickles carry, whose digest enters
        the identity, so the same quantized network can be made again elsewhere.
        """
        owner = type(self).__name__
        rows = self._fit_sample(items, valid)
        if not rows.size:
            raise ValueError(f"{owner} with precision='int8' measures the int8 network on the items given to fit, "
                             f"and none of the {len(items)} can be encoded. Fit on some of the data you will "
                             "transform.")
        fp32 = dataclasses.replace(identity, settings={**identity.settings, "precision": "fp32"})
        reference = model_registry.get(fp32.registry_key(device), lambda: self._load_model(fp32, device))
        settings = _quantize.recipe(identity.settings["backend"], kind)
        calibration = None
        if settings["calibrated"]:
            chosen = rows[:_quantize.CALIBRATION_ITEMS]
            calibration, failed = self._items_inputs(reference, fp32, [items[i] for i in chosen])
            if self.on_error == "raise":  # with "nan", transform reports them: calibration takes the others
                settle_failures(owner, [(int(chosen[p]), items[chosen[p]], reason) for p, reason in failed],
                                len(items), "raise", describe=self._describe)
            if not calibration:
                raise ValueError(f"{owner} with precision='int8' calibrates on the items given to fit, and none of "
                                 "those sampled could be read.")
            # Float inputs kept as float16: a bounded pickle (64 photos: 19 MB), the same ranges. In
            # content order, so that the same items in another order are the same calibration.
            calibration = sorted((tuple(a.astype(np.float16) if a.dtype.kind == "f" else a for a in batch)
                                  for batch in calibration), key=lambda batch: _quantize.calibration_digest([batch]))
            if not all(np.isfinite(a).all() for batch in calibration for a in batch if a.dtype.kind == "f"):
                raise ValueError(f"{owner} with precision='int8': the preprocessed fit items hold values beyond "
                                 "float16's range (65504), which calibration keeps them in; scale the "
                                 "preprocessing's output, or use precision='fp32'.")
            self.calibration_ = calibration
        settings["calibration"] = None if calibration is None else _quantize.calibration_digest(calibration)
        quantized = dataclasses.replace(
            identity, settings={**identity.settings, "int8": settings},
            model_settings=tuple(identity.model_settings) + ("int8",),
            summary={**identity.summary, "int8": f"{settings['method']} by {settings['tool']}"})
        return quantized, reference, rows

    def _fit_sample(self, items: list, valid: np.ndarray) -> np.ndarray:
        """The distinct valid rows, in an order that does not depend on the input's: by content key,
        then the items without one (in-memory images) in a seeded order of their positions."""
        first = {}
        unkeyed = []
        for row in np.flatnonzero(valid):
            key = self._sample_key(items[row])
            if key is None:
                unkeyed.append(int(row))
            else:
                first.setdefault(key, int(row))
        keyed = [first[key] for key in sorted(first)]
        return np.asarray(keyed + list(np.random.default_rng(0).permutation(unkeyed)), dtype=np.intp)

    def _int8_spec(self, identity: EncoderIdentity):
        """For `sktransfer._backends.exported_network`: None without int8, else ``(settings, make)``, where
        ``make()`` returns the calibration inputs, checked against the identity; it runs only when the
        int8 network must be made (an export found on disk is verified by its own manifest)."""
        settings = identity.settings.get("int8")
        if settings is None:
            return None
        return settings, lambda: self._calibration_for(settings)

    def _calibration_for(self, settings: dict):
        owner = type(self).__name__
        _quantize.check_recipe(settings, owner)
        if settings["calibration"] is None:
            return None
        calibration = self.__dict__.get("calibration_")
        if calibration is None or _quantize.calibration_digest(calibration) != settings["calibration"]:
            raise ModelMismatchError(
                f"{owner} was fitted with precision='int8' calibrated on inputs {settings['calibration'][:12]}, but "
                + ("holds no calibration inputs" if calibration is None else "holds other calibration inputs")
                + ": its int8 network cannot be made again. Use the fitted encoder as it was pickled, or fit again.")
        return [tuple(a.astype(np.float32) if a.dtype.kind == "f" else a for a in batch) for batch in calibration]

    def _measure_fidelity(self, reference, items: list, rows: np.ndarray) -> None:
        """``fidelity_``: the int8 vectors of up to ``FIDELITY_ITEMS`` fit items against float32's,
        beyond the calibration sample where there are enough; a warning below ``FIDELITY_WARNING``."""
        calibrated = self.identity_.settings["int8"]["calibration"] is not None
        # Items the calibration did not see, when there are enough of them; else the first ones.
        held_out = calibrated and rows.size >= _quantize.CALIBRATION_ITEMS + _quantize.FIDELITY_ITEMS
        start = _quantize.CALIBRATION_ITEMS if held_out else 0
        chosen = rows[start:start + _quantize.FIDELITY_ITEMS]
        sample = [items[i] for i in chosen]
        with torch_threads(self.n_threads):
            expected, failed = self._encode_items(reference, sample)
            found, failed_int8 = self._encode_items(self.model_, sample)
        failed = {**failed, **failed_int8}
        if failed and self.on_error == "raise":
            settle_failures(type(self).__name__, [(int(chosen[p]), sample[p], reason) for p, reason in failed.items()],
                            len(items), "raise", describe=self._describe)
        expected[list(failed)] = np.nan  # rows not encoded are not compared
        figures = {**_quantize.fidelity(expected, found), "held_out": bool(held_out or not calibrated)}
        self.fidelity_ = figures
        shown = (f"{self.identity_.summary['int8']}; at fit, cosine to fp32 min {figures['min_cosine']:.4f}, "
                 f"mean {figures['mean_cosine']:.4f} on {figures['n_items']} items")
        self.identity_ = dataclasses.replace(self.identity_, summary={**self.identity_.summary, "int8": shown})
        if not figures["mean_cosine"] >= _quantize.FIDELITY_WARNING:
            warnings.warn(
                f"{type(self).__name__}(precision='int8', backend={self._backend()!r}): its vectors have a mean cosine "
                f"of {figures['mean_cosine']:.4f} (min {figures['min_cosine']:.4f}) to float32's on {figures['n_items']} "
                f"fit items, below {_quantize.FIDELITY_WARNING}: int8 is not faithful for this model here. Use "
                "precision='fp32' with the same backend, or precision='bf16' on a CPU with native bf16 "
                "(`sktransfer speed` measures each option on your data).", UserWarning, stacklevel=3)

    def _backend(self) -> str:
        """The backend the fitted identity runs on (``fit`` reads the ``backend`` parameter)."""
        return self.identity_.settings.get("backend", "torch")

    def _torch_device(self) -> torch.device:
        """Where torch's part of the work runs: the device, or the CPU beside another backend's runtime."""
        return torch.device(self.device_) if self._backend() == "torch" else torch.device("cpu")

    @staticmethod
    def _backend_facets(settings: dict, model_settings: tuple, backend: str) -> tuple[dict, tuple]:
        """The settings and model-shaping names of vectors ``backend`` computes.

        Torch adds nothing (its fingerprints never move); another backend joins the fingerprint,
        and with the precision (a session compiled for it) the registry key.
        """
        if backend == "torch":
            return settings, tuple(model_settings)
        shaping = tuple(n for n in model_settings if n != "precision") + ("backend", "precision")
        return {**settings, "backend": backend}, shaping

    @staticmethod
    def _torch_identity(identity: EncoderIdentity) -> EncoderIdentity:
        """The identity of the torch model a backend's export is made from (same settings, torch's registry key)."""
        shaping = tuple(n for n in identity.model_settings if n not in ("backend", "precision", "int8", "preprocess"))
        return dataclasses.replace(identity, model_settings=shaping)

    def _network_payload(self, identity: EncoderIdentity, **layout) -> dict:
        """What an exported network computes: the content, the settings that shape the torch model, the input."""
        torch_identity = self._torch_identity(identity)
        shaping = {n: identity.settings[n] for n in torch_identity.model_settings}
        return {"encoder": identity.encoder, "content": identity.content, "shaping": shaping, **layout}

    def _begin_transform(self, X):
        """Check the fit still holds, read ``X``; returns the items, the rows to encode, the model."""
        check_is_fitted(self, "identity_")
        self.check_unchanged()
        items, valid = self.read_column(X, reset=False)
        return items, valid, self.loaded_model()

    def read_column(self, X, *, reset: bool) -> tuple[list, np.ndarray]:
        """The one validation path of ``fit`` and ``transform``: the items and the mask of rows to
        encode (``on_error`` applied to the others); ``reset`` records the column's name."""
        items = self._items_of(X)
        self._check_columns(X, reset=reset)
        return items, self._valid_rows(items)

    def _check_columns(self, X, *, reset):
        # n_features_in_ and feature_names_in_ describe 2-D inputs (a one-column DataFrame or
        # array) and named pandas Series (what a ColumnTransformer passes for a column selected
        # by name), so that output names follow the column; a plain list records neither.
        if is_dataframe(X) or (isinstance(X, np.ndarray) and X.ndim == 2):
            validate_data(self, X, reset=reset, skip_check_array=True)
        else:
            name = series_name(X)
            if reset:
                for attribute in ("n_features_in_", "feature_names_in_"):
                    self.__dict__.pop(attribute, None)
                if name is not None:
                    self.n_features_in_ = 1
                    self.feature_names_in_ = np.asarray([name], dtype=object)
            elif name is not None and hasattr(self, "feature_names_in_") and name != self.feature_names_in_[0]:
                raise ValueError(
                    f"{type(self).__name__} was fitted on the column {self.feature_names_in_[0]!r} and is given a "
                    f"Series named {name!r}: the feature names should match those that were passed during fit. "
                    "Pass the same column, or rename it (series.rename(...))."
                )

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform ``X``; a one-pass iterable (a generator) is read once, not consumed by fit.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1), or an iterable of items
            One column of items.
        y : None
            Ignored; present for API consistency.
        **fit_params : dict
            Ignored; present for API consistency.

        Returns
        -------
        X_out : ndarray of shape (n_samples, embedding_dim_), dtype float32
        """
        X = read_once(X)
        return self.fit(X, y).transform(X)

    # ------------------------------------------------------------------ identity
    def _set_identity(self, identity: EncoderIdentity, model, device: torch.device) -> None:
        """Record what was fitted: the identity, the device, the model and the parameters used."""
        self.identity_ = identity
        self.device_ = str(device)
        self.model_ = model
        self.__dict__.pop("tuned_weights_", None)  # a new fit starts from the pretrained model
        # A deep snapshot: a list appended to or a Compose edited in place after fit is a change too.
        self._fitted_digests = {name: (object_digest(getattr(self, name), name), _shown(getattr(self, name)))
                               for name in self._output_parameters}

    def check_unchanged(self) -> None:
        """Refuse to mix settings: the fitted model and fingerprint describe the parameters at fit.

        Every output-changing parameter is compared by content with its value at fit (the same
        digest the identity uses for callables and modules), so an in-place edit counts.
        """
        for name, (fitted, shown) in self._fitted_digests.items():
            current = getattr(self, name)
            if object_digest(current, name) != fitted:
                now = _shown(current)
                change = f"from {shown} to {now}" if now != shown else f"in place (it still reads {now})"
                raise ValueError(
                    f"{type(self).__name__}.{name} was changed {change} after fit, and it changes the vectors: "
                    "the fitted model and cache fingerprint still describe the old value. Call fit again "
                    f"(set_params does not refit), or set {name} back."
                )

    def adopt_tuned_weights(self, blob: bytes) -> None:
        """Make this fitted encoder compute with tuned tensors on top of its pretrained model.

        Used by [`FineTuningClassifier`][sktransfer.FineTuningClassifier]. ``blob`` (safetensors bytes of the
        tensors tuning changed) becomes fitted state that pickles carry, and its digest enters the
        identity as the ``tuned`` setting, one that shapes the model: the registry loads the
        pretrained model and applies the tensors, and cache entries never mix with pretrained ones.
        """
        identity = self.identity_
        settings = {**identity.settings, "tuned": sha256_hex(blob)}
        shaping = tuple(name for name in identity.model_settings if name != "tuned") + ("tuned",)
        summary = {**identity.summary, "tuned": settings["tuned"][:12]}
        self.identity_ = dataclasses.replace(identity, settings=settings, model_settings=shaping, summary=summary)
        self.tuned_weights_ = blob
        self.__dict__.pop("model_", None)  # the pretrained model is not this identity's

    def _apply_tuned(self, identity: EncoderIdentity, network) -> None:
        """Apply the tuned tensors the identity names (checked against its digest), if any."""
        digest = identity.settings.get("tuned")
        if digest is None:
            return
        blob = self.__dict__.get("tuned_weights_")
        if blob is None or sha256_hex(blob) != digest:
            raise ModelMismatchError(
                f"{type(self).__name__} was fine-tuned (weights {digest[:12]}) but "
                + ("holds no tuned weights" if blob is None else f"holds weights {sha256_hex(blob)[:12]}")
                + ": its vectors cannot be reproduced. Use the fitted FineTuningClassifier's encoder_ as it was "
                "pickled, or fit again."
            )
        apply_weights(network, weights_from_bytes(blob), type(self).__name__)

    def loaded_model(self):
        """The loaded model: this estimator's, or the registry's (after unpickling or for a clone)."""
        model = self.__dict__.get("model_")
        if model is None:
            identity = self.identity_
            device = self._torch_device() if self._backend() == "torch" else self.device_
            model = model_registry.get(identity.registry_key(self.device_), lambda: self._load_model(identity, device))
            self.model_ = model  # a cache of the registry's object, never pickled
        return model

    def run_on(self, device: str) -> None:
        """Run this fitted encoder on ``device`` from now on (a cluster worker's own GPU or CPU).

        The device is not part of the identity (it changes vectors by float noise only), so the
        fingerprint stays; the model is loaded again there through the registry.
        """
        if device != self.device_:
            self.device_ = device
            self.__dict__.pop("model_", None)

    # ------------------------------------------------------------------ the shared pipeline
    def _encode_column(self, items: list, valid: np.ndarray, encode, *, dedupe_key, content_key):
        """`sktransfer._pipeline.encode_column` with this encoder's identity, cache and ``n_threads``."""
        with torch_threads(self.n_threads):
            return encode_column(items, valid, encode, dim=self.embedding_dim_, identity=self.identity_,
                                 cache=as_cache(self.cache), dedupe_key=dedupe_key, content_key=content_key,
                                 owner=type(self).__name__)

    def _progress(self, iterable, total: int):
        return tqdm(iterable, total=total, desc=type(self).__name__, unit="batch", disable=not self.show_progress)

    # ------------------------------------------------------------------ scikit-learn API
    def get_feature_names_out(self, input_features=None):
        """Names of the output features: the input column's name and a zero-padded index.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Name of the one input column, as a ColumnTransformer passes it. ``None`` uses the
            column seen in ``fit`` (a named pandas Series or a one-column DataFrame), if any.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``["review_000", ..., "review_383"]`` for a 384-dimensional TextEncoder fitted on a
            column named ``review``; ``textencoder_000 ...`` (the lower-cased class name) when
            the column has no name, such as a list. An ImageEncoder that concatenates several
            layers names them ``<prefix>_<layer>_<i>``.
        """
        check_is_fitted(self, "embedding_dim_")
        names = _check_feature_names_in(self, input_features, generate_names=False)
        if names is not None and len(names) != 1:
            raise ValueError(
                f"{type(self).__name__} encodes one column, got input_features {list(names)}."
            )
        prefix = str(names[0]) if names is not None else type(self).__name__.lower()
        return np.asarray(self._feature_names(prefix), dtype=object)

    def _feature_names(self, prefix: str) -> list[str]:
        return indexed_names(prefix, self.embedding_dim_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True  # one column of items
        tags.input_tags.two_d_array = True  # a one-column DataFrame or array
        tags.input_tags.string = True  # texts, and image file paths
        tags.transformer_tags.preserves_dtype = []  # always float32, whatever goes in
        tags.requires_fit = True
        return tags

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        state.pop("model_", None)  # weights stay out of the pickle: found again by name
        if "identity_" in state:
            state["identity_"] = state["identity_"].portable()  # no path of this machine
        return state

    def __setstate__(self, state):
        if "_fitted_params" in state:  # a pickle of an earlier version kept the values themselves
            state["_fitted_digests"] = {name: (object_digest(value, name), _shown(value))
                                        for name, value in state.pop("_fitted_params").items()}
        super().__setstate__(state)
        if "device_" in state:
            backend = self._backend()
            if backend == "torch":
                self.device_ = str(fallback_device(torch.device(state["device_"]), type(self).__name__))
            else:
                self.device_ = _backends.fallback_device(backend, state["device_"], type(self).__name__)


