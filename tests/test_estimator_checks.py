"""scikit-learn's estimator checks, plus string-input versions of the ones that feed numbers.

The encoders' tags say what they accept: one column of strings (texts, or image paths) as a 1-D
array or a one-column 2-D array. ``check_estimator`` generates numeric arrays only, so:

* checks that fit on numbers fail in the encoders' own validation, as designed (a column of
  numbers is the wrong column): ``NUMERIC``;
* with the ``one_d_array`` tag some checks make ``X`` 1-D and then index it as 2-D, so they fail
  inside scikit-learn's own code before the encoder is called: ``CHECK_CODE``;
* three checks ask for something an encoder of items cannot give, each with its own reason.

Every expected failure is strict (``xfail_strict`` in pyproject.toml): a check that starts to pass
fails the suite until it is removed from this list. What the numeric checks guard is tested on
real texts and images in ``test_contract_on_real_input``.
"""

import copy
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktransfer import ClipEncoder, FewShotClassifier, ImageEncoder, TextEncoder, ZeroShotClassifier
from sktransfer.testing import make_tiny_clip



def _tiny_clip_folder() -> str:
    """A tiny random CLIP for ClipEncoder's checks (no CLIP weights exist offline), built once at import
    because the checks are parametrized at collection. Its path is in the checks' ids, and pytest-xdist
    workers must collect the same ids: under xdist the folder is named by the run, each worker builds a
    private copy (the weights are seeded: identical) and the first rename wins."""
    import os
    import tempfile

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return make_tiny_clip(tempfile.mkdtemp(prefix="sktransfer-tiny-clip-"))
    target = os.path.join(tempfile.gettempdir(), f"sktransfer-tiny-clip-{run}")
    if not os.path.isdir(target):
        built = make_tiny_clip(os.path.join(tempfile.mkdtemp(prefix="sktransfer-tiny-clip-build-"), "model"))
        try:
            os.rename(os.path.dirname(built), target)
        except OSError:  # another worker's copy is there already
            pass
    return os.path.join(target, "model")


TINY_CLIP = _tiny_clip_folder()

NUMERIC = ("fits on a column of numbers, which the encoder rejects at fit by design (TextEncoder: "
           "'expects strings'; ImageEncoder: 'unsupported item type float'); guarded on real input below")
CHECK_CODE = ("fails inside scikit-learn's check code: the one_d_array tag makes X 1-D and the check then "
              "indexes it as 2-D, before the encoder is called")

EXPECTED_FAILED_CHECKS = {
    # rejected numeric input
    "check_fit_score_takes_y": NUMERIC,
    "check_estimators_overwrite_params": NUMERIC,
    "check_estimators_fit_returns_self": NUMERIC,
    "check_readonly_memmap_input": NUMERIC,
    "check_n_features_in_after_fitting": NUMERIC,
    "check_estimators_dtypes": NUMERIC,
    "check_dtype_object": NUMERIC,
    "check_pipeline_consistency": NUMERIC,
    "check_estimators_pickle": NUMERIC,
    "check_fit_idempotent": NUMERIC,
    "check_fit_check_is_fitted": NUMERIC,
    "check_n_features_in": NUMERIC,
    # failures in scikit-learn's own code
    "check_dont_overwrite_parameters": CHECK_CODE,
    "check_f_contiguous_array_estimator": CHECK_CODE,
    "check_transformer_data_not_an_array": CHECK_CODE,
    "check_transformer_general": CHECK_CODE,
    "check_methods_sample_order_invariance": CHECK_CODE,
    "check_methods_subset_invariance": CHECK_CODE,
    "check_fit2d_1sample": CHECK_CODE,
    "check_fit2d_1feature": CHECK_CODE,
    "check_dict_unchanged": CHECK_CODE,
    "check_fit2d_predict1d": CHECK_CODE,
    # one reason each
    "check_positive_only_tag_during_fit": "expects fit to accept negative numbers; a column of numbers is "
    "not texts or images, positive or not",
    "check_estimators_nan_inf": "passes a 3-column numeric array with NaN/inf (rejected: one column), then "
    "expects fit to accept finite numbers; NaN, None and pandas.NA items follow on_error (tested)",
    "check_estimator_sparse_array": "scipy cannot build the 1-D sparse array this check makes ('Cannot "
    "convert a 1d sparse array'); sparse input is rejected with a TypeError (tested below)",
}


ESTIMATORS = [TextEncoder(), ImageEncoder(weights="IMAGENET1K_V1", num_workers=0), ClipEncoder(TINY_CLIP, num_workers=0)]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# ZeroShotClassifier fits its encoder on X, so the same numeric inputs fail the same way, plus
# the classifier checks that feed numbers; and it learns nothing from y by design.
ZERO_SHOT_FAILED_CHECKS = {
    **EXPECTED_FAILED_CHECKS,
    **dict.fromkeys(["check_classifiers_classes", "check_classifiers_train", "check_supervised_y_2d",
                     "check_requires_y_none", "check_classifiers_one_label"], NUMERIC),
    "check_classifier_data_not_an_array": "passes a numeric _NotAnArray, which the encoder rejects as not a "
    "column of items",
    "check_decision_proba_consistency": "passes a 2-column numeric array; the encoder takes one column",
    "check_classifiers_regression_target": "expects fit to reject a continuous y; fit(X, y) learns nothing "
    "from y by design (zero-shot), so y is not validated",
}


@parametrize_with_checks([ZeroShotClassifier(TextEncoder(), labels=["negative", "positive"]),
                          FewShotClassifier(TextEncoder(), labels=["negative", "positive"])],
                         expected_failed_checks=lambda est: ZERO_SHOT_FAILED_CHECKS)
def test_zero_shot_classifier_is_compatible(estimator, check):
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


@pytest.fixture(params=["text", "image", "clip texts", "clip images"])
def encoder_and_input(request):
    """An unfitted encoder and a small valid input column for it."""
    if request.param == "text":
        return TextEncoder(), list(TEXTS)
    if request.param == "clip texts":
        return ClipEncoder(TINY_CLIP, num_workers=0), list(TEXTS)
    if request.param == "clip images":
        return ClipEncoder(TINY_CLIP, num_workers=0), _images()
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
    # transform does not change the estimator's state: same attributes, same objects, same values
    state = {k: copy.deepcopy(v) if k != "model_" else v for k, v in vars(fitted).items()}
    objects = dict(vars(fitted))
    fitted.transform(X)
    assert vars(fitted).keys() == state.keys()
    for name, value in vars(fitted).items():
        assert value is objects[name], f"transform replaced {name}"
        if name != "model_":
            assert _equal(value, state[name]), f"transform changed {name}"
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


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b) or pickle.dumps(a) == pickle.dumps(b)
    except Exception:  # objects without equality (a preprocessing preset): compare their pickles
        return pickle.dumps(a) == pickle.dumps(b)


def test_fit_rejects_what_transform_rejects(encoder_and_input):
    encoder, X = encoder_and_input
    for bad, match in [([X[0], float("nan")], "index 1"), ([X[0], 1 + 2j], "Complex data not supported"),
                       ([X[0], float("inf")], "inf")]:
        with pytest.raises(ValueError, match=match):
            clone(encoder).fit(bad)
        with pytest.raises(ValueError, match=match):
            clone(encoder).fit(X).transform(bad)
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        clone(encoder).fit(np.empty((3, 0), dtype=object))


def test_rejects_sparse_and_wide_input(encoder_and_input):
    import scipy.sparse as sp

    encoder, X = encoder_and_input
    with pytest.raises(TypeError, match="sparse"):
        clone(encoder).fit(sp.csr_matrix(np.ones((3, 1))))
    with pytest.raises(ValueError, match="one column"):
        clone(encoder).fit(np.array([["a", "b"], ["c", "d"]], dtype=object))
    with pytest.raises(ValueError, match="single str"):
        clone(encoder).fit("a")


def test_html_repr_links_every_public_estimator_to_its_entry_in_the_api_reference():
    import inspect
    from pathlib import Path

    from sklearn.base import BaseEstimator
    from sklearn.utils import estimator_html_repr

    import sktransfer
    from sktransfer.base import DOCS_URL

    estimators = [getattr(sktransfer, name) for name in sktransfer.__all__
                  if inspect.isclass(getattr(sktransfer, name)) and issubclass(getattr(sktransfer, name), BaseEstimator)
                  and name != "BaseEncoder"]  # the base class: docs/base_contract.md, never instantiated
    assert {cls.__name__ for cls in estimators} >= {"TextEncoder", "ImageEncoder", "ClipEncoder", "ZeroShotClassifier",
                                                    "FineTuningClassifier", "FewShotClassifier"}
    api = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    for cls in estimators:
        link = cls._get_doc_link(cls.__new__(cls))
        assert link == f"{DOCS_URL}api/#sktransfer.{cls.__name__}", cls
        # mkdocstrings gives `::: sktransfer.Name` the anchor "sktransfer.Name": the target exists.
        assert f"\n::: sktransfer.{cls.__name__}\n" in api, cls
    assert f'href="{DOCS_URL}api/#sktransfer.FineTuningClassifier"' in estimator_html_repr(
        sktransfer.FineTuningClassifier(TextEncoder()))
    mkdocs = (Path(__file__).parents[1] / "mkdocs.yml").read_text()
    assert f"site_url: {DOCS_URL}" in mkdocs  # the link points where the site is published


def test_html_repr_shows_the_identity_readably():
    from sklearn.utils import estimator_html_repr

    encoder = TextEncoder(device="cpu").fit(["x"])
    fingerprint = encoder.identity_.fingerprint
    assert repr(encoder.identity_) == f"<TextEncoder {fingerprint[:12]}>"  # the prefix `sktransfer cache info` shows
    assert f"&lt;TextEncoder {fingerprint[:12]}&gt;" in estimator_html_repr(encoder)  # whole: under 30 characters
    assert str(encoder.identity_) == f"{fingerprint} {encoder.identity_.describe()}"
