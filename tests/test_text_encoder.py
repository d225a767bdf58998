"""TextEncoder on the real all-MiniLM-L6-v2 weights (seeded offline by scripts/bootstrap.sh)."""

import pickle
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from sktransfer import TextEncoder, model_registry
from sktransfer.model_store import resolve_text_model

TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull, slow and far too long.",
    "A gripping, beautifully acted film.",
    "",
    "The soundtrack alone is worth the ticket, and the final twenty minutes are among the best "
    "things the director has ever put on screen.",
    "meh",
]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(device="cpu").fit(TEXTS)


@pytest.fixture(scope="module")
def reference(encoder):
    """Each text encoded on its own, straight through sentence-transformers."""
    model = encoder.loaded_model()
    return np.stack([model.encode([text])[0] for text in TEXTS])


def test_output_matches_sentence_transformers_in_input_order(encoder, reference):
    out = encoder.transform(TEXTS)
    assert out.shape == (len(TEXTS), 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])  # duplicates share one encoding


def test_identical_texts_are_encoded_once(encoder, encoded):
    encoder.transform(TEXTS * 3)
    assert sorted(encoded) == sorted(set(TEXTS))


def test_batches_are_length_sorted(encoder, encoded):
    clone(encoder).set_params(batch_size=2, n_streams=1).fit(TEXTS).transform(TEXTS)
    lengths = [len(text) for text in encoded]
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batch_size_does_not_change_outputs(encoder, batch_size):
    out = clone(encoder).set_params(batch_size=batch_size).fit(TEXTS).transform(TEXTS)
    np.testing.assert_allclose(out, encoder.transform(TEXTS), atol=1e-5)


@pytest.mark.parametrize(
    "make_input",
    [
        lambda t: t,
        lambda t: tuple(t),
        lambda t: np.array(t, dtype=object),
        lambda t: np.array(t),
        lambda t: np.array(t, dtype=object).reshape(-1, 1),
        lambda t: pd.Series(t, name="review"),
        lambda t: pd.Series(t, dtype="string"),
        lambda t: pd.DataFrame({"review": t}),
    ],
    ids=["list", "tuple", "object-array", "str-array", "2d-array", "series", "string-series", "frame"],
)
def test_accepted_input_types(encoder, make_input):
    np.testing.assert_allclose(encoder.transform(make_input(TEXTS)), encoder.transform(TEXTS), atol=1e-6)


def test_pandas_in_and_out():
    frame = pd.DataFrame({"review": TEXTS}, index=[10, 11, 12, 13, 14, 15])
    enc = TextEncoder(device="cpu").set_output(transform="pandas").fit(frame)
    assert enc.n_features_in_ == 1 and list(enc.feature_names_in_) == ["review"]
    out = enc.transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == list(frame.index)
    assert list(out.columns[:2]) == ["review_000", "review_001"]
    assert out.columns[-1] == "review_383" and out.shape == (6, 384)
    with pytest.raises(ValueError, match="feature names"):
        enc.transform(frame.rename(columns={"review": "other"}))


def test_feature_names_out(encoder):
    names = encoder.get_feature_names_out()
    assert len(names) == 384 and len(set(names)) == 384
    assert names[0] == "textencoder_000" and names[-1] == "textencoder_383"


def test_missing_values_raise_by_default_naming_index_and_value(encoder):
    with pytest.raises(ValueError, match=r"index 2 is a missing value \(None\).*on_error='empty'"):
        encoder.transform(["fine", "also fine", None, float("nan")])
    with pytest.raises(ValueError, match=r"index 1 is a missing value \(nan\)"):
        encoder.transform(pd.Series(["fine", np.nan]))
    with pytest.raises(ValueError, match=r"index 0 is an int \(3\)"):
        encoder.transform([3, "three"])


def test_missing_value_policies(encoder):
    X = ["fine", None, float("nan"), pd.NA, ""]
    empty = clone(encoder).set_params(on_error="empty").fit(X).transform(X)
    blank = encoder.transform([""])[0]
    for row in (1, 2, 3, 4):
        np.testing.assert_allclose(empty[row], blank, atol=1e-6)
    with pytest.warns(UserWarning, match=r"NaN rows for 3 of 5 items.*first at index 1 \(None\)"):
        nan = clone(encoder).set_params(on_error="nan").fit(X).transform(X)
    assert np.isnan(nan[1:4]).all()
    assert np.isfinite(nan[[0, 4]]).all()
    np.testing.assert_allclose(nan[0], encoder.transform(["fine"])[0], atol=1e-6)


def test_normalize_gives_unit_rows(encoder):
    out = clone(encoder).set_params(normalize=True).fit(TEXTS).transform(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    raw = encoder.transform(TEXTS)
    np.testing.assert_allclose(out, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_transform_warnings_point_at_the_callers_line(encoder):
    # Truncation and NaN-row warnings name the line that called transform (through scikit-learn's
    # set_output wrapper), so a user sees where in their code the problem is.
    short = clone(encoder).set_params(max_length=16, on_error="nan").fit(TEXTS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short.transform(TEXTS + [None])
    assert {str(w.message).split(" ")[1] for w in caught} == {"truncated", "returned"}
    assert {w.filename for w in caught} == {__file__}


def test_max_length_truncates_and_warns(encoder):
    short = clone(encoder).set_params(max_length=16).fit(TEXTS)
    with pytest.warns(UserWarning, match=r"truncated 1 distinct text\(s\) longer than max_length=16"):
        out = short.transform(TEXTS)
    full = encoder.transform(TEXTS)
    assert not np.allclose(out[4], full[4], atol=1e-3)  # the long review lost its ending
    np.testing.assert_allclose(out[:4], full[:4], atol=1e-5)  # short texts fit in 16 tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.transform(TEXTS)  # nothing exceeds the default 256 tokens: no warning
    with pytest.raises(ValueError, match="max_length <= 512"):
        clone(encoder).set_params(max_length=10_000).fit(TEXTS)


def test_bf16_and_fp16_autocast_return_float32_close_to_fp32(encoder):
    full = encoder.transform(TEXTS)
    for precision in ("bf16", "fp16"):
        out = clone(encoder).set_params(precision=precision).fit(TEXTS).transform(TEXTS)
        assert out.dtype == np.float32
        cosine = (out * full).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(full, axis=1)
        assert cosine.min() > 0.99, (precision, cosine)


def test_semantic_sanity(encoder):
    a, b, c = TextEncoder(normalize=True).fit(["x"]).transform(
        ["The cat sat on the mat.", "A cat was sitting on the rug.", "Quarterly revenue rose by 4%."]
    )
    assert a @ b > a @ c + 0.3


def test_parameter_validation():
    with pytest.raises(InvalidParameterError, match="batch_size"):
        TextEncoder(batch_size=0).fit(["a"])
    with pytest.raises(InvalidParameterError, match="precision"):
        TextEncoder(precision="int4").fit(["a"])
    with pytest.raises(InvalidParameterError, match="on_error"):
        TextEncoder(on_error="skip").fit(["a"])
    with pytest.raises(InvalidParameterError, match="n_streams"):
        TextEncoder(n_streams=0).fit(["a"])
    with pytest.raises(ValueError, match="not a device name"):
        TextEncoder(device="gpu0").fit(["a"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available on this machine"):
            TextEncoder(device="cuda:1").fit(["a"])


def test_init_only_stores_parameters_and_clone_round_trips():
    enc = TextEncoder(model="all-MiniLM-L6-v2", normalize=True, max_length=64, batch_size=7)
    assert not [k for k in vars(enc) if k.endswith("_")]
    cloned = clone(enc)
    assert cloned.get_params() == enc.get_params()
    cloned.set_params(batch_size=16, precision="bf16")
    assert cloned.batch_size == 16 and enc.batch_size == 7


def test_local_model_folder_gives_the_same_vectors(encoder):
    path = resolve_text_model("all-MiniLM-L6-v2")
    by_path = TextEncoder(model=path, device="cpu").fit(TEXTS).transform(TEXTS)
    np.testing.assert_allclose(by_path, encoder.transform(TEXTS), atol=1e-6)


def test_grid_search_loads_weights_once(sst2_sample):
    texts, labels = sst2_sample
    model_registry.clear()
    pipe = make_pipeline(TextEncoder(device="cpu"), LogisticRegression(max_iter=1000))
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3).fit(texts, labels)
    # 3 candidates x 3 folds + the refit = 10 fitted clones, one load from disk
    assert sum(model_registry.load_counts.values()) == 1
    assert len(grid.cv_results_["mean_test_score"]) == 3


def test_pipeline_pickle_is_small_and_predicts_identically_in_a_fresh_process(tmp_path, sst2_sample):
    texts, labels = sst2_sample
    pipe = make_pipeline(TextEncoder(device="cpu"), LogisticRegression(max_iter=1000)).fit(texts, labels)
    blob = pickle.dumps(pipe)
    head = len(pickle.dumps(pipe[-1]))
    assert len(blob) - head < 100_000, len(blob)
    path = tmp_path / "pipe.pkl"
    path.write_bytes(blob)
    np.save(tmp_path / "expected.npy", pipe.predict_proba(texts))
    script = textwrap.dedent(
        f"""
        import os, pickle, numpy as np
        os.environ["HF_HUB_OFFLINE"] = "1"
        pipe = pickle.load(open({str(path)!r}, "rb"))
        texts = {texts!r}
        np.testing.assert_allclose(pipe.predict_proba(texts), np.load({str(tmp_path / "expected.npy")!r}), atol=1e-6)
        print("same predictions")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "same predictions" in result.stdout


def test_pickle_made_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path, encoder):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback is only observable without it")
    on_gpu = clone(encoder).fit(TEXTS)
    on_gpu.device_ = "cuda:0"  # what fitting on a GPU machine records
    on_gpu.__dict__.pop("model_")
    path = tmp_path / "gpu.pkl"
    path.write_bytes(pickle.dumps(on_gpu))
    script = textwrap.dedent(
        f"""
        import os, pickle, warnings
        os.environ["HF_HUB_OFFLINE"] = "1"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            enc = pickle.load(open({str(path)!r}, "rb"))
        assert enc.device_ == "cpu", enc.device_
        assert any("does not have" in str(w.message) for w in caught)
        print(enc.transform(["still works"]).shape)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 384)" in result.stdout


def test_torch_thread_settings_are_left_alone(encoder):
    before = torch.get_num_threads()
    TextEncoder(device="cpu").fit(TEXTS).transform(TEXTS)
    assert torch.get_num_threads() == before


def test_n_threads_applies_only_inside_transform(monkeypatch):
    before = torch.get_num_threads()
    seen = []
    encoder = TextEncoder(device="cpu", n_threads=1).fit(TEXTS)
    assert torch.get_num_threads() == before  # construction and fit leave it alone
    original = TextEncoder._encode_batch

    def spy(self, model, batch):
        seen.append(torch.get_num_threads())
        return original(self, model, batch)

    monkeypatch.setattr(TextEncoder, "_encode_batch", spy)
    reference = TextEncoder(device="cpu").fit(TEXTS).transform(TEXTS)
    out = encoder.transform(TEXTS)
    assert seen == [before, 1] and torch.get_num_threads() == before
    np.testing.assert_allclose(out, reference, atol=1e-5)

    def fail(self, model, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(TextEncoder, "_encode_batch", fail)
    with pytest.raises(RuntimeError, match="boom"):
        encoder.transform(["an error mid-transform"])
    assert torch.get_num_threads() == before  # restored even when transform fails


def _record_forward_calls(monkeypatch):
    """Thread, torch thread count and inference mode seen by every batch's forward pass."""
    calls = []
    original = TextEncoder._encode_batch

    def spy(self, model, batch):
        calls.append((threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled()))
        return original(self, model, batch)

    monkeypatch.setattr(TextEncoder, "_encode_batch", spy)
    return calls


def test_streams_split_the_threads_only_inside_transform_and_match_one_stream(monkeypatch):
    before = torch.get_num_threads()
    texts = [f"{text} (take {i})" for i in range(4) for text in TEXTS]  # 20 distinct: 7 batches
    serial = TextEncoder(device="cpu", batch_size=3, n_streams=1).fit(texts).transform(texts)
    calls = _record_forward_calls(monkeypatch)
    # n_threads=2 makes the budget two threads whatever this machine has: one per stream.
    streamed = TextEncoder(device="cpu", batch_size=3, n_threads=2, n_streams=2).fit(texts).transform(texts)
    np.testing.assert_allclose(streamed, serial, atol=1e-5)  # same rows, in input order
    assert len(calls) == 7
    assert {threads for _, threads, _ in calls} == {1}
    assert all(inference for _, _, inference in calls)  # inference mode is per thread: entered in each
    assert threading.get_ident() not in {thread for thread, _, _ in calls}
    assert torch.get_num_threads() == before

    calls.clear()
    TextEncoder(device="cpu", batch_size=3, n_threads=1).fit(texts).transform(texts)
    assert {thread for thread, _, _ in calls} == {threading.get_ident()}  # "auto" with one thread: no streams


def test_a_failing_stream_stops_the_transform_and_restores_threads(monkeypatch):
    before = torch.get_num_threads()
    texts = [f"text number {i}" for i in range(12)]
    encoder = TextEncoder(device="cpu", batch_size=2, n_threads=2, n_streams=2).fit(texts)
    original = TextEncoder._encode_batch

    def fail_on_one_batch(self, model, batch):
        if "text number 7" in batch:
            raise RuntimeError("boom")
        return original(self, model, batch)

    monkeypatch.setattr(TextEncoder, "_encode_batch", fail_on_one_batch)
    with pytest.raises(RuntimeError, match="boom"):
        encoder.transform(texts)
    assert torch.get_num_threads() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("sktransfer")]  # workers joined


def test_distinct_valid_rows_are_returned_without_a_copy(monkeypatch):
    # Peak memory: when every row is valid and distinct, the encoded array *is* the output.
    encoder = TextEncoder(device="cpu").fit(TEXTS)
    produced = []
    original = TextEncoder.encode_texts

    def spy(self, model, items, on_batch=None):
        result = original(self, model, items, on_batch)
        produced.append(result[0])
        return result

    monkeypatch.setattr(TextEncoder, "encode_texts", spy)
    distinct = list(dict.fromkeys(TEXTS))
    out = encoder.transform(distinct)
    assert out is produced[-1]
    with_duplicate = encoder.transform(distinct + distinct[:1])
    np.testing.assert_array_equal(with_duplicate[-1], with_duplicate[0])
    np.testing.assert_allclose(with_duplicate[:-1], out, atol=1e-6)
