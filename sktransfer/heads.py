"""The tuned head: what a careful user fits on frozen features, and what FineTuningClassifier compares with.

Scaling, then ``C`` chosen by cross-validation on the training data only. FineTuningClassifier scores the
frozen and every tuned encoder with it, so what is compared is the encoder, not a head handicap.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["CV_FOLDS", "C_GRID", "tuned_head"]

#: Most folds of the inner cross-validation that chooses C (fewer when a class has fewer items).
CV_FOLDS = 5

#: The values of C tried, on standardised features (scikit-learn's LogisticRegressionCV default range).
C_GRID = np.logspace(-4, 4, 9)


def tuned_head(labels: np.ndarray):
    """``StandardScaler`` + ``LogisticRegressionCV`` over `C_GRID`, by log loss, with at most `CV_FOLDS` folds.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        The labels the head will be fitted on: the folds are as many as the smallest class allows.

    Returns
    -------
    head : Pipeline
        Unfitted. With a class of one item no fold can hold it out: plain ``LogisticRegression`` (C=1)
        after the scaler.

    Notes
    -----
    ``LogisticRegressionCV.score`` scores by its ``scoring``: this head's ``score`` is the negative
    log loss, not the accuracy. For the accuracy, use ``accuracy_score(y, head.predict(X))``, or
    wrap it in a classifier whose ``score`` is the accuracy (``FineTuningClassifier`` does).
    """
    folds = min(CV_FOLDS, int(np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    # Log loss, not accuracy: on a few dozen items accuracy ties across C, and the tie goes to the smallest C.
    return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=C_GRID, cv=folds, scoring="neg_log_loss",
                                                                l1_ratios=(0.0,), use_legacy_attributes=False,
                                                                max_iter=2000))
