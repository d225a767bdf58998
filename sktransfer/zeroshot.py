"""ZeroShotClassifier: classify by similarity to label texts, with no training data."""

from __future__ import annotations

import numbers
import string

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import softmax
from sklearn.utils.validation import check_is_fitted

from .base import DocLinkMixin
from .clip import ClipEncoder

__all__ = ["SimilarityClassifierMixin", "ZeroShotClassifier"]

#: Similarity scale for encoders without a learned one: CLIP's (its logit scale is 100).
DEFAULT_TEMPERATURE = 0.01

#: ``template="auto"`` on images: CLIP's own prompt (Radford et al. 2021).
PHOTO_TEMPLATE = "a photo of a {}."

#: ``template="auto"`` on texts. Chosen on the SST-2 dev split (872 sentences, all-MiniLM-L6-v2) among
#: four text templates and none: with labels "negative"/"positive" 0.687 (none: 0.637, CLIP's photo
#: template: 0.656), with "a negative review"/"a positive review" 0.725 (none: 0.696).
TEXT_TEMPLATE = "This text is {}."


def _template_problem(template: str) -> str | None:
    """Why ``template`` does not hold exactly one plain ``{}``, or None."""
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:  # "Single '{' encountered in format string"
        return f"has an unmatched brace ({exc})"
    shown = ["{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
             for name, conversion, spec in fields]
    if not fields:
        return "has no '{}' for the label"
    if len(fields) > 1:
        return f"has {len(fields)} placeholders ({', '.join(map(repr, shown))}) for one label"
    if shown != ["{}"]:
        return f"has the placeholder {shown[0]!r} instead of '{{}}'"
    return None


class SimilarityClassifierMixin:
    """``predict``, ``predict_proba`` and ``decision_function`` of a classifier that scores items by
    ``similarities(X)`` (one column per class of ``classes_``) at the scale ``temperature_``."""

    def decision_function(self, X):
        """Scores in scikit-learn's convention: for two classes, the second's similarity minus the first's.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        scores : ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        scores = self.similarities(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X):
        """Softmax of the similarities divided by ``temperature_``.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return softmax(self.similarities(X) / self.temperature_, copy=False)

    def predict(self, X):
        """The most similar class of each item.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        scores = self.similarities(X)  # checks the fit before classes_ is read
        return self.classes_[scores.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.one_d_array = True
        return tags


class ZeroShotClassifier(DocLinkMixin, SimilarityClassifierMixin, ClassifierMixin, BaseEstimator):
    """Classify items by the label text they are most similar to; no labelled data needed.

    Images with a [`ClipEncoder`][sktransfer.ClipEncoder], texts with a
    [`TextEncoder`][sktransfer.TextEncoder]; see docs/clip.md.

    Parameters
    ----------
    encoder : TextEncoder or ClipEncoder
        Embeds the items and the label texts in one space; it is cloned in ``fit``.
    labels : list of str or dict
        The classes: a list of names (also their descriptions), or a dict mapping each class (as in
        ``y``) to a description or a list of them, whose embeddings are averaged. Each class once.
    template : str, None or "auto", default="auto"
        Filled with each description: exactly one ``{}``, literal braces doubled (``"{{{}}}"`` gives
        ``"{ant}"``); ``fit`` refuses any other. ``None``: descriptions as they are. ``"auto"``:
        CLIP's ``"a photo of a {}."`` when the items are images (a ClipEncoder on images), else
        ``TEXT_TEMPLATE``, a template for texts (docs/clip.md has what each scored on SST-2).
    temperature : float or "auto", default="auto"
        ``predict_proba`` is the softmax of the similarities divided by it; ``"auto"``: a
        ClipEncoder's learned scale (CLIP: 1/100), else 0.01.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The classes, in the order of ``labels``.
    template_ : str or None
        The template in effect.
    prompts_ : list of list of str
        The texts each class was described by.
    label_embeddings_ : ndarray of shape (n_classes, embedding_dim)
        Unit-length embedding of each class's texts.
    encoder_ : estimator
        The encoder fitted on the items' column.
    temperature_ : float
        The temperature in effect.

    Notes
    -----
    ``fit`` learns nothing from ``X`` or ``y``: it fits the encoder and embeds the label texts.

    Examples
    --------
    >>> from sktransfer import TextEncoder, ZeroShotClassifier
    >>> clf = ZeroShotClassifier(TextEncoder(), labels={0: "negative", 1: "positive"},
    ...                          template="a {} review")
    >>> clf.fit(["it was great"]).predict(["a wonderful, moving film", "a dull waste of time"]).tolist()
    [1, 0]
    """

    _parameter_constraints: dict = {
        "encoder": [object],
        "labels": [list, tuple, dict],
        "template": [str, None],  # "auto" is a str: resolved in fit
        "temperature": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
    }

    def __init__(self, encoder, labels, *, template="auto", temperature="auto"):
        self.encoder = encoder
        self.labels = labels
        self.template = template
        self.temperature = temperature

    def _class_prompts(self, template):
        if isinstance(self.labels, dict):
            classes = list(self.labels)
            descriptions = [[d] if isinstance(d, str) else list(d) for d in self.labels.values()]
        else:
            classes, descriptions = list(self.labels), [[d] for d in self.labels]
        if len(classes) < 2:
            raise ValueError(f"ZeroShotClassifier needs at least 2 labels, got {self.labels!r}.")
        for cls, texts in zip(classes, descriptions):
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"the description of label {cls!r} must be a non-empty string or list of strings, "
                                 f"got {texts!r}.")
        repeated = sorted({repr(cls) for cls in classes if classes.count(cls) > 1})
        if repeated:
            raise ValueError(f"ZeroShotClassifier's labels name the class {repeated[0]} more than once, so predictions "
                             "could not tell the copies apart: list each class once, or give one class several "
                             "descriptions with a dict ({class: [description, ...]}).")
        problem = _template_problem(template) if template is not None else None
        if problem is not None:
            raise ValueError(
                f"ZeroShotClassifier's template={template!r} {problem}. A template holds exactly one '{{}}', "
                "filled with each label's description (e.g. 'a photo of a {}.'); write a literal brace twice ('{{' "
                "or '}}'), or pass template=None to use the descriptions as they are.")
        prompts = [[text if template is None else template.format(text) for text in texts]
                   for texts in descriptions]
        owner = {}  # the same texts embed to the same point: the first class would win every tie
        for cls, texts, filled in zip(classes, descriptions, prompts):
            other = owner.setdefault(frozenset(filled), cls)
            if other is not cls:
                shown = texts[0] if len(set(texts)) == 1 else sorted(set(texts))
                raise ValueError(
                    f"ZeroShotClassifier's labels describe the classes {other!r} and {cls!r} by the same text "
                    f"{shown!r}: they would get the same embedding, and every prediction would be {other!r}. Give "
                    "each class a description of its own.")
        return classes, prompts

    def fit(self, X, y=None):
        """Fit the encoder on ``X``'s column and embed the label texts; nothing is learned.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)
            Items of the kind to classify (a few are enough: only their kind matters).
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
        """
        self._validate_params()
        self._class_prompts(None if self.template == "auto" else self.template)  # refused before the model loads
        self.encoder_ = clone(self.encoder).fit(X)
        self.template_ = self._template(self.encoder_)
        classes, prompts = self._class_prompts(self.template_)
        flat = [text for texts in prompts for text in texts]
        if isinstance(self.encoder_, ClipEncoder):
            # The items may be images: label texts go through a text twin (same model and settings, same space).
            text_encoder = clone(self.encoder).set_params(modality="text").fit(flat)
            scale = self.encoder_.logit_scale_
        else:
            text_encoder, scale = self.encoder_, 1.0 / DEFAULT_TEMPERATURE
        vectors = _unit(text_encoder.transform(flat))
        owners = np.repeat(np.arange(len(classes)), [len(texts) for texts in prompts])
        centroids = np.stack([vectors[owners == k].mean(0) for k in range(len(classes))])
        self.label_embeddings_ = _unit(centroids).astype(np.float32)
        self.classes_, self.prompts_ = np.asarray(classes), prompts
        self.temperature_ = 1.0 / scale if self.temperature == "auto" else float(self.temperature)
        return self

    def _template(self, encoder):
        if self.template != "auto":
            return self.template
        on_images = isinstance(encoder, ClipEncoder) and encoder.modality_ != "text"
        return PHOTO_TEMPLATE if on_images else TEXT_TEMPLATE

    def unit_embeddings(self, X) -> np.ndarray:
        """The items' embeddings by ``encoder_``, each scaled to unit length (a zero row stays zero).

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        embeddings : ndarray of shape (n_samples, embedding_dim)

        Raises
        ------
        ValueError
            Naming the first item the encoder returned a NaN row for (``on_error="nan"``).
        """
        check_is_fitted(self, "label_embeddings_")
        Z = self.encoder_.transform(X)
        bad = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        if bad.size:
            raise ValueError(f"the encoder returned a NaN row for the item at index {bad[0]} (on_error='nan'); "
                             "filter or impute such items before classifying them.")
        return _unit(Z)

    def similarities(self, X):
        """Cosine similarity of each item to each class's label text.

        Parameters
        ----------
        X : array-like of shape (n_samples,) or (n_samples, 1)

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes)
        """
        return self.unit_embeddings(X) @ self.label_embeddings_.T


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)
