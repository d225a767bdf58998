"""timm backbones: ImageEncoder("timm:...") on the real EfficientNet-Lite0 weights seeded offline.

scripts/seed_offline_weights.py places them in the Hugging Face cache entry of
timm/tf_efficientnet_lite0.in1k, so timm's own ``pretrained=True`` path loads them.
"""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sktransfer import ImageEncoder, model_registry

timm = pytest.importorskip("timm", reason="the timm extra is not installed: pip install 'sktransfer[timm]'")

LITE0 = "timm:tf_efficientnet_lite0"
ANT = 310  # ImageNet class "ant, emmet, pismire"


def encoder(**params):
    return ImageEncoder(**{"model": LITE0, "device": "cpu", "num_workers": 0, **params})


@pytest.fixture(scope="module")
def reference_network():
    return timm.create_model("tf_efficientnet_lite0", pretrained=True).eval()


def timm_features(network, paths):
    """Pre-logits features the way timm's documentation computes them."""
    config = timm.data.resolve_data_config({}, model=network)
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        return network.forward_head(network.forward_features(batch), pre_logits=True).numpy()


def test_features_are_timms_own_and_recognise_ants(hymenoptera, reference_network):
    ants = hymenoptera["val"]["ants"][:8]
    fitted = encoder().fit(ants)
    out = fitted.transform(ants)
    assert out.shape == (8, 1280) == (8, fitted.embedding_dim_)
    np.testing.assert_allclose(out, timm_features(reference_network, ants), atol=1e-4)
    # timm's data config, not torchvision's: bicubic, mean and std 0.5, crop 0.875.
    config = fitted.identity_.settings["preprocess"]["timm"]
    assert config["interpolation"] == "bicubic" and config["mean"] == [0.5, 0.5, 0.5] and config["crop_pct"] == 0.875
    # The real ImageNet weights: the model's own classifier on these features says "ant" for most.
    with torch.inference_mode():
        top1 = reference_network.get_classifier()(torch.from_numpy(out)).argmax(1)
    assert int((top1 == ANT).sum()) >= 6, top1.tolist()


def test_names_weights_and_settings_reach_the_fingerprint(hymenoptera):
    from test_identity import assert_keys_follow_outputs, fingerprints_and_outputs

    photos = [hymenoptera["train"]["bees"][0], hymenoptera["train"]["ants"][0]]
    variants = {
        "defaults": {},
        "the default tag spelled out": {"model": LITE0 + ".in1k"},
        "weights=the tag": {"weights": "in1k"},
        "weights=None": {"weights": None},
        "image_size=192": {"image_size": 192},
        "crop=1.0": {"crop": 1.0},
        "crop=0.875 (the model's own)": {"crop": 0.875},
        "layer=blocks.4": {"layer": "blocks.4"},
        "two stages": {"layer": ["blocks.4", "blocks.6"]},
        "max pooling of a stage": {"layer": "blocks.4", "pooling": "max"},
        "precision=bf16": {"precision": "bf16"},
        "batch_size=1 (must not matter)": {"batch_size": 1},
    }
    assert_keys_follow_outputs(*fingerprints_and_outputs(encoder(), variants, photos))


def test_stages_come_from_forward_intermediates(hymenoptera, reference_network):
    photos = hymenoptera["val"]["bees"][:2]
    fitted = encoder(layer=["blocks.4", "blocks.6"]).fit(photos)
    out = fitted.transform(photos)
    assert fitted.layer_dims_ == {"blocks.4": 112, "blocks.6": 320}
    config = timm.data.resolve_data_config({}, model=reference_network)
    batch = torch.stack([timm.data.create_transform(**config)(Image.open(p).convert("RGB")) for p in photos])
    with torch.inference_mode():
        maps = reference_network.forward_intermediates(batch, indices=[3, 4], intermediates_only=True)
    expected = torch.cat([m.mean((2, 3)) for m in maps], 1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert list(fitted.get_feature_names_out()[:1]) == ["imageencoder_blocks.4_000"]


def test_bad_names_get_a_clear_error(hymenoptera):
    photo = hymenoptera["val"]["bees"][:1]
    with pytest.raises(ValueError, match=r"not a timm model\. Did you mean 'timm:tf_efficientnet_lite0'"):
        encoder(model="timm:tf_efficientnet_lit0").fit(photo)
    with pytest.raises(ValueError, match=r"'blocks\.5' is not a feature stage .* \['blocks\.0'"):
        encoder(layer="blocks.5").fit(photo)
    with pytest.raises(ValueError, match="has no pretrained weights in timm; its tags are"):
        encoder(weights="no_such_tag").fit(photo)


def test_pickle_finds_the_weights_by_name_and_a_pipeline_learns(hymenoptera):
    train = hymenoptera["train"]["ants"][:8] + hymenoptera["train"]["bees"][:8]
    val = hymenoptera["val"]["ants"][:8] + hymenoptera["val"]["bees"][:8]
    labels = [0] * 8 + [1] * 8
    pipeline = make_pipeline(encoder(), LogisticRegression(max_iter=1000)).fit(train, labels)
    assert pipeline.score(val, labels) >= 0.75
    blob = pickle.dumps(pipeline)
    assert len(blob) < 200_000  # the weights are found again by name, not pickled
    model_registry.clear()
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.predict(val), pipeline.predict(val))
    assert clone(pipeline[0]).get_params()["model"] == LITE0


def test_cli_embeds_with_a_timm_model_and_lists_it(tmp_path, hymenoptera, capsys):
    from test_cli import sktransfer_in_process

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in hymenoptera["val"]["ants"][:2]:
        (folder / path.rsplit("/", 1)[-1]).write_bytes(open(path, "rb").read())
    result = sktransfer_in_process(capsys, "embed", str(folder), "-o", str(tmp_path / "f.npy"), "--model", LITE0,
                                   "--no-cache", "--quiet")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "f.npy").shape == (2, 1280)
    listed = sktransfer_in_process(capsys, "models")
    assert "timm:tf_efficientnet_lite0.in1k" in listed.stdout
    assert "timm/" not in listed.stdout.split("Image weights (torchvision)")[0]  # not listed as a text model


def test_fine_tuning_a_timm_backbone_is_refused_with_the_alternatives(hymenoptera):
    from sktransfer import FineTuningClassifier

    photos = hymenoptera["train"]["ants"][:4] + hymenoptera["train"]["bees"][:4]
    with pytest.raises(ValueError, match="timm backbone, used frozen only for now"):
        FineTuningClassifier(encoder(), max_epochs=1, validation_fraction=0).fit(photos, [0] * 4 + [1] * 4)
