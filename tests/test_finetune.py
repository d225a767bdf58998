"""FineTuningClassifier with real weights on tiny data: contract, safety, state, determinism, cache."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, FineTuningClassifier, ImageEncoder, ModelMismatchError, TextEncoder
from sktransfer._tune_text import contrastive_pairs

WEIGHTS = "IMAGENET1K_V1"  # the checkpoint the set-up seeds


def image_encoder(**params):
    return ImageEncoder(**{"weights": WEIGHTS, "device": "cpu", "num_workers": 0, **params})


@pytest.fixture(scope="module")
def photos(hymenoptera):
    """12 ants and 12 bees."""
    train = hymenoptera["train"]
    return train["ants"][:12] + train["bees"][:12], np.array([0] * 12 + [1] * 12)


@pytest.fixture(scope="module")
def texts(sst2_sample):
    """8 positive and 8 negative SST-2 sentences."""
    texts, labels = sst2_sample
    labels = np.asarray(labels)
    rows = np.r_[np.flatnonzero(labels == 0)[:8], np.flatnonzero(labels == 1)[:8]]
    return [texts[i] for i in rows], labels[rows]


def quiet_fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*validation split")
        return estimator.fit(X, y)


@pytest.fixture(scope="module")
def tuned_text(texts):
    """The top transformer layer of MiniLM tuned by classification (small pickle, a few seconds)."""
    X, y = texts
    clf = FineTuningClassifier(TextEncoder(device="cpu"), unfreeze=1, objective="classification", max_epochs=2,
                               learning_rate=1e-3, validation_fraction=0, random_state=0)
    return quiet_fit(clf, X, y)


@pytest.fixture(scope="module")
def tuned_images(photos):
    X, y = photos
    clf = FineTuningClassifier(image_encoder(), unfreeze=2, max_epochs=3, validation_fraction=0.25, random_state=0)
    return quiet_fit(clf, X, y)


# ---------------------------------------------------------------------- scikit-learn contract
def test_init_stores_parameters_and_clone_keeps_them():
    clf = FineTuningClassifier(TextEncoder(normalize=True), unfreeze=2, learning_rate=1e-4, random_state=3)
    copy = clone(clf)
    assert copy.get_params()["unfreeze"] == 2 and copy.get_params()["encoder__normalize"] is True
    assert copy.encoder is not clf.encoder
    assert not any(name.endswith("_") for name in vars(clf))


def test_parameter_and_label_errors_name_the_fix(texts):
    X, y = texts
    with pytest.raises(ValueError, match="unfreeze"):
        FineTuningClassifier(TextEncoder(), unfreeze=0).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FineTuningClassifier(TextEncoder()).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="at least 2 samples of every class.*class 7"):
        FineTuningClassifier(TextEncoder()).fit(X, np.r_[y[:-1], 7])
    with pytest.raises(ValueError, match="too few for a stratified split"):
        FineTuningClassifier(TextEncoder(), validation_fraction=0.05).fit(X, y)
    with pytest.raises(ValueError, match="augment applies to images"):
        FineTuningClassifier(TextEncoder(), augment=True).fit(X, y)
    with pytest.raises(TypeError, match="TextEncoder or an ImageEncoder"):
        FineTuningClassifier(make_pipeline(TextEncoder())).fit(X, y)


def test_nan_training_item_is_an_error_naming_its_index(texts):
    X, y = texts
    X = list(X)
    X[3] = None
    with pytest.raises(ValueError, match="index 3"):
        FineTuningClassifier(TextEncoder(on_error="nan")).fit(X, y)


def test_contrastive_pairs_follow_the_labels():
    labels = np.array([0, 0, 1, 1, 1])
    pairs = contrastive_pairs(labels, rounds=3, rng=np.random.default_rng(0))
    assert len(pairs) == 2 * 3 * len(labels)
    for i, j, target in pairs:
        assert i != j and target == float(labels[i] == labels[j])


def test_stratified_train_counts_are_the_splits_own():
    """The split advice tries every validation size without splitting: its counts must be the split's."""
    from sklearn.model_selection import train_test_split

    from sktransfer.finetune import stratified_train_counts

    for counts in ([2, 2, 2], [3, 20], [5, 5, 2], [7, 7, 7, 2], [4, 4], [2, 3, 4, 11]):
        codes = np.repeat(np.arange(len(counts)), counts)
        n = len(codes)
        for seed in range(5):
            for m in range(len(counts), n - len(counts) + 1):
                train, _ = train_test_split(np.arange(n), test_size=m, stratify=codes, random_state=seed)
                np.testing.assert_array_equal(stratified_train_counts(np.array(counts), n - m, seed),
                                              np.bincount(codes[train], minlength=len(counts)))


# ---------------------------------------------------------------------- text
def test_text_tuning_changes_vectors_and_identity(tuned_text, texts):
    X, y = texts
    frozen = TextEncoder(device="cpu").fit(X)
    assert tuned_text.tuned_ and tuned_text.best_epoch_ == 2
    tuned_identity = tuned_text.encoder_.identity_
    assert tuned_identity.fingerprint != frozen.identity_.fingerprint
    assert tuned_identity.registry_key("cpu") != frozen.identity_.registry_key("cpu")
    assert set(tuned_text.history_[0]) == {"epoch", "split", "train_loss", "val_accuracy", "val_log_loss", "seconds"}
    tuned, base = tuned_text.transform(X), frozen.transform(X)
    assert tuned.shape == base.shape and not np.allclose(tuned, base, atol=1e-3)
    # Only the top layer's tensors are state.
    from sktransfer._weights import weights_from_bytes

    names = list(weights_from_bytes(tuned_text.encoder_.tuned_weights_))
    assert names and all(".layer.5." in name for name in names)
    assert tuned_text.score(X, y) >= 0.9


def test_pickled_text_classifier_predicts_identically_in_a_fresh_process(tuned_text, texts, tmp_path):
    X, _ = texts
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(tuned_text))
    np.save(tmp_path / "expected.npy", tuned_text.predict_proba(X))
    script = (
        "import pickle, sys, numpy as np; sys.path.insert(0, '.');"
        f"clf = pickle.loads(open({str(path)!r}, 'rb').read());"
        f"X = {list(X)!r};"
        f"expected = np.load({str(tmp_path / 'expected.npy')!r});"
        "got = clf.predict_proba(X); assert np.allclose(got, expected, atol=1e-5), np.abs(got - expected).max();"
        "print('ok', type(clf.encoder_.__dict__.get('model_')).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_tuned_encoder_pickled_alone_never_serves_pretrained_vectors(tuned_text, texts):
    X, _ = texts
    encoder = pickle.loads(pickle.dumps(tuned_text.encoder_))
    np.testing.assert_allclose(encoder.transform(X), tuned_text.transform(X), atol=1e-5)
    encoder.tuned_weights_ = b"tampered"
    encoder.__dict__.pop("model_", None)
    from sktransfer import model_registry

    model_registry.clear()
    with pytest.raises(ModelMismatchError, match="fine-tuned"):
        encoder.transform(X)


def test_tuned_vectors_are_cached_under_their_own_fingerprint(tuned_text, texts, tmp_path):
    X, _ = texts
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    tuned = clone(tuned_text.encoder_).set_params(cache=cache)
    frozen = TextEncoder(device="cpu", cache=cache).fit(X)
    base = frozen.transform(X)
    encoder = pickle.loads(pickle.dumps(tuned_text.encoder_))
    encoder.set_params(cache=cache)
    assert not np.allclose(encoder.transform(X), base, atol=1e-3)  # not served the frozen entries
    described = [entry["description"] for entry in cache.info()["fingerprints"]]
    assert len(described) == 2 and sum("tuned=" in d for d in described) == 1
    assert not hasattr(tuned, "identity_")  # a clone is unfitted: it starts from the pretrained model


def test_same_seed_same_predictions(texts, tuned_text):
    X, y = texts
    again = quiet_fit(clone(tuned_text), X, y)
    assert again.encoder_.identity_.fingerprint == tuned_text.encoder_.identity_.fingerprint
    np.testing.assert_array_equal(again.predict_proba(X), tuned_text.predict_proba(X))


# ---------------------------------------------------------------------- images
def test_image_top_blocks_tuned_on_cached_activations(tuned_images, photos):
    X, y = photos
    assert tuned_images.n_validation_ == 6
    assert [h["epoch"] for h in tuned_images.history_ if h["split"] == 0][:2] == [0, 1]
    assert tuned_images.predict(X).shape == (len(X),)
    assert tuned_images.predict_proba(X).shape == (len(X), 2)
    assert tuned_images.get_feature_names_out()[0] == "imageencoder_0000"


def test_tuner_features_match_the_tuned_encoder(photos):
    """What the head is fitted on (top blocks on cached activations) is what transform gives."""
    X, y = photos
    clf = quiet_fit(FineTuningClassifier(image_encoder(), unfreeze=2, max_epochs=1, validation_fraction=0,
                                         random_state=1), X, y)
    from sktransfer._tune_images import ImageTuner

    frozen = image_encoder().fit(X)
    tuner = ImageTuner(frozen, unfreeze=2, augment=False, learning_rate=1e-4, batch_size=8, max_epochs=1,
                       precision="fp32", seed=0)
    tuner.start(X, np.arange(len(X)), y)
    from sktransfer._weights import weights_from_bytes

    state = weights_from_bytes(clf.encoder_.tuned_weights_)
    assert clf.tuned_ and {name.split(".")[1] for name in state} == {"17", "18"}  # top 2 of 19 blocks
    tuner.restore(state)
    a, b = tuner.features(), clf.transform(X)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.9999


def test_head_layers_before_the_last_linear_one_are_tuned_state(photos):
    """MobileNetV3 (like VGG and ConvNeXt) has trained layers between its trunk and its last linear layer: the
    tuned encoder must compute with them as trained, not as pretrained."""
    from sktransfer._tune_images import ImageTuner
    from sktransfer._weights import weights_to_bytes

    X, y = photos[0][10:14], photos[1][10:14]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weights=None: a seeded random initialisation
        encoder = image_encoder(model="mobilenet_v3_small", weights=None).fit(X)
    tuner = ImageTuner(encoder, unfreeze=1, augment=False, learning_rate=1e-2, batch_size=4, max_epochs=1,
                       precision="fp32", seed=0)
    tuner.start(X, np.arange(len(X)), y)
    tuner.train_epoch(1, lambda batches: batches)
    state = tuner.snapshot()
    assert "classifier.0.weight" in state
    encoder.adopt_tuned_weights(weights_to_bytes(state))
    a, b = pickle.loads(pickle.dumps(encoder)).transform(X), tuner.features()
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.9999


def test_tuning_that_cannot_help_keeps_the_frozen_encoder(photos):
    X, y = photos
    harmful = FineTuningClassifier(image_encoder(), unfreeze=3, learning_rate=5.0, max_epochs=2,
                                   validation_fraction=0.25, random_state=0)
    with pytest.warns(UserWarning, match="kept the frozen encoder: tuning did not beat it"):
        harmful.fit(X, y)
    assert not harmful.tuned_ and harmful.best_epoch_ == 0
    decision = harmful.decision_
    assert decision["kept"] == "frozen" and decision["n_splits"] == 3 and len(decision["gains"]) == 3
    np.testing.assert_allclose(decision["gains"], np.subtract(decision["tuned_accuracy"], decision["frozen_accuracy"]))
    assert decision["mean_gain"] <= decision["std_error"]
    # Every split scored the frozen encoder (epoch 0) and every epoch it ran; no final run on all items.
    assert {(h["split"], h["epoch"]) for h in harmful.history_} >= {(k, 0) for k in range(3)}
    assert all(h["split"] is not None for h in harmful.history_)
    assert "tuned" not in harmful.encoder_.identity_.settings
    np.testing.assert_allclose(harmful.transform(X), image_encoder().fit(X).transform(X), atol=1e-5)


def test_a_harmful_tuning_is_refused_by_the_lenient_rule_too(photos):
    X, y = photos
    harmful = FineTuningClassifier(image_encoder(), unfreeze=3, learning_rate=5.0, max_epochs=1, keep_tuned="unless_worse",
                                   validation_fraction=0.25, random_state=0, show_progress=False)
    with pytest.warns(UserWarning, match="kept the frozen encoder: tuning was worse than it"):
        harmful.fit(X, y)
    assert not harmful.tuned_ and harmful.decision_["rule"] == "unless_worse"
    assert harmful.decision_["mean_gain"] < -harmful.decision_["std_error"]


def test_grid_search_reuses_the_cached_lower_activations(photos, tmp_path, monkeypatch):
    X, y = photos
    forwarded = []
    original = ImageEncoder._encode_images

    def counting(self, backbone, items, on_batch):
        if self.identity_.settings["layers"] is not None:  # the frozen lower blocks
            forwarded.append(len(items))
        return original(self, backbone, items, on_batch)

    monkeypatch.setattr(ImageEncoder, "_encode_images", counting)
    clf = FineTuningClassifier(image_encoder(), unfreeze=2, max_epochs=1, validation_fraction=0.25, random_state=0,
                               cache=tmp_path / "cache.sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(clf, {"learning_rate": [1e-4, 1e-3]}, cv=2).fit(X, y)
    assert sum(forwarded) == len(X)  # each photo through the lower blocks once, for 5 fits
    assert set(search.cv_results_["param_learning_rate"]) == {1e-4, 1e-3}


def test_non_torchvision_trunk_is_refused(photos):
    X, y = photos
    with pytest.raises(ValueError, match="features` sequence"):
        quiet_fit(FineTuningClassifier(image_encoder(model="resnet18", weights=None)), X, y)


def test_lora_adapters_are_the_state_and_merge_into_the_same_vectors(texts):
    """What the adapted model computed during training is what the pickled encoder computes."""
    pytest.importorskip("peft")
    from sktransfer._tune_text import TextTuner
    from sktransfer._weights import weights_to_bytes

    X, y = texts
    encoder = TextEncoder(device="cpu").fit(X)
    tuner = TextTuner(encoder, unfreeze="lora", objective="classification", learning_rate=1e-2, batch_size=8,
                      max_epochs=1, precision="fp32", seed=0)
    tuner.start(X, np.arange(len(X)), y)
    before = tuner.features()
    tuner.train_epoch(1, lambda batches: batches)
    during = tuner.features()
    state = tuner.snapshot()
    assert state and all(name.endswith((".lora_A", ".lora_B", ".lora_scale")) for name in state)
    blob = weights_to_bytes(state)
    assert len(blob) < 2_000_000  # adapters only: the whole model is about 90 MB
    encoder.adopt_tuned_weights(blob)
    merged = pickle.loads(pickle.dumps(encoder)).transform(X)
    cosine = (merged * during).sum(1) / np.linalg.norm(merged, axis=1) / np.linalg.norm(during, axis=1)
    assert cosine.min() > 0.9999 and not np.allclose(before, during, atol=1e-3)


def test_pair_rounds_set_the_pairs_each_epoch_trains_on(texts):
    """The tuner's pair_rounds (what the recipe benchmark varies) is its own field, not a module global."""
    from sktransfer import _tune_text

    X, y = texts
    encoder = TextEncoder(device="cpu").fit(X)
    seen = {}
    for rounds in (1, 3, None):
        extra = {} if rounds is None else {"pair_rounds": rounds}
        tuner = _tune_text.TextTuner(encoder, unfreeze=1, objective="contrastive", learning_rate=5e-5, batch_size=8,
                                     max_epochs=1, precision="fp32", seed=0, **extra)
        tuner.start(X, np.arange(len(X)), y)
        batches = []
        tuner.train_epoch(1, lambda planned, kept=batches: kept.extend(planned) or planned)
        seen[rounds] = (tuner.steps_per_epoch, sum(len(batch) for batch in batches))
    # a positive and a negative partner per text and round: 2 * rounds * 16 pairs, in batches of 8
    assert seen == {1: (4, 32), 3: (12, 96), None: (2 * _tune_text.PAIR_ROUNDS * 2, 2 * _tune_text.PAIR_ROUNDS * 16)}


def test_the_fixture_fit_followed_the_rule_over_three_splits(tuned_images):
    # Whichever way these photos decided, the recorded decision is the rule's (the tuned branch is
    # forced in the next test).
    decision = tuned_images.decision_
    assert decision["n_splits"] == 3 and len(decision["frozen_accuracy"]) == 3
    wins = decision["mean_gain"] > decision["std_error"]
    assert decision["kept"] == ("tuned" if wins else "frozen") and tuned_images.tuned_ == wins
    assert (tuned_images.best_epoch_ > 0) == wins
    loss = {(h["split"], h["epoch"]): h["val_log_loss"] for h in tuned_images.history_ if h["split"] is not None}
    np.testing.assert_allclose(decision["log_loss_gains"],
                               [loss[k, 0] - loss[k, decision["epoch"]] for k in range(3)], rtol=1e-9)


def test_a_kept_tuning_is_retrained_on_all_items_for_the_judged_epochs(photos, monkeypatch):
    # The tuned branch, whatever these 24 photos would decide: the decision is forced to "tuned".
    decide = FineTuningClassifier._decide

    def tuned_wins(self, scores, epoch):
        return {**decide(self, scores, epoch), "kept": "tuned"}

    monkeypatch.setattr(FineTuningClassifier, "_decide", tuned_wins)
    X, y = photos
    clf = quiet_fit(FineTuningClassifier(image_encoder(), unfreeze=1, max_epochs=2, early_stopping=False,
                                         validation_fraction=0.25, random_state=0, show_progress=False), X, y)
    assert clf.tuned_ and clf.best_epoch_ == 2 and clf.decision_["epoch"] == 2
    final = [h for h in clf.history_ if h["split"] is None]
    assert [h["epoch"] for h in final] == [1, 2] and all(np.isnan(h["val_accuracy"]) for h in final)
    assert "tuned" in clf.encoder_.identity_.settings
    assert not np.allclose(clf.transform(X), image_encoder().fit(X).transform(X), atol=1e-4)


def test_without_validation_every_epoch_runs_on_all_items_and_nothing_warns(photos):
    X, y = photos
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a mean over no splits once warned "Mean of empty slice"
        clf = FineTuningClassifier(image_encoder(), unfreeze=1, max_epochs=1, validation_fraction=0, random_state=0,
                                   show_progress=False).fit(X, y)
    assert clf.tuned_ and clf.decision_ is None and [h["split"] for h in clf.history_] == [None]


def test_one_split_decides_by_accuracy_then_log_loss():
    from sktransfer.finetune import FineTuningClassifier as F

    clf = F(TextEncoder(), n_splits=1)
    wins = clf._decide([[(0.5, -0.7), (0.5, -0.6)]], 1)  # same accuracy, lower log loss
    assert wins["kept"] == "tuned" and wins["std_error"] == 0.0
    assert clf._decide([[(0.5, -0.7), (0.5, -0.8)]], 1)["kept"] == "frozen"
    # Several splits: a mean gain within one standard error keeps frozen.
    spread = [[(0.5, 0.0), (0.6, 0.0)], [(0.5, 0.0), (0.4, 0.0)], [(0.5, 0.0), (0.6, 0.0)]]
    assert clf._decide(spread, 1)["kept"] == "frozen"
    steady = [[(0.5, 0.0), (0.6, 0.0)], [(0.5, 0.0), (0.55, 0.0)], [(0.5, 0.0), (0.6, 0.0)]]
    assert clf._decide(steady, 1)["kept"] == "tuned"
    # keep_tuned="unless_worse": within the spread keeps tuned; a loss beyond it keeps frozen.
    lenient = F(TextEncoder(), keep_tuned="unless_worse")
    assert lenient._decide(spread, 1)["kept"] == "tuned" and lenient._decide(spread, 1)["rule"] == "unless_worse"
    flat = [[(0.5, 0.0), (0.45, 0.0)], [(0.5, 0.0), (0.55, 0.0)], [(0.5, 0.0), (0.5, 0.0)]]
    assert lenient._decide(flat, 1)["kept"] == "tuned" and clf._decide(flat, 1)["kept"] == "frozen"
    worse = [[(0.6, 0.0), (0.4, 0.0)], [(0.6, 0.0), (0.45, 0.0)], [(0.6, 0.0), (0.4, 0.0)]]
    assert lenient._decide(worse, 1)["kept"] == "frozen"
    one = F(TextEncoder(), n_splits=1, keep_tuned="unless_worse")
    assert one._decide([[(0.5, -0.7), (0.5, -0.7)]], 1)["kept"] == "tuned"  # a tie is not a loss
    assert one._decide([[(0.5, -0.7), (0.45, -0.6)]], 1)["kept"] == "frozen"


def test_recipe_says_what_the_automatic_settings_resolved_to(tuned_images, tuned_text):
    from sktransfer.finetune import _DEFAULTS

    assert tuned_images.recipe_ == {"objective": "classification", "unfreeze": 2, "max_epochs": 3,
                                    "learning_rate": _DEFAULTS["image"]["learning_rate"],
                                    "batch_size": _DEFAULTS["image"]["batch_size"]}
    assert tuned_text.recipe_["objective"] == "classification" and tuned_text.recipe_["learning_rate"] == 1e-3
    assert tuned_text.recipe_["batch_size"] == _DEFAULTS["text"]["batch_size"]


def test_tuned_head_scores_by_log_loss_as_its_notes_say():
    from sklearn.metrics import accuracy_score, log_loss

    from sktransfer.heads import tuned_head

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.r_[np.zeros(20, int), np.ones(20, int)]
    X[y == 1] += 1.0
    head = tuned_head(y).fit(X, y)
    assert head.score(X, y) == pytest.approx(-log_loss(y, head.predict_proba(X)))
    assert head.score(X, y) != pytest.approx(accuracy_score(y, head.predict(X)))


def test_default_head_is_the_tuned_head(tuned_images):
    from sklearn.linear_model import LogisticRegressionCV

    head = tuned_images.head_
    assert isinstance(head[-1], LogisticRegressionCV) and head[-1].scoring == "neg_log_loss"
    assert head[-1].C_ is not None


def test_progress_is_shown_by_default_for_long_fits_and_silenced(photos, capsys):
    X, y = photos
    quiet_fit(FineTuningClassifier(image_encoder(), unfreeze=1, max_epochs=3, validation_fraction=0,
                                   batch_size=1, random_state=0), X, y)  # 24 steps x 3 epochs: above the threshold
    shown = capsys.readouterr().err
    assert "FineTuningClassifier" in shown and "epoch" in shown
    quiet_fit(FineTuningClassifier(image_encoder(), unfreeze=1, max_epochs=3, validation_fraction=0,
                                   batch_size=1, random_state=0, show_progress=False), X, y)
    assert "FineTuningClassifier" not in capsys.readouterr().err
    quiet_fit(FineTuningClassifier(image_encoder(), unfreeze=1, max_epochs=1, validation_fraction=0,
                                   random_state=0), X, y)  # 1 step: a bar would only flicker
    assert "FineTuningClassifier" not in capsys.readouterr().err


def test_same_seed_same_decision_over_the_splits(tuned_images, photos):
    X, y = photos
    again = quiet_fit(clone(tuned_images), X, y)
    assert again.decision_ == tuned_images.decision_
    np.testing.assert_array_equal(again.predict_proba(X), tuned_images.predict_proba(X))
