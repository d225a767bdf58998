"""FineTuningClassifier: adapt a pretrained encoder to a small labelled set, never worse than frozen."""

from __future__ import annotations

import functools
import math
import numbers
import os
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._device import PRECISIONS
from .heads import tuned_head
from ._weights import weights_to_bytes
from ._columns import column_to_list, is_missing, read_once
from .base import BaseEncoder, DocLinkMixin
from .cache import EmbeddingCache
from .clip import ClipEncoder
from .image import ImageEncoder
from .text import TextEncoder

__all__ = ["FineTuningClassifier"]

#: Epochs without a better validation score before early stopping ends training.
PATIENCE = 2

#: Below this many validation items the decision moves in steps of over 2.5 points: a warning says so.
SMALL_VALIDATION = 40

#: ``show_progress="auto"`` shows the epoch bar when the fit plans at least this many optimiser steps
#: (on 2 CPU cores about 10 s for texts).
AUTO_PROGRESS_STEPS = 50

#: Adapters start from zero and hold few parameters: they take a larger step than the whole model.
LORA_LEARNING_RATE = 2e-4

_DEFAULTS = {  # texts: SetFit's recipe, its pairs, epochs and rate chosen on the SST-2 dev split
    # (benchmarks/bench_text_recipe.py, docs/adapting.md); images: as measured on hymenoptera
    "text": {"unfreeze": "all", "max_epochs": 3, "learning_rate": 5e-5, "batch_size": 16},
    "image": {"unfreeze": 4, "max_epochs": 8, "learning_rate": 1e-4, "batch_size": 32},
}


def _head_has(attribute):
    """For `available_if`: whether the fitted head, or the one ``fit`` would use, has ``attribute``."""
    return lambda self: hasattr(self.head_ if hasattr(self, "head_") else self.head or LogisticRegression(), attribute)


def stratified_train_counts(counts: np.ndarray, n_train: int, seed: int) -> np.ndarray:
    """Items per class in the training part of ``train_test_split(stratify=, random_state=seed)``, without
    splitting: the split's own apportionment (a test checks the two agree)."""
    rng = np.random.RandomState(seed)
    share = counts / counts.sum() * n_train
    taken = np.floor(share)
    remainder, left = share - taken, int(n_train - taken.sum())
    for value in np.unique(remainder)[::-1]:
        if left == 0:
            break
        tied = np.flatnonzero(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), left), replace=False)
        taken[chosen] += 1
        left -= len(chosen)
    return taken.astype(int)


class FineTuningClassifier(DocLinkMixin, MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fine-tune a pretrained encoder on labelled data, then classify with a scikit-learn head.

    The top of the network is adapted to the labels and a classifier is fitted on the adapted
    embeddings. Stratified validation splits of the training data score the frozen encoder and,
    after every epoch, the tuned one, each with the same tuned head; tuning is kept only when it
    wins beyond the splits' spread, otherwise the frozen encoder is (``tuned_`` is False, with a
    warning). See docs/adapting.md.

    Parameters
    ----------
    encoder : TextEncoder or ImageEncoder
        The pretrained encoder to adapt; cloned in ``fit`` (the parameter is never modified).
    unfreeze : int, "all", "lora" or "auto", default="auto"
        What is trained. For texts, the top ``unfreeze`` transformer layers, ``"all"`` the whole
        model (``"auto"``: all, as SetFit does), or ``"lora"``: rank-8 LoRA adapters on every
        linear layer, the only learned state (needs ``sktransfer[lora]``). For images, the top
        ``unfreeze`` blocks of the network's ``features`` sequence, or ``"all"`` (``"auto"``: 4).
    objective : {"auto", "contrastive", "classification"}, default="auto"
        Texts: ``"contrastive"`` (``"auto"``) is the SetFit recipe, sentence-transformers'
        ``CosineSimilarityLoss`` on same-class and different-class pairs; ``"classification"``
        trains a temporary linear softmax layer by cross-entropy. Images: always classification.
    max_epochs : int or None, default=None
        Most epochs to train (``None``: 3 for texts, 8 for images).
    learning_rate : float or None, default=None
        AdamW (texts) or Adam (images) learning rate (``None``: 5e-5 for texts, 2e-4 for LoRA
        adapters, 1e-4 for images).
    batch_size : int or None, default=None
        Training batch size (``None``: 16 pairs or texts, 32 images).
    validation_fraction : float in [0, 1), default=0.2
        Share of the training data held out, stratified, in each of the ``n_splits`` validation
        splits that judge the frozen and the tuned encoder. ``0`` trains on everything for
        ``max_epochs`` with no safety net: the tuned encoder is kept whatever it does. ``fit`` checks
        from ``y``, before anything is encoded, that every split leaves every class two training items
        (one for images or ``objective="classification"``), naming the fractions that work.
    n_splits : int, default=3
        Stratified validation splits (each drawn with its own seed). Every split tunes its own copy
        of the model, epoch by epoch, and scores frozen and tuned on its held-out part; tuned is kept
        only when its mean accuracy gain over the splits exceeds their standard error, and is then
        trained again on all the training data for the chosen number of epochs. The cost is
        ``n_splits + 1`` tuning runs (``n_splits`` when frozen is kept); ``n_splits=1`` is one split
        and one run, its decision a coin flip on small data.
    keep_tuned : {"if_better", "unless_worse"}, default="if_better"
        How the splits decide. ``"if_better"``: tuned is kept only when its mean accuracy gain exceeds
        the splits' standard error (one split: when it beats frozen in accuracy, then log loss).
        ``"unless_worse"``: tuned is kept unless its mean gain is below minus that standard error (one
        split: unless it loses), the choice when tuning is known to pay for this kind of data (the
        SetFit recipe on SST-2 did on every draw measured) and a few dozen validation items cannot
        show it; it still refuses a tuning that clearly harms. See docs/adapting.md.
    early_stopping : bool, default=True
        Stop after 2 epochs without a better mean validation score over the splits, and keep the
        best epoch. With ``False`` every epoch runs and the last one is judged.
    head : classifier or None, default=None
        The scikit-learn classifier fitted on the embeddings, cloned, used as given. ``None``: the
        tuned head of [`sktransfer.heads.tuned_head`][sktransfer.heads.tuned_head] (``StandardScaler`` +
        ``LogisticRegressionCV``, ``C`` by log loss on the training part only), for the frozen and the
        tuned candidates alike.
    augment : bool or "auto", default="auto"
        Images: train on random resized crops and flips, decoding every image every epoch.
        ``"auto"`` augments only with ``unfreeze="all"``; otherwise the frozen blocks' output is
        computed once and cached. Texts: must be "auto".
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Arithmetic of training (autocast) and of the frozen blocks' forward pass.
    random_state : int, RandomState instance or None, default=None
        Fixes the validation split, the pairs, the augmentation, dropout and the new layer's
        initialisation: two fits with the same integer give the same predictions on a CPU.
    show_progress : bool or "auto", default="auto"
        A progress bar over the epochs of every split and of the final run, with its ETA (``"auto"``:
        shown when the fit plans at least 50 optimiser steps, about 10 s of CPU; ``True`` adds a bar
        over each epoch's batches; ``False`` is silent).
    cache : None, str, os.PathLike or EmbeddingCache, default=None
        An [`EmbeddingCache`][sktransfer.EmbeddingCache] for every encoder involved (frozen, the frozen
        blocks' activations, tuned: each under its own fingerprint). ``None`` keeps the encoder's own.

    Attributes
    ----------
    encoder_ : TextEncoder or ImageEncoder
        The fitted encoder: tuned (its ``identity_`` carries the ``tuned`` digest and its
        ``tuned_weights_`` the tuned tensors as safetensors bytes) or frozen.
    head_ : classifier
        The head, refitted on all the training data's embeddings by ``encoder_``.
    tuned_ : bool
        Whether tuning beat the frozen encoder beyond the splits' spread (False: the frozen one is kept).
    best_epoch_ : int
        The epochs the kept encoder was trained for (0: the frozen encoder).
    recipe_ : dict
        What the ``"auto"``/None settings resolved to for this encoder: ``objective``, ``unfreeze``,
        ``max_epochs``, ``learning_rate`` and ``batch_size``.
    decision_ : dict or None
        ``n_splits``, the judged ``epoch``, per split ``frozen_accuracy``, ``tuned_accuracy`` and
        ``gains``, their ``mean_gain`` and ``std_error``, per split ``log_loss_gains`` (frozen's
        validation log loss minus tuned's), and ``kept`` ("tuned" or "frozen");
        None with ``validation_fraction=0``.
    history_ : list of dict
        One entry per split and epoch (epoch 0 is the frozen baseline), then one per epoch of the
        final run (``split`` None, no validation): ``epoch``, ``split``, ``train_loss``,
        ``val_accuracy``, ``val_log_loss`` and ``seconds``.
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_validation_ : int
        Size of each validation split.

    Notes
    -----
    The splits choose the number of epochs and whether to tune at all; the kept encoder is then
    trained on all the training data for that many epochs (the same learning-rate schedule), and
    the head is refitted on all of it. A pickle holds the head and the tuned tensors, never a
    module, and predicts identically without a GPU.

    Examples
    --------
    >>> from sktransfer import FineTuningClassifier, TextEncoder
    >>> texts = ["a gripping, beautiful film", "dull and far too long", "a joy from start to finish",
    ...          "i want those two hours back", "wonderful acting", "a boring plot"] * 2
    >>> clf = FineTuningClassifier(TextEncoder(), max_epochs=1, validation_fraction=0, random_state=0,
    ...                            show_progress=False)
    >>> clf.fit(texts, [1, 0, 1, 0, 1, 0] * 2).predict(["what a lovely film", "so dull"]).tolist()
    [1, 0]
    """

    _required_parameters = ["encoder"]

    _parameter_constraints: dict = {
        "encoder": [HasMethods(["fit", "transform"])],
        "unfreeze": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"all", "auto", "lora"})],
        "objective": [StrOptions({"auto", "contrastive", "classification"})],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "head": [HasMethods(["fit", "predict"]), None],
        "augment": ["boolean", StrOptions({"auto"})],
        "precision": [StrOptions(set(PRECISIONS) - {"int8"})],  # training arithmetic: int8 is an export's
        "random_state": ["random_state"],
        "n_splits": [Interval(numbers.Integral, 1, None, closed="left")],
        "keep_tuned": [StrOptions({"if_better", "unless_worse"})],
        "show_progress": ["boolean", StrOptions({"auto"})],
        "cache": [None, str, os.PathLike, EmbeddingCache],
    }

    def __init__(self, encoder, *, unfreeze="auto", objective="auto", max_epochs=None, learning_rate=None,
                 batch_size=None, validation_fraction=0.2, n_splits=3, keep_tuned="if_better", early_stopping=True,
                 head=None, augment="auto", precision="fp32", random_state=None, show_progress="auto", cache=None):
        self.encoder = encoder
        self.unfreeze = unfreeze
        self.objective = objective
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.n_splits = n_splits
        self.keep_tuned = keep_tuned
        self.early_stopping = early_stopping
        self.head = head
        self.augment = augment
        self.precision = precision
        self.random_state = random_state
        self.show_progress = show_progress
        self.cache = cache

    def fit(self, X, y):
        """Tune the encoder on ``(X, y)`` (safely: see the class notes), then fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of texts or images, as the encoder accepts it.
        y : array-like of shape (n_samples,)
            Class labels, none missing; at least 2 classes, each with at least 2 samples.

        Returns
        -------
        self : object
            The fitted classifier.
        """
        self._validate_params()
        modality = self._modality()
        X = read_once(X)  # read more than once below
        y = self._check_labels(y)  # labels and split checked before any model loads
        n_items = len(column_to_list(X, "FineTuningClassifier"))
        if n_items != len(y):
            raise ValueError(
                f"FineTuningClassifier needs one label per item: X has {n_items} items and y has {len(y)} labels. "
                "Pass X and y of the same length (the same rows).")
        self.classes_, codes = np.unique(y, return_inverse=True)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        splits = self._splits(codes, seed, self._objective(modality))
        frozen = clone(self.encoder)
        if self.cache is not None:
            frozen.set_params(cache=self.cache)
        frozen.fit(X)
        items, valid = frozen.read_column(X, reset=False)  # the encoder's on_error applied
        if not valid.all():
            first = int(np.flatnonzero(~valid)[0])
            raise ValueError(
                f"FineTuningClassifier cannot train on the item at index {first} ({items[first]!r}): the encoder's "
                "on_error policy leaves it without an embedding. Fix or drop it, or use on_error='empty' for texts.")
        everything = np.arange(len(codes))
        tuners = []
        for train, _ in splits or [(everything, None)]:
            tuner = self._make_tuner(modality, frozen, seed)
            tuner.start(items, train, codes[train])
            if tuners:
                tuner.adopt_inputs(tuners[0])
            tuners.append(tuner)
        frozen_features = tuners[0].features()  # before any step: the frozen encoder's embeddings
        bad = np.flatnonzero(~np.isfinite(frozen_features).all(axis=1))
        if bad.size:
            raise ValueError(
                f"FineTuningClassifier got a NaN embedding for the training item at index {bad[0]} "
                f"({items[bad[0]]!r}): every training item must be encodable. Fix or drop it "
                "(the encoder's on_error='nan' marks such items).")

        self.recipe_ = {"objective": self._objective(modality),
                        **{name: self._setting(name, modality)
                           for name in ("unfreeze", "max_epochs", "learning_rate", "batch_size")}}
        epochs = self.recipe_["max_epochs"]
        steps = tuners[0].steps_per_epoch * epochs * (len(splits) + 1)
        shown = self.show_progress is True or (self.show_progress == "auto" and steps >= AUTO_PROGRESS_STEPS)
        batches = functools.partial(tqdm, desc="batches", unit="batch", leave=False,
                                    disable=self.show_progress is not True)
        bar = tqdm(total=epochs * max(1, len(splits)), desc="FineTuningClassifier", unit="epoch",
                   disable=not shown)
        self.history_ = []
        scores = [[self._validation_score(frozen_features, codes, train, val, 0, split)]
                  for split, (train, val) in enumerate(splits)]  # scores[split][epoch]
        best, best_epoch, stale = (self._mean_score(scores, 0) if splits else None), 0, 0
        ran = 0
        for epoch in range(1, epochs + 1):
            if not splits:
                break
            for split, ((train, val), tuner) in enumerate(zip(splits, tuners)):
                bar.set_postfix_str(f"split {split + 1}/{len(splits)}")
                start = time.perf_counter()
                loss = tuner.train_epoch(epoch, batches)
                scores[split].append(self._validation_score(tuner.features(), codes, train, val, epoch, split,
                                                            loss, start))
                bar.update()
            ran = epoch
            if self._mean_score(scores, epoch) > best:
                best, best_epoch, stale = self._mean_score(scores, epoch), epoch, 0
            elif self.early_stopping:
                stale += 1
                if stale >= PATIENCE:
                    break
        if splits and not self.early_stopping:
            best_epoch = ran  # the last epoch is the one judged
        elif splits and best_epoch == 0:
            best_epoch = max(range(1, ran + 1), key=lambda e: self._mean_score(scores, e))  # judged, and lost
        self.decision_ = self._decide(scores, best_epoch) if splits else None
        self.n_validation_ = int(splits[0][1].size) if splits else 0
        self.tuned_ = not splits or self.decision_["kept"] == "tuned"
        self.best_epoch_ = (best_epoch if splits else epochs) if self.tuned_ else 0
        if self.tuned_:
            # The judged recipe (best_epoch_ epochs of the max_epochs schedule), on all the training items.
            final = tuners[0] if not splits else self._make_tuner(modality, frozen, seed)
            if splits:
                final.start(items, everything, codes)
                final.adopt_inputs(tuners[0])
            del tuners, tuner  # the splits' models are not needed for the final run
            bar.reset(total=bar.total + self.best_epoch_)
            bar.update(bar.total - self.best_epoch_)
            bar.set_postfix_str("all items")
            for epoch in range(1, self.best_epoch_ + 1):
                start = time.perf_counter()
                loss = final.train_epoch(epoch, batches)
                self._record(epoch, None, loss, None, time.perf_counter() - start)
                bar.update()
            state = final.snapshot()
            features = final.features()
            frozen.adopt_tuned_weights(weights_to_bytes(state))
        else:
            features = frozen_features
            d = self.decision_
            warnings.warn(
                f"FineTuningClassifier kept the frozen encoder: tuning "
                f"{'did not beat it' if self.keep_tuned == 'if_better' else 'was worse than it'} beyond the spread over "
                f"{d['n_splits']} validation splits of {self.n_validation_} items (mean accuracy gain "
                f"{d['mean_gain']:+.3f}, standard error {d['std_error']:.3f}, at epoch {d['epoch']}). See decision_ "
                "and history_.", UserWarning, stacklevel=2)
        bar.close()
        self.encoder_ = frozen
        self.head_ = self._new_head(y).fit(features, y)
        return self

    @staticmethod
    def _mean_score(scores: list, epoch: int) -> tuple:
        """(mean accuracy, mean -log loss) over the splits at ``epoch``: compared in that order."""
        return tuple(float(np.mean([split[epoch][k] for split in scores])) for k in (0, 1))

    def _decide(self, scores: list, epoch: int) -> dict:
        """``keep_tuned="if_better"``: tuned is kept when its mean accuracy gain over the splits exceeds their
        standard error (one split: when it beats frozen in accuracy, then log loss); ``"unless_worse"``: unless
        the gain is below minus the standard error (one split: unless frozen beats it)."""
        frozen = [split[0][0] for split in scores]
        tuned = [split[epoch][0] for split in scores]
        gains = np.subtract(tuned, frozen)
        # Scores hold -log loss: tuned's minus frozen's is frozen's log loss minus tuned's (> 0: tuned is better).
        log_loss_gains = [float(split[epoch][1] - split[0][1]) for split in scores]
        error = float(gains.std(ddof=1) / math.sqrt(len(gains))) if len(gains) > 1 else 0.0
        if self.keep_tuned == "if_better":
            wins = gains.mean() > error if len(gains) > 1 else scores[0][epoch] > scores[0][0]
        else:
            wins = gains.mean() >= -error if len(gains) > 1 else scores[0][epoch] >= scores[0][0]
        return {"n_splits": len(scores), "rule": self.keep_tuned, "epoch": epoch, "frozen_accuracy": frozen, "tuned_accuracy": tuned,
                "gains": gains.tolist(), "mean_gain": float(gains.mean()), "std_error": error,
                "log_loss_gains": log_loss_gains,
                "kept": "tuned" if wins else "frozen"}

    def _modality(self) -> str:
        if getattr(self.encoder, "backend", "torch") != "torch":
            raise ValueError(
                f"FineTuningClassifier trains the torch network, and this encoder runs with "
                f"backend={self.encoder.backend!r}: tune with backend='torch' (the tuned encoder_ then encodes with "
                "torch), or keep the frozen encoder with its backend and fit a classifier on its features.")
        if isinstance(self.encoder, ImageEncoder) and self.unfreeze == "lora":
            raise ValueError('unfreeze="lora" adapts transformer text models; for images choose a number of top '
                             'blocks or "all".')
        if isinstance(self.encoder, TextEncoder):
            if self.augment not in ("auto", False):
                raise ValueError("augment applies to images; leave it at 'auto' for a TextEncoder.")
            return "text"
        if isinstance(self.encoder, ImageEncoder):
            if self.objective == "contrastive":
                raise ValueError("objective='contrastive' applies to texts; images are tuned by classification.")
            return "image"
        raise TypeError(
            f"FineTuningClassifier adapts a TextEncoder or an ImageEncoder, got {type(self.encoder).__name__}"
            + (" (a ClipEncoder is used frozen: put a classifier on its features, or use ZeroShotClassifier "
               "without labels)." if isinstance(self.encoder, ClipEncoder) else "."))

    def _setting(self, name: str, modality: str):
        value = getattr(self, name)
        if value is None or value == "auto":
            if name == "learning_rate" and self.unfreeze == "lora":
                return LORA_LEARNING_RATE
            return _DEFAULTS[modality][name]
        return value

    def _objective(self, modality: str) -> str:
        if modality == "image":
            return "classification"
        return "contrastive" if self.objective == "auto" else self.objective

    @staticmethod
    def _check_labels(y) -> np.ndarray:
        # The labels as given (np.asarray would turn ["a", 1] into strings, and 1 into '1').
        labels = np.asarray(y, dtype=object)
        if labels.ndim != 1:
            raise ValueError(f"y must be one label per item: got shape {labels.shape}; pass a 1-D array of labels.")
        labels = labels.tolist()
        missing = [i for i, label in enumerate(labels) if is_missing(label)]
        if missing:
            raise ValueError(
                f"FineTuningClassifier needs a label for every item, but y[{missing[0]}] is a missing value "
                f"({labels[missing[0]]!r}); {len(missing)} of {len(y)} labels are missing. Drop the unlabelled items "
                "(from X and y alike) before fitting.")
        texts = [isinstance(label, str) for label in labels]
        if any(texts) and not all(texts):
            first_text, first_other = texts.index(True), texts.index(False)
            raise ValueError(
                f"FineTuningClassifier got a mix of label types (string and number): y[{first_text}] is "
                f"{labels[first_text]!r} and y[{first_other}] is {labels[first_other]!r}. predict could not return "
                "the labels as given: use one type for every label (e.g. all strings).")
        y = np.asarray(y)
        check_classification_targets(y)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"FineTuningClassifier needs at least 2 classes; y has only {classes.tolist()}.")
        if counts.min() < 2:
            raise ValueError(
                f"FineTuningClassifier needs at least 2 samples of every class (to build pairs and a stratified "
                f"validation split); class {classes.tolist()[counts.argmin()]!r} has {counts.min()}. Label more, or "
                "drop it.")
        return y

    def _splits(self, codes: np.ndarray, seed: int, objective: str) -> list:
        """``n_splits`` stratified (train, validation) splits, the k-th drawn with seed ``seed + k``; checked."""
        rows = np.arange(len(codes))
        if self.validation_fraction == 0:
            return []
        seeds = [(seed + k) % np.iinfo(np.int32).max for k in range(self.n_splits)]
        n, counts = len(codes), np.bincount(codes)
        n_classes = len(counts)
        n_val = math.ceil(self.validation_fraction * n)
        needed = 2 if objective == "contrastive" else 1  # a same-class partner for every text; the head sees each class
        fallback = "set validation_fraction=0 (no validation: no frozen fallback)."

        def advice(label_more: str, none_works: str) -> str:
            works = [m for m in range(n_classes, n - 2 * n_classes + 1)  # the sizes whose splits (these seeds) work
                     if min(stratified_train_counts(counts, n - m, s).min() for s in seeds) >= needed]
            if works:
                return f"Use validation_fraction {self._fractions(works, n)}, {label_more}"
            return f"No validation_fraction works: {none_works}. L{label_more[1:]}"

        if n_val < n_classes or n - n_val < 2 * n_classes:
            if n < 3 * n_classes:
                fix = f"{n} items cannot hold both ({3 * n_classes} are needed for {n_classes} classes): label more"
            else:
                fix = advice("label more", f"no stratified split of these {n} items gives at least {n_classes} "
                             f"validation items and leaves every class {needed} training items")
            raise ValueError(
                f"FineTuningClassifier: validation_fraction={self.validation_fraction} of {n} items gives {n_val} "
                f"validation items and {n - n_val} training items for {n_classes} classes "
                f"({self._class_counts(counts)}): too few for a stratified split, which needs as many validation "
                f"items as classes ({n_classes}) and 2 training items per class ({2 * n_classes}). {fix}, or {fallback}"
            )
        splits = []
        for split_seed in seeds:
            train, val = train_test_split(rows, test_size=n_val, stratify=codes, random_state=split_seed)
            self._check_split(codes, train, counts, needed, advice)
            splits.append((np.sort(train), np.sort(val)))
        if n_val * len(seeds) < SMALL_VALIDATION:
            warnings.warn(
                f"FineTuningClassifier's {len(seeds)} validation split(s) hold {n_val} items each: each scores in "
                f"steps of {100 / n_val:.1f} accuracy points, so the choice between frozen and tuned is coarse. More "
                "labels (or a larger n_splits) make it finer.", UserWarning, stacklevel=3)
        return splits

    def _check_split(self, codes, train, counts, needed, advice) -> None:
        """Stratifying rounds each class's share: a small class can lose its training items to validation."""
        n, n_classes = len(codes), len(counts)
        fallback = "set validation_fraction=0 (no validation: no frozen fallback)."
        kept = np.bincount(codes[train], minlength=n_classes)
        short = np.flatnonzero(kept < needed)
        if short.size:
            k = int(short[0])
            label = self._label(k)
            why = "contrastive tuning pairs every text with another of its class" if needed == 2 else \
                "the head must see every class in training"
            fix = advice(f"label more items of class {label!r}", f"every split with {n_classes} to "
                         f"{n - 2 * n_classes} validation items leaves some class fewer than {needed} training items")
            raise ValueError(
                f"FineTuningClassifier: the stratified validation split (validation_fraction="
                f"{self.validation_fraction}) leaves {kept[k]} of the {counts[k]} items of class {label!r} for "
                f"training, and {why} ({needed} needed). {fix}"
                + (", use objective='classification'" if needed == 2 else "") + f", or {fallback}")

    def _label(self, k: int):
        return np.asarray(self.classes_).tolist()[k]  # a Python value ('a', 1) for messages

    @staticmethod
    def _fractions(sizes: list, n: int) -> str:
        """Validation sizes as validation_fraction values (``ceil(f * n)`` is the size), at most 3 ranges."""
        def fraction(m: int) -> str:
            for digits in range(3, 17):  # short, but exact enough that ceil(f * n) == m
                text = f"{(m - 0.5) / n:.{digits}g}"
                if math.ceil(float(text) * n) == m:
                    return text
            return repr((m - 0.5) / n)

        runs, start = [], sizes[0]
        for previous, m in zip(sizes, sizes[1:] + [None]):
            if m != previous + 1:
                runs.append(fraction(start) if start == previous else f"from {fraction(start)} to {fraction(previous)}")
                start = m
        return " or ".join(runs[:3]) + (f" (or {len(runs) - 3} more ranges)" if len(runs) > 3 else "")

    def _class_counts(self, counts: np.ndarray) -> str:
        """``class 'a': 12, class 'b': 2``: the smallest classes first, at most 8."""
        order = np.argsort(counts, kind="stable")[:8]
        shown = ", ".join(f"class {self._label(k)!r}: {counts[k]}" for k in order)
        return shown + (f", and {len(counts) - 8} more" if len(counts) > 8 else "")

    def _make_tuner(self, modality: str, encoder: BaseEncoder, seed: int):
        unfreeze = self._setting("unfreeze", modality)
        common = dict(unfreeze=unfreeze, learning_rate=float(self._setting("learning_rate", modality)),
                      batch_size=int(self._setting("batch_size", modality)),
                      max_epochs=int(self._setting("max_epochs", modality)), precision=self.precision, seed=seed)
        if modality == "text":
            from ._tune_text import TextTuner

            return TextTuner(encoder, objective=self._objective(modality), **common)
        from ._tune_images import ImageTuner

        return ImageTuner(encoder, augment=unfreeze == "all" if self.augment == "auto" else bool(self.augment), **common)

    def _new_head(self, labels):
        """The user's head as given, or the tuned head (C chosen by CV on ``labels``' items only)."""
        return clone(self.head) if self.head is not None else tuned_head(labels)

    def _validation_score(self, features, codes, train, val, epoch, split, loss=math.nan, start=None) -> tuple:
        """(accuracy, -log loss) of a head fitted on the split's training part, on its validation part; recorded."""
        head = self._new_head(codes[train]).fit(features[train], codes[train])
        X_val, y_val = features[val], codes[val]
        accuracy = float(accuracy_score(y_val, head.predict(X_val)))
        loss_val = log_loss(y_val, head.predict_proba(X_val), labels=head.classes_) \
            if hasattr(head, "predict_proba") else math.nan
        score = accuracy, -math.inf if math.isnan(loss_val) else -float(loss_val)
        self._record(epoch, split, loss, score, 0.0 if start is None else time.perf_counter() - start)
        return score

    def _record(self, epoch, split, loss, score, seconds) -> None:
        self.history_.append({"epoch": epoch, "split": split, "train_loss": float(loss),
                              "val_accuracy": math.nan if score is None else score[0],
                              "val_log_loss": math.nan if score is None else -score[1], "seconds": round(seconds, 3)})

    def transform(self, X):
        """The adapted embeddings (tuned, or frozen when tuning did not help): for any other head.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of items.

        Returns
        -------
        X_out : ndarray of shape (n_samples, embedding_dim), dtype float32
        """
        check_is_fitted(self, "encoder_")
        return self.encoder_.transform(X)

    def predict(self, X):
        """Predicted class of each item.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of items.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.head_.predict(self.transform(X))

    @available_if(_head_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the head.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of items.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self.head_.predict_proba(self.transform(X))

    @available_if(_head_has("decision_function"))
    def decision_function(self, X):
        """The head's decision function.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            One column of items.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        return self.head_.decision_function(self.transform(X))

    def get_feature_names_out(self, input_features=None):
        """Names of `transform`'s columns (the encoder's).

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Name of the one input column.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "encoder_")
        return self.encoder_.get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = True
        tags.input_tags.string = True
        tags.classifier_tags.multi_class = True
        return tags
