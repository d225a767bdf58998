"""BERT-style text models: plain transformers folders, pooling, hidden layers, long texts, prompts.

The references are computed here with transformers' ``AutoModel`` on the real all-MiniLM-L6-v2
weights, independently of sentence-transformers and of sktransfer's code.
"""

import shutil
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from sktransfer import TextEncoder
from sktransfer.model_store import resolve_text_model

TEXTS = ["A gripping, beautifully acted film.", "Dull, slow and far too long.", "meh",
         "The soundtrack alone is worth the ticket, and the last twenty minutes are the best thing he made."]
TRANSFORMERS_FILES = ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                      "tokenizer_config.json", "vocab.txt"]


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory):
    """all-MiniLM-L6-v2 as a plain transformers folder: no modules.json, no pooling config."""
    source = resolve_text_model("all-MiniLM-L6-v2")
    target = tmp_path_factory.mktemp("plain") / "minilm-plain"
    target.mkdir()
    for name in TRANSFORMERS_FILES:
        shutil.copy(f"{source}/{name}", target / name)
    return target


@pytest.fixture(scope="module")
def hidden_states():
    """Every hidden layer of every text, with its attention mask, straight from transformers."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_text_model("all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def run(texts, max_length=256):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            out = model(**batch, output_hidden_states=True)
        return out.hidden_states, batch["attention_mask"].unsqueeze(-1).float()

    return run


def mean_pool(tokens, mask):
    return (tokens * mask).sum(1) / mask.sum(1)


def unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_plain_transformers_folder_is_mean_pooled_like_sentence_transformers(plain_folder, hidden_states):
    from sentence_transformers import SentenceTransformer

    encoder = TextEncoder(plain_folder, device="cpu", normalize=True).fit(TEXTS)
    assert "modules.json" not in {p.name for p in plain_folder.iterdir()}
    assert [type(m).__name__ for m in encoder.model_] == ["Transformer", "Pooling"]
    out = encoder.transform(TEXTS)
    # transformers' AutoModel, mean pooling of the last layer under the mask, unit length...
    layers, mask = hidden_states(TEXTS)
    np.testing.assert_allclose(out, unit(mean_pool(layers[-1], mask).numpy()), atol=1e-6)
    # ...is what the sentence-transformers model of the same weights gives
    reference = SentenceTransformer(resolve_text_model("all-MiniLM-L6-v2"), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    # Without normalize the plain folder's own head (mean pooling) is not scaled.
    raw = TextEncoder(plain_folder, device="cpu").fit(TEXTS).transform(TEXTS)
    np.testing.assert_allclose(raw, mean_pool(layers[-1], mask).numpy(), atol=1e-5)


def test_pooling_modes_match_transformers(hidden_states):
    layers, mask = hidden_states(TEXTS)
    last = layers[-1]
    expected = {
        "mean": mean_pool(last, mask),
        "cls": last[:, 0],
        "max": last.masked_fill(mask == 0, -1e9).max(1).values,
    }
    for pooling, reference in expected.items():
        encoder = TextEncoder(pooling=pooling, device="cpu").fit(TEXTS)
        out = encoder.transform(TEXTS)
        np.testing.assert_allclose(out, reference.numpy(), atol=1e-5, err_msg=pooling)
        normalized = clone(encoder).set_params(normalize=True).fit(TEXTS).transform(TEXTS)
        np.testing.assert_allclose(normalized, unit(reference.numpy()), atol=1e-6, err_msg=pooling)


def test_layers_are_combined_before_pooling(hidden_states):
    layers, mask = hidden_states(TEXTS)
    last_four = torch.stack(layers[-4:])
    cases = {
        "mean": (dict(layers=[-4, -3, -2, -1]), last_four.mean(0)),
        "sum": (dict(layers=[-4, -3, -2, -1], layer_combine="sum"), last_four.sum(0)),
        "concat": (dict(layers=[-2, -1], layer_combine="concat"), torch.cat(layers[-2:], -1)),
        "embedding layer": (dict(layers=0), layers[0]),
    }
    for name, (params, tokens) in cases.items():
        encoder = TextEncoder(pooling="mean", device="cpu", **params).fit(TEXTS)
        out = encoder.transform(TEXTS)
        assert out.shape == (len(TEXTS), tokens.shape[-1]) == (len(TEXTS), encoder.embedding_dim_), name
        np.testing.assert_allclose(out, mean_pool(tokens, mask).numpy(), atol=1e-5, err_msg=name)
        assert encoder.get_feature_names_out().shape == (encoder.embedding_dim_,)
    # The model's own head (mean pooling, then unit length) on the BERT paper's last four layers.
    own = TextEncoder(layers=[-4, -3, -2, -1], device="cpu").fit(TEXTS).transform(TEXTS)
    np.testing.assert_allclose(own, unit(mean_pool(last_four.mean(0), mask).numpy()), atol=1e-6)


def test_layer_and_pooling_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"layer 7 does not exist .* 6 layers .* -7..-1 or 0..6"):
        TextEncoder(layers=7, device="cpu").fit(TEXTS)
    with pytest.raises(ValueError, match="names a layer twice"):
        TextEncoder(layers=[-1, 6], device="cpu").fit(TEXTS)
    with pytest.raises(ValueError, match="layers is empty"):
        TextEncoder(layers=[], device="cpu").fit(TEXTS)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(pooling="median", device="cpu").fit(TEXTS)


def long_review(data_dir, n_sentences=40):
    """A long "review": the first SST-2 training sentences joined (about 900 word pieces)."""
    with open(data_dir / "sst2" / "stsa.binary.train", encoding="latin-1") as handle:
        return " ".join(line[2:].strip() for _, line in zip(range(n_sentences), handle))


def test_chunking_averages_overlapping_windows_weighted_by_tokens(data_dir, hidden_states):
    from transformers import AutoTokenizer

    review = long_review(data_dir)
    texts = [review, TEXTS[0]]
    truncating = TextEncoder(device="cpu").fit(texts)
    with pytest.warns(UserWarning, match=r"truncated 1 distinct text.*long_text='chunk'"):
        truncated = truncating.transform(texts)
    chunking = TextEncoder(long_text="chunk", max_length=128, device="cpu").fit(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning: nothing is cut
        chunked = chunking.transform(texts)
    # The reference: the tokenizer's own overlapping windows (a quarter of a window shared),
    # each mean pooled and unit length as the model does, averaged by token count, unit length.
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("all-MiniLM-L6-v2"))
    windows = tokenizer([review], max_length=128, truncation=True, stride=32, return_overflowing_tokens=True)
    assert len(windows["input_ids"]) > 3
    window_texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in windows["input_ids"]]
    per_window = TextEncoder(device="cpu", max_length=128).fit(window_texts).transform(window_texts)
    weights = np.array([len(ids) for ids in windows["input_ids"]], dtype=np.float32)
    expected = unit((per_window * weights[:, None]).sum(0, keepdims=True))[0]
    assert np.dot(chunked[0], expected) > 0.999  # decoding the windows re-tokenizes almost identically
    assert np.dot(chunked[0], truncated[0]) < 0.99  # the rest of the review counts
    np.testing.assert_allclose(chunked[1], truncated[1], atol=1e-6)  # one window: the same vector
    assert chunking.identity_.fingerprint != truncating.identity_.fingerprint
    # Window batches are split by batch_size; outputs do not depend on it.
    small = clone(chunking).set_params(batch_size=2).fit(texts).transform(texts)
    np.testing.assert_allclose(small, chunked, atol=1e-5)


def test_prompt_is_a_prefix_in_the_fingerprint():
    prompted = TextEncoder(prompt="query: ", device="cpu").fit(TEXTS)
    by_hand = TextEncoder(device="cpu").fit(TEXTS)
    np.testing.assert_allclose(prompted.transform(TEXTS), by_hand.transform(["query: " + t for t in TEXTS]),
                               atol=1e-6)
    assert prompted.identity_.fingerprint != by_hand.identity_.fingerprint
    assert prompted.identity_.settings["prompt"] == "query: "
    # A name among the model's own prompts means its text (all-MiniLM-L6-v2's "query" prompt is empty).
    named = TextEncoder(prompt="query", device="cpu").fit(TEXTS)
    assert named.model_.prompts["query"] == ""
    assert named.identity_.fingerprint == by_hand.identity_.fingerprint


def test_new_options_need_a_refit_and_survive_a_pickle(tmp_path):
    import pickle

    encoder = TextEncoder(pooling="cls", layers=[-2, -1], long_text="chunk", prompt="passage: ",
                          device="cpu").fit(TEXTS)
    out = encoder.transform(TEXTS)
    restored = pickle.loads(pickle.dumps(encoder))
    np.testing.assert_allclose(restored.transform(TEXTS), out, atol=1e-6)
    for name, value in [("pooling", "max"), ("layers", -1), ("layer_combine", "concat"), ("long_text", "truncate"),
                        ("prompt", None)]:
        changed = clone(encoder).fit(TEXTS).set_params(**{name: value})
        with pytest.raises(ValueError, match=f"{name} was changed"):
            changed.transform(TEXTS)


def test_fine_tuning_trains_the_encoders_own_head(sst2_sample):
    from sktransfer import FineTuningClassifier

    texts, labels = sst2_sample[0][:12] + sst2_sample[0][20:32], sst2_sample[1][:12] + sst2_sample[1][20:32]
    encoder = TextEncoder(pooling="cls", layers=[-2, -1], layer_combine="concat", prompt="review: ", device="cpu")
    # The classification objective puts a linear layer on the encoder's 768 concatenated features:
    # training through the model's own 384-wide head would not even run.
    model = FineTuningClassifier(encoder, objective="classification", unfreeze=1, max_epochs=1,
                                 validation_fraction=0, random_state=0).fit(texts, labels)
    assert model.transform(texts).shape == (24, 768)
    assert model.encoder_.identity_.settings["pooling"] == "cls"
