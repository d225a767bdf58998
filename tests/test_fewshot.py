"""FewShotClassifier with real weights on tiny data: the label texts as a prior, never below zero-shot."""

import numpy as np
import pytest
from sklearn.base import clone

from sktransfer import FewShotClassifier, TextEncoder, ZeroShotClassifier
from sktransfer.fewshot import ALPHAS

LABELS = {0: "a negative review", 1: "a positive review"}


@pytest.fixture(scope="module")
def reviews(sst2_sample):
    texts, labels = sst2_sample
    return list(texts), np.asarray(labels)


def test_no_labels_is_the_zero_shot_classifier(reviews):
    texts, labels = reviews
    few = FewShotClassifier(TextEncoder(), labels=LABELS).fit(texts[:2])
    zero = ZeroShotClassifier(TextEncoder(), labels=LABELS).fit(texts[:2])
    assert few.alpha_ == 1.0 and few.selection_ is None and few.n_labelled_ == 0
    np.testing.assert_array_equal(few.predict(texts), zero.predict(texts))
    np.testing.assert_allclose(few.similarities(texts), zero.similarities(texts), atol=1e-6)


def test_few_labels_never_below_zero_shot_on_a_tiny_task(reviews):
    """8 labelled sentences (4 per class), 5 draws: mean accuracy on the other sentences at least zero-shot's."""
    texts, labels = reviews
    zero = ZeroShotClassifier(TextEncoder(), labels=LABELS).fit(texts[:1])
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(5):
        rows = np.r_[rng.choice(np.flatnonzero(labels == 0), 4, replace=False),
                     rng.choice(np.flatnonzero(labels == 1), 4, replace=False)]
        rest = np.setdiff1d(np.arange(len(texts)), rows)
        held = [texts[i] for i in rest]
        few = FewShotClassifier(TextEncoder(), labels=LABELS).fit([texts[i] for i in rows], labels[rows])
        assert few.n_labelled_ == 8 and few.selection_["n_scored"] == 8 and 0 <= few.alpha_ <= 1
        gains.append(few.score(held, labels[rest]) - zero.score(held, labels[rest]))
    assert np.mean(gains) >= 0, gains


def test_the_weight_is_the_one_standard_error_choice(reviews, monkeypatch):
    texts, labels = reviews
    few = FewShotClassifier(TextEncoder(), labels=LABELS).fit(texts, labels)
    chosen, selection = few.selection_["chosen"], few.selection_
    losses, errors = np.array(selection["mean_log_loss"]), np.array(selection["std_error"])
    best = losses.argmin()
    assert few.alpha_ == ALPHAS[chosen] and losses[chosen] <= losses[best] + errors[best]
    assert not (losses[chosen + 1:] <= losses[best] + errors[best]).any()  # the largest weight in the band
    monkeypatch.setattr("sktransfer.fewshot.SE_BAND", 0.0)
    greedy = FewShotClassifier(TextEncoder(), labels=LABELS).fit(texts, labels)
    assert greedy.alpha_ == ALPHAS[best] and best < len(ALPHAS) - 1  # the items alone pull the vectors here
    np.testing.assert_allclose(np.linalg.norm(few.class_vectors_, axis=1), 1.0, rtol=1e-6)
    proba = few.predict_proba(texts[:5])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert (few.classes_[proba.argmax(1)] == few.predict(texts[:5])).all()


def test_a_class_without_labelled_items_keeps_its_label_text(reviews):
    texts, labels = reviews
    three = {0: "a negative review", 1: "a positive review", 2: "a review of a restaurant"}
    few = FewShotClassifier(TextEncoder(), labels=three).fit(texts[:6], labels[:6])
    zero = ZeroShotClassifier(TextEncoder(), labels=three).fit(texts[:1])
    np.testing.assert_allclose(few.class_vectors_[2], zero.label_embeddings_[2], atol=1e-6)


def test_labels_outside_the_descriptions_are_named(reviews):
    texts, _ = reviews
    with pytest.raises(ValueError, match=r"y\[1\]=7, which is not one of the classes its labels describe \(\[0, 1\]\)"):
        FewShotClassifier(TextEncoder(), labels=LABELS).fit(texts[:3], [0, 7, 1])
    with pytest.raises(ValueError, match="X has 3 items and y has shape"):
        FewShotClassifier(TextEncoder(), labels=LABELS).fit(texts[:3], [0, 1])


def test_init_stores_parameters_and_clone_keeps_them():
    clf = FewShotClassifier(TextEncoder(), labels=LABELS, temperature=0.05, random_state=3)
    again = clone(clf)
    assert again.get_params()["temperature"] == 0.05 and again.get_params()["labels"] == LABELS
    assert not hasattr(again, "alpha_")
