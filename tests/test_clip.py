"""ClipEncoder and ZeroShotClassifier on a tiny randomly initialised CLIP built here.

No real CLIP weights can be fetched on these machines, so the whole path (loading by folder,
tokenizer and image processor, the shared space, cache keys, pickling, zero-shot mechanics) is
checked on a 2-layer CLIP with hidden size 32 and a byte-level BPE tokenizer trained on a few
captions. The references are computed with transformers directly.
"""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sktransfer import ClipEncoder, EmbeddingCache, TextEncoder, ZeroShotClassifier, model_registry
from sktransfer.testing import make_tiny_clip

CAPTIONS = ["a photo of an ant", "a photo of a bee", "a bee on a flower", "ants carrying a leaf"]


def test_the_tiny_clip_is_small_and_round_trips(tiny_clip):
    from pathlib import Path

    from transformers import AutoProcessor

    assert sum(p.stat().st_size for p in Path(tiny_clip).iterdir()) < 400_000
    tokens = AutoProcessor.from_pretrained(tiny_clip).tokenizer(["A Bee!"])["input_ids"][0]
    assert tokens[0] == 0 and tokens[-1] == 1 and len(tokens) == 5  # start, "a", "bee", "!", end


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def clip(folder, **params):
    return ClipEncoder(folder, **{"device": "cpu", "num_workers": 0, **params})


@pytest.fixture(scope="module")
def reference(tiny_clip):
    """Unit-length CLIP embeddings computed with transformers alone."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)

    def texts(captions):
        tokens = processor.tokenizer(captions, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.get_text_features(**tokens)
        return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=1).numpy()

    def images(paths):
        pixels = processor.image_processor(images=[Image.open(p).convert("RGB") for p in paths],
                                           return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = model.get_image_features(pixel_values=pixels)
        return torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=1).numpy()

    return texts, images


def test_texts_and_images_land_in_one_space(tiny_clip, reference, hymenoptera):
    photos = hymenoptera["val"]["bees"][:3]
    text_encoder, image_encoder = clip(tiny_clip).fit(CAPTIONS), clip(tiny_clip).fit(photos)
    assert (text_encoder.modality_, image_encoder.modality_) == ("text", "image")
    text_vectors, image_vectors = text_encoder.transform(CAPTIONS), image_encoder.transform(photos)
    assert text_vectors.shape == (4, 16) and image_vectors.shape == (3, 16) == (3, image_encoder.embedding_dim_)
    np.testing.assert_allclose(text_vectors, reference[0](CAPTIONS), atol=1e-5)
    np.testing.assert_allclose(image_vectors, reference[1](photos), atol=1e-5)
    assert text_encoder.identity_.fingerprint == image_encoder.identity_.fingerprint  # one space
    assert text_encoder.get_feature_names_out()[0] == "clipencoder_00"
    raw = clip(tiny_clip, normalize=False).fit(CAPTIONS).transform(CAPTIONS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_a_mixed_column_is_an_error_unless_asked_for(tiny_clip, hymenoptera):
    photo = hymenoptera["val"]["ants"][0]
    column = ["a photo of an ant", photo, Image.open(photo)]
    with pytest.raises(ValueError, match=r"both texts and images: index 0 is the text .* index 1 is the image .*"
                                         r"modality='mixed'"):
        clip(tiny_clip).fit(column)
    mixed = clip(tiny_clip, modality="mixed").fit(column).transform(column)
    np.testing.assert_allclose(mixed[0], clip(tiny_clip).fit(column[:1]).transform(column[:1])[0], atol=1e-6)
    np.testing.assert_allclose(mixed[1:], clip(tiny_clip).fit(column[1:]).transform(column[1:]), atol=1e-6)
    fitted_on_texts = clip(tiny_clip).fit(CAPTIONS)
    with pytest.raises(ValueError, match=r"modality 'text'\) expects a string, but the item at index 1 is <PIL"):
        fitted_on_texts.transform(["a bee", Image.open(photo)])
    with pytest.warns(UserWarning, match="NaN rows for 1 of 2"):
        out = clip(tiny_clip, on_error="nan").fit(CAPTIONS).transform(["a bee", None])
    assert np.isnan(out[1]).all() and not np.isnan(out[0]).any()


def test_cache_keys_tell_texts_from_images(tiny_clip, tmp_path, hymenoptera):
    photos = hymenoptera["val"]["ants"][:2]
    cache = EmbeddingCache(tmp_path / "cache")
    column = ["a bee on a flower", *photos]
    first = clip(tiny_clip, modality="mixed", cache=cache).fit(column).transform(column)
    assert cache.stats.last["misses"] == 3
    again = clip(tiny_clip, cache=cache).fit(photos).transform(photos)
    assert cache.stats.last["hits"] == 2
    np.testing.assert_allclose(again, first[1:], atol=0)
    # The path's text is not its image: as a text it is a miss, never the photo's vector.
    as_text = clip(tiny_clip, modality="text", cache=cache).fit(photos[:1]).transform(photos[:1])
    assert cache.stats.last["misses"] == 1 and not np.allclose(as_text[0], first[1])


def test_fingerprint_changes_exactly_when_the_output_does(tiny_clip, hymenoptera, tmp_path):
    from test_identity import assert_keys_follow_outputs, big_jpeg, fingerprints_and_outputs

    column = ["a bee on a flower " * 12, "ants", big_jpeg(tmp_path / "big.jpg"), hymenoptera["val"]["bees"][0]]
    base = clip(tiny_clip, modality="mixed")
    variants = {
        "defaults": {},
        "normalize=False": {"normalize": False},
        "max_length=8": {"max_length": 8},
        "max_length=77 (the model's own)": {"max_length": 77},
        "jpeg_draft=False": {"jpeg_draft": False},
        "precision=bf16": {"precision": "bf16"},
        # must not matter
        "on_error=nan": {"on_error": "nan"},
        "num_workers=1": {"num_workers": 1},
        "batch_size=1": {"batch_size": 1},
        "device=cpu": {"device": "cpu"},
        "show_progress": {"show_progress": True},
        "n_threads=1": {"n_threads": 1},
        "cache": {"cache": str(tmp_path / "cache")},
        "model as the same folder again": {"model": tiny_clip},
    }
    assert_keys_follow_outputs(*fingerprints_and_outputs(base, variants, column))
    # modality only says how a column is read; the mixed-column test covers it.
    assert set().union(*variants.values()) | {"modality"} == set(base.get_params())


def test_pickle_finds_the_model_by_name(tiny_clip, hymenoptera):
    encoder = clip(tiny_clip).fit(CAPTIONS)
    out = encoder.transform(CAPTIONS)
    blob = pickle.dumps(encoder)
    assert len(blob) < 20_000
    model_registry.clear()
    np.testing.assert_allclose(pickle.loads(blob).transform(CAPTIONS), out, atol=0)


def test_zero_shot_mechanics(tiny_clip, reference, hymenoptera):
    photos = hymenoptera["val"]["ants"][:3] + hymenoptera["val"]["bees"][:3]
    labels = {"ant": ["ant", "colony of ants"], "bee": "bee"}
    classifier = ZeroShotClassifier(clip(tiny_clip), labels=labels).fit(photos)
    assert classifier.prompts_ == [["a photo of a ant.", "a photo of a colony of ants."], ["a photo of a bee."]]
    texts, images = reference
    ant = texts(classifier.prompts_[0]).mean(0)
    expected_labels = np.stack([ant / np.linalg.norm(ant), texts(classifier.prompts_[1])[0]])
    np.testing.assert_allclose(classifier.label_embeddings_, expected_labels, atol=1e-5)
    similarities = images(photos) @ expected_labels.T
    np.testing.assert_allclose(classifier.similarities(photos), similarities, atol=1e-5)
    np.testing.assert_array_equal(classifier.predict(photos), np.array(["ant", "bee"])[similarities.argmax(1)])
    scale = classifier.encoder_.logit_scale_
    logits = similarities * scale
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(classifier.predict_proba(photos), expected / expected.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(classifier.decision_function(photos), similarities[:, 1] - similarities[:, 0],
                               atol=1e-5)
    assert classifier.temperature_ == pytest.approx(1 / scale)
    truth = np.array(["ant"] * 3 + ["bee"] * 3)
    assert classifier.score(photos, truth) == np.mean(classifier.predict(photos) == truth)


def test_zero_shot_default_template_follows_the_items(tiny_clip, hymenoptera):
    """template="auto": CLIP's photo prompt for images, a text template for texts (never
    'a photo of a a negative review.'), an explicit template or None as given."""
    from sktransfer.zeroshot import PHOTO_TEMPLATE, TEXT_TEMPLATE

    reviews = {0: "a negative review", 1: "a positive review"}
    on_texts = ZeroShotClassifier(TextEncoder(device="cpu"), labels=reviews).fit(["a film"])
    assert on_texts.template_ == TEXT_TEMPLATE == "This text is {}."
    assert on_texts.prompts_ == [["This text is a negative review."], ["This text is a positive review."]]
    photos = hymenoptera["val"]["ants"][:1]
    on_photos = ZeroShotClassifier(clip(tiny_clip), labels=["ant", "bee"]).fit(photos)
    assert on_photos.template_ == PHOTO_TEMPLATE and on_photos.prompts_ == [["a photo of a ant."], ["a photo of a bee."]]
    captions = ZeroShotClassifier(clip(tiny_clip), labels=["ant", "bee"]).fit(CAPTIONS)
    assert captions.encoder_.modality_ == "text" and captions.template_ == TEXT_TEMPLATE
    plain = ZeroShotClassifier(TextEncoder(device="cpu"), labels=reviews, template=None).fit(["a film"])
    assert plain.template_ is None and plain.prompts_ == [["a negative review"], ["a positive review"]]
    assert ZeroShotClassifier(TextEncoder(), labels=reviews).get_params()["template"] == "auto"


def test_zero_shot_errors_name_the_fix(tiny_clip):
    with pytest.raises(ValueError, match="at least 2 labels"):
        ZeroShotClassifier(clip(tiny_clip), labels=["ant"]).fit(CAPTIONS)
    with pytest.raises(ValueError, match=r"template='a photo' has no '\{\}'"):
        ZeroShotClassifier(clip(tiny_clip), labels=["ant", "bee"], template="a photo").fit(CAPTIONS)
    with pytest.raises(ValueError, match="description of label 1 must be a non-empty string"):
        ZeroShotClassifier(TextEncoder(device="cpu"), labels={0: "bad", 1: ""}).fit(["x"])


def test_zero_shot_on_texts_without_labels_and_in_a_grid_search(sst2_sample):
    texts, labels = sst2_sample
    classifier = ZeroShotClassifier(TextEncoder(device="cpu"), labels={0: "negative", 1: "positive"},
                                    template="a {} review")
    assert classifier.fit(texts[:1]).score(texts, labels) >= 0.7  # no training labels used
    search = GridSearchCV(classifier, {"template": ["a {} review", "this movie is {}"]}, cv=2).fit(texts, labels)
    assert search.best_params_["template"] in {"a {} review", "this movie is {}"}
    restored = pickle.loads(pickle.dumps(classifier))
    np.testing.assert_array_equal(restored.predict(texts), classifier.predict(texts))
    assert clone(classifier).get_params()["labels"] == {0: "negative", 1: "positive"}


def test_fine_tuning_a_clip_encoder_points_to_the_alternatives(tiny_clip):
    from sktransfer import FineTuningClassifier

    with pytest.raises(TypeError, match="ClipEncoder is used frozen"):
        FineTuningClassifier(clip(tiny_clip)).fit(CAPTIONS, [0, 1, 1, 0])
