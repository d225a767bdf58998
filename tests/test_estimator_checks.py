"""scikit-learn's estimator checks, plus string-input versions of the ones that feed numbers.

``check_estimator`` only generates numeric arrays. An encoder of texts (or images) rejects those
by design, so every check that fits on numeric data is listed below as an expected failure with
the reason. The properties those checks guard are then tested on real input in
``test_contract_on_real_input``, so nothing is left untested.
"""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import ImageEncoder, TextEncoder

NUMERIC_INPUT = "check_estimator feeds numeric arrays; encoders take one column of texts or images"
ONE_D_INPUT = "the encoder takes a 1-D column by design (one_d_array tag), so 1-D input is valid"

EXPECTED_FAILED_CHECKS = {
    "check_fit_score_takes_y": NUMERIC_INPUT,
    "check_dont_overwrite_parameters": NUMERIC_INPUT,
    "check_n_features_in_after_fitting": NUMERIC_INPUT,
    "check_estimators_dtypes": NUMERIC_INPUT,
    "check_complex_data": NUMERIC_INPUT,
    "check_dtype_object": NUMERIC_INPUT,
    "check_estimators_empty_data_messages": NUMERIC_INPUT,
    "check_pipeline_consistency": NUMERIC_INPUT,
    "check_estimators_nan_inf": NUMERIC_INPUT + "; missing items follow the on_error policy",
    "check_estimator_sparse_array": "the check cannot build a 1-D sparse array; sparse input is "
    "rejected with a TypeError (check_estimator_sparse_matrix passes)",
    "check_estimators_pickle": NUMERIC_INPUT,
    "check_f_contiguous_array_estimator": NUMERIC_INPUT,
    "check_transformer_data_not_an_array": NUMERIC_INPUT,
    "check_transformer_general": NUMERIC_INPUT,
    "check_methods_sample_order_invariance": NUMERIC_INPUT,
    "check_methods_subset_invariance": NUMERIC_INPUT,
    "check_fit2d_1sample": NUMERIC_INPUT,
    "check_fit2d_1feature": NUMERIC_INPUT,
    "check_dict_unchanged": NUMERIC_INPUT,
    "check_fit_idempotent": NUMERIC_INPUT,
    "check_n_features_in": NUMERIC_INPUT,
    "check_fit1d": ONE_D_INPUT,
    "check_fit2d_predict1d": NUMERIC_INPUT,
}


ESTIMATORS = [TextEncoder(), ImageEncoder(weights="IMAGENET1K_V1", num_workers=0)]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


TEXTS = ["the film was wonderful", "a dull, lifeless plot", "", "the film was wonderful", "ok"]


def _images():
    """Four small images of different kinds (array, grayscale, bytes of a PNG, PIL)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(png, "PNG")
    return [
        rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        rng.integers(0, 255, (50, 50), dtype=np.uint8),
        png.getvalue(),
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
        png.getvalue(),  # a duplicate
    ]


@pytest.fixture(params=["text", "image"])
def encoder_and_input(request):
    """An unfitted encoder and a small valid input column for it."""
    if request.param == "text":
        return TextEncoder(), list(TEXTS)
    return ImageEncoder(weights="IMAGENET1K_V1", num_workers=0), _images()


def test_contract_on_real_input(encoder_and_input):
    """What the numeric checks above guard, verified on the encoder's own kind of input."""
    encoder, X = encoder_and_input
    params = encoder.get_params()
    fitted = clone(encoder).fit(X)
    # fit leaves parameters alone and adds only trailing-underscore attributes
    assert fitted.get_params() == params
    added = set(vars(fitted)) - set(params)
    assert added and all(name.endswith("_") or name.startswith("_") for name in added), added
    # idempotent fit, float32 output of the right shape
    out = fitted.transform(X)
    assert out.dtype == np.float32 and out.shape == (len(X), fitted.embedding_dim_)
    np.testing.assert_allclose(clone(encoder).fit(X).fit(X).transform(X), out, atol=1e-5)
    # transform does not change the estimator's state
    state = {k: v for k, v in vars(fitted).items() if not k.startswith("_")}
    fitted.transform(X)
    assert {k: v for k, v in vars(fitted).items() if not k.startswith("_")}.keys() == state.keys()
    # sample order and subset invariance
    order = np.arange(len(X))[::-1]
    np.testing.assert_allclose(fitted.transform([X[i] for i in order]), out[order], atol=1e-5)
    np.testing.assert_allclose(fitted.transform(X[1:3]), out[1:3], atol=1e-5)
    # one sample, and an empty column
    assert fitted.transform(X[:1]).shape == (1, fitted.embedding_dim_)
    assert fitted.transform([]).shape == (0, fitted.embedding_dim_)
    # pickle round trip without the weights
    restored = pickle.loads(pickle.dumps(fitted))
    assert "model_" not in vars(restored)
    np.testing.assert_allclose(restored.transform(X), out, atol=1e-6)
    # fit_transform == fit + transform
    np.testing.assert_allclose(clone(encoder).fit_transform(X), out, atol=1e-5)


def test_rejects_sparse_and_wide_input(encoder_and_input):
    import scipy.sparse as sp

    encoder, X = encoder_and_input
    with pytest.raises(TypeError, match="sparse"):
        clone(encoder).fit(sp.csr_matrix(np.ones((3, 1))))
    with pytest.raises(ValueError, match="one column"):
        clone(encoder).fit(np.array([["a", "b"], ["c", "d"]], dtype=object))
    with pytest.raises(ValueError, match="single str"):
        clone(encoder).fit("a")
