"""FewShotClassifier: a few labelled items plus the classes' names (their label texts)."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._columns import column_to_list, is_missing, read_once
from .base import DocLinkMixin
from .zeroshot import SimilarityClassifierMixin, ZeroShotClassifier

__all__ = ["FewShotClassifier"]

#: The label-text weights tried, from the class means of the labelled items alone (0) to zero-shot (1).
ALPHAS = np.linspace(0.0, 1.0, 11)

#: ``temperature="auto"``: the scale of the leave-one-out log loss that chooses ``alpha_`` and of
#: ``predict_proba``. Chosen with `SE_BAND` on the SST-2 dev split (872 sentences, 10 draws of 8 to 100
#: labels) among 1/30 and 1/100 and bands of 0, 0.5 and 1 standard error: docs/adapting.md.
TEMPERATURE = 1 / 30

#: ``alpha_`` is the largest weight (the closest to zero-shot) whose leave-one-out log loss is within this
#: many standard errors of the best (the one-standard-error rule): a few labels that barely disagree with
#: the label texts do not move it. On the dev split a band of 0.5 gained 0.7 points more at 100 labels
#: but fell 3 points below zero-shot on one draw of 8; a band of 1 stayed within 0.7 points of it.
SE_BAND = 1.0

#: Most labelled items scored by the leave-one-out selection (a random sample of them beyond).
MAX_SCORED = 1000


class FewShotClassifier(DocLinkMixin, SimilarityClassifierMixin, ClassifierMixin, BaseEstimator):
    """Classify with a few labelled items and the classes' names: each class a blend of its label text and its items.

    Each class is represented by ``alpha_ * t + (1 - alpha_) * m`` (both unit length, the sum made unit
    length): ``t`` the embedding of its label text, as [`ZeroShotClassifier`][sktransfer.ZeroShotClassifier]
    builds it, and ``m`` the mean direction of its labelled items. An item goes to the class whose
    vector it is most similar to. ``alpha_=1`` is the zero-shot classifier, ``alpha_=0`` the
    nearest class mean; the weight is chosen by leave-one-out log loss on the labelled items, with a
    preference for the label texts when the difference is within one standard error. See
    docs/adapting.md.

    Parameters
    ----------
    encoder : TextEncoder or ClipEncoder
        Embeds the items and the label texts in one space (a ClipEncoder for photos); cloned in ``fit``.
    labels : list of str or dict
        The classes and their descriptions, as ``ZeroShotClassifier`` takes them (e.g.
        ``{0: "a negative review", 1: "a positive review"}``). Every label of ``y`` must be one of them.
    template : str, None or "auto", default="auto"
        How a description becomes a prompt, as in ``ZeroShotClassifier``.
    temperature : float or "auto", default="auto"
        ``predict_proba`` is the softmax of the similarities divided by it, and so is the log loss
        that chooses ``alpha_`` (``"auto"``: `TEMPERATURE`, 1/30).
    random_state : int, RandomState instance or None, default=None
        Draws the items the selection scores when more than 1000 are labelled (otherwise unused).

    Attributes
    ----------
    zero_shot_ : ZeroShotClassifier
        The fitted zero-shot classifier (the label texts' embeddings, the encoder).
    classes_ : ndarray of shape (n_classes,)
        The classes, in the order of ``labels``.
    alpha_ : float
        The weight of the label texts; 1.0 with no labels.
    class_vectors_ : ndarray of shape (n_classes, embedding_dim)
        The unit vector of each class (a class with no labelled item keeps its label text's).
    selection_ : dict or None
        ``alpha``, the mean and the standard error of the leave-one-out log loss per candidate and
        ``n_scored``; None without labels.
    temperature_ : float
        The temperature in effect.
    n_labelled_ : int
        How many labelled items were given.

    Notes
    -----
    Only the frozen embeddings are used: a fit costs one encoding of the labelled items. Leaving out
    one item of a class of one leaves that class its label text.

    Examples
    --------
    >>> from sktransfer import FewShotClassifier, TextEncoder
    >>> clf = FewShotClassifier(TextEncoder(), labels={0: "a negative review", 1: "a positive review"})
    >>> clf.fit(["a gripping film", "dull and long", "a joy", "so tedious"], [1, 0, 1, 0])
    FewShotClassifier(...)
    >>> clf.predict(["what a wonderful film", "a boring mess"]).tolist()
    [1, 0]
    """

    _parameter_constraints: dict = {
        "encoder": [object],
        "labels": [list, tuple, dict],
        "template": [str, None],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "random_state": ["random_state"],
    }

    def __init__(self, encoder, labels, *, template="auto", temperature="auto", random_state=None):
        self.encoder = encoder
        self.labels = labels
        self.template = template
        self.temperature = temperature
        self.random_state = random_state

    def fit(self, X, y=None):
        """Embed the label texts and, given labels, the labelled items; choose the weight of each.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            The labelled items; with ``y=None``, items of the kind to classify (the zero-shot case).
        y : array-like of shape (n_samples,) or None, default=None
            Their labels, each one of ``labels``' classes. ``None``: the label texts alone decide.

        Returns
        -------
        self : object
        """
        self._validate_params()
        X = read_once(X)
        self.zero_shot_ = ZeroShotClassifier(self.encoder, self.labels, template=self.template).fit(X)
        self.classes_ = self.zero_shot_.classes_
        self.temperature_ = TEMPERATURE if self.temperature == "auto" else float(self.temperature)
        texts = self.zero_shot_.label_embeddings_.astype(np.float64)
        self.alpha_, self.selection_, self.n_labelled_ = 1.0, None, 0
        self.class_vectors_ = texts.astype(np.float32)
        if y is None:
            return self
        codes = self._codes(y, len(column_to_list(X, "FewShotClassifier")))
        self.n_labelled_ = len(codes)
        Z = self.zero_shot_.unit_embeddings(X).astype(np.float64)
        sums = np.zeros_like(texts)
        np.add.at(sums, codes, Z)
        counts = np.bincount(codes, minlength=len(self.classes_))
        self.selection_ = self._select(Z, codes, sums, counts, texts)
        self.alpha_ = self.selection_["alpha"][self.selection_["chosen"]]
        self.class_vectors_ = _blend(self.alpha_, texts, sums, counts).astype(np.float32)
        return self

    def _codes(self, y, n_items: int) -> np.ndarray:
        values = np.asarray(y, dtype=object)
        if values.ndim != 1 or len(values) != n_items:
            raise ValueError(f"FewShotClassifier needs one label per item: X has {n_items} items and y has shape "
                             f"{values.shape}. Pass X and y of the same length (y=None for zero-shot).")
        index = {cls: k for k, cls in enumerate(self.classes_.tolist())}
        codes = np.empty(n_items, dtype=int)
        for i, value in enumerate(values.tolist()):
            if is_missing(value) or value not in index:
                raise ValueError(
                    f"FewShotClassifier got the label y[{i}]={value!r}, which is not one of the classes its labels "
                    f"describe ({self.classes_.tolist()}): give every class of y a description in labels, or drop "
                    "the unlabelled items.")
            codes[i] = index[value]
        return codes

    def _select(self, Z, codes, sums, counts, texts) -> dict:
        """Leave-one-out log loss of every weight in `ALPHAS`: each scored item is left out of its class's mean."""
        scored = np.arange(len(codes))
        if len(scored) > MAX_SCORED:
            scored = np.sort(check_random_state(self.random_state).choice(scored, MAX_SCORED, replace=False))
        losses = np.empty((len(ALPHAS), len(scored)))
        for k, alpha in enumerate(ALPHAS):
            for j, i in enumerate(scored):
                own = np.eye(len(counts))[codes[i]]
                vectors = _blend(alpha, texts, sums - own[:, None] * Z[i], counts - own)
                logits = vectors @ Z[i] / self.temperature_
                logits -= logits.max()
                losses[k, j] = np.log(np.exp(logits).sum()) - logits[codes[i]]
        mean = losses.mean(1)
        error = losses.std(1, ddof=1) / np.sqrt(len(scored)) if len(scored) > 1 else np.zeros(len(ALPHAS))
        best = int(mean.argmin())
        chosen = int(np.flatnonzero(mean <= mean[best] + SE_BAND * error[best]).max())
        return {"alpha": ALPHAS.tolist(), "mean_log_loss": mean.tolist(), "std_error": error.tolist(),
                "n_scored": len(scored), "chosen": chosen}

    def similarities(self, X):
        """Cosine similarity of each item to each class's vector.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "class_vectors_")
        return self.zero_shot_.unit_embeddings(X) @ self.class_vectors_.T


def _blend(alpha: float, texts: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Unit ``alpha * text + (1 - alpha) * mean direction`` per class; a class without items keeps its text."""
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-12)
    vectors = np.where(counts[:, None] > 0, alpha * texts + (1 - alpha) * means, texts)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
