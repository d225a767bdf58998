"""Input defects of issue 28: each gets a named error or a documented result, never a misleading one."""

import io
import re
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from sklearn.base import clone

from sktransfer import FineTuningClassifier, ImageEncoder, TextEncoder, ZeroShotClassifier
from sktransfer._messages import with_article
from sktransfer.base import column_to_list

WEIGHTS = "IMAGENET1K_V1"
REVIEWS = ["a gripping film", "dull and far too long"]


@pytest.fixture(scope="module")
def texts():
    return TextEncoder(device="cpu").fit(["x"])


@pytest.fixture(scope="module")
def photos():
    """Two tiny PNG files as bytes, and an encoder fitted on them."""
    encoded = []
    for colour in ("red", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), colour).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded, ImageEncoder(weights=WEIGHTS, device="cpu", num_workers=0).fit(encoded)


# ---------------------------------------------------------------------- 1. polars and pyarrow columns
def test_a_one_column_polars_frame_is_one_column_named_like_pandas(texts):
    frame = pl.DataFrame({"review": REVIEWS, "stars": [5, 1]})
    expected = texts.transform(REVIEWS)
    for column in (frame.select("review"), frame["review"]):
        encoder = clone(texts).fit(column)
        np.testing.assert_allclose(encoder.transform(column), expected, atol=1e-6)
        assert encoder.feature_names_in_.tolist() == ["review"]
        assert encoder.get_feature_names_out()[0] == "review_000"
    pandas_names = clone(texts).fit(frame.to_pandas()[["review"]]).get_feature_names_out()
    assert clone(texts).fit(frame.select("review")).get_feature_names_out().tolist() == pandas_names.tolist()
    # polars names an unnamed Series "": that is no name, as pandas' None is.
    assert clone(texts).fit(pl.Series(REVIEWS)).get_feature_names_out()[0] == "textencoder_000"
    with pytest.raises(ValueError, match=r"got a DataFrame with 2 columns \['review', 'stars'\]"):
        clone(texts).fit(frame)


def test_set_output_polars_and_pandas_on_a_polars_column(texts):
    column = pl.DataFrame({"review": REVIEWS}).select("review")
    out = clone(texts).set_output(transform="polars").fit_transform(column)
    assert isinstance(out, pl.DataFrame) and out.shape == (2, 384) and out.columns[0] == "review_000"
    out = clone(texts).set_output(transform="pandas").fit_transform(column)
    assert isinstance(out, pd.DataFrame) and out.columns[0] == "review_000"


def test_polars_nulls_follow_on_error(texts):
    with pytest.raises(ValueError, match=r"index 1 is a missing value \(None\)"):
        clone(texts).fit(pl.DataFrame({"review": ["fine", None]}))


def test_pyarrow_columns_are_one_column(texts):
    expected = texts.transform(REVIEWS)
    table = pa.table({"review": REVIEWS})
    encoder = clone(texts).fit(table)
    assert encoder.get_feature_names_out()[0] == "review_000"
    np.testing.assert_allclose(encoder.transform(table), expected, atol=1e-6)
    for column in (table.column(0), pa.array(REVIEWS)):
        np.testing.assert_allclose(texts.transform(column), expected, atol=1e-6)


def test_image_columns_of_polars_bytes(photos):
    encoded, images = photos
    expected = images.transform(encoded)
    frame = pl.DataFrame({"photo": encoded})
    fitted = clone(images).fit(frame.select("photo"))
    assert fitted.get_feature_names_out()[0].startswith("photo_")
    np.testing.assert_allclose(fitted.transform(frame.select("photo")), expected, atol=1e-6)
    np.testing.assert_allclose(images.transform(frame["photo"]), expected, atol=1e-6)


# ---------------------------------------------------------------------- 2. unordered collections, iterators
@pytest.mark.parametrize("make", [set, frozenset, lambda items: dict.fromkeys(items).keys()])
@pytest.mark.parametrize("encoder", [TextEncoder(device="cpu"), ImageEncoder(weights=WEIGHTS, device="cpu")],
                         ids=["text", "image"])
def test_sets_are_refused_as_rows_could_not_be_mapped_back(make, encoder):
    with pytest.raises(TypeError, match=r"output rows .*map.* back to the inputs.* list"):
        clone(encoder).fit(make(["a.png", "b.png"]))


def test_a_dict_is_refused_naming_values(texts):
    with pytest.raises(TypeError, match=r"got a dict: iterating a mapping gives its keys.*list\(d.values\(\)\)"):
        texts.transform({"r1": REVIEWS[0], "r2": REVIEWS[1]})
    reviews = {"r1": REVIEWS[0], "r2": REVIEWS[1]}
    np.testing.assert_allclose(texts.transform(reviews.values()), texts.transform(REVIEWS), atol=1e-6)


def test_one_pass_iterators_are_read_once_where_the_input_is_read_twice(texts):
    out = clone(texts).fit_transform(map(str.upper, REVIEWS))
    np.testing.assert_allclose(out, texts.transform([r.upper() for r in REVIEWS]), atol=1e-6)
    # FineTuningClassifier.fit reads X twice (the encoder's fit, then its items): 6 items, not 0.
    with pytest.raises(ValueError, match=r"X has 6 items and y has 8 labels"):
        FineTuningClassifier(TextEncoder(device="cpu"), validation_fraction=0).fit(
            (text for text in REVIEWS * 3), [0, 1] * 4)


# ---------------------------------------------------------------------- 3. label templates
@pytest.mark.parametrize("template, problem", [
    ("{} and {}", r"has 2 placeholders \('\{\}', '\{\}'\)"),
    ("{0}{1}", r"has 2 placeholders \('\{0\}', '\{1\}'\)"),
    ("{label}", r"has the placeholder '\{label\}' instead of '\{\}'"),
    ("{0}", r"has the placeholder '\{0\}'"),
    ("{!r}", r"has the placeholder '\{!r\}'"),
    ("no placeholder", r"has no '\{\}'"),
    ("", r"has no '\{\}'"),
    ("{", r"has an unmatched brace"),
    ("a {} }", r"has an unmatched brace"),
])
def test_templates_must_hold_exactly_one_placeholder(template, problem):
    with pytest.raises(ValueError, match=f"ZeroShotClassifier's template={re.escape(repr(template))} {problem}.*exactly one "
                                         r"'\{\}'.*twice \('\{\{' or '\}\}'\)"):
        # refused before the encoder loads anything: the encoder cannot even be found
        ZeroShotClassifier(TextEncoder(model="no-such-model"), ["good", "bad"], template=template).fit(["x"])


def test_doubled_braces_are_literal_braces():
    classifier = ZeroShotClassifier(TextEncoder(device="cpu"), ["good", "bad"], template="{{{}}} review").fit(["x"])
    assert classifier.prompts_ == [["{good} review"], ["{bad} review"]]


def test_repeated_labels_are_refused():
    with pytest.raises(ValueError, match=r"labels name the class 'good' more than once"):
        ZeroShotClassifier(TextEncoder(model="no-such-model"), ["good", "bad", "good"]).fit(["x"])


# ---------------------------------------------------------------------- 4. missing values and wording
def test_one_nan_among_texts_is_a_missing_value_not_a_column_of_numbers(texts):
    with pytest.raises(ValueError) as raised:
        texts.transform(pd.Series(["fine", np.nan, "also fine"]))
    message = str(raised.value)
    assert "index 1 is a missing value (nan); 1 of 3 items are not strings (1 missing)" in message
    assert "X.fillna('')" in message and "on_error='nan'" in message
    assert "numbers" not in message
    with pytest.raises(ValueError, match=r"is it the right column\?"):  # a column of numbers still says so
        texts.transform([1.5, np.nan, 3.0])


def test_a_missing_image_path_is_not_a_column_of_numbers():
    with pytest.raises(ValueError) as raised:
        ImageEncoder(weights=WEIGHTS, device="cpu").fit(["a.png", float("nan")])
    assert "index 1" in str(raised.value) and "numbers" not in str(raised.value)


def test_messages_use_the_right_article(texts):
    with pytest.raises(ValueError, match=r"index 0 is an int \(3\)"):
        texts.transform([3, "three"])
    with pytest.raises(ValueError, match=r"index 0 is an ndarray"):
        texts.transform([np.zeros(2), "two"])
    with pytest.raises(ValueError, match=r"index 0 is a bytes"):
        texts.transform([b"raw", "text"])
    assert [with_article(w) for w in ["int", "ndarray", "str", "uint8", "ImageEncoder", "8-d vector", "float"]] \
        == ["an int", "an ndarray", "a str", "a uint8", "an ImageEncoder", "an 8-d vector", "a float"]


# ---------------------------------------------------------------------- 5. fine-tuning splits, up front
class NoFitTextEncoder(TextEncoder):
    """Fails if FineTuningClassifier reaches the encoder: every label check must come first."""

    def fit(self, X, y=None):
        raise AssertionError("the encoder was fitted before the labels were checked")


def fine_tune(y, **params):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*validation split")
        FineTuningClassifier(NoFitTextEncoder(), random_state=0, **params).fit([f"text {i}" for i in range(len(y))], y)


@pytest.mark.parametrize("y, params, match", [
    # 13 classes of 2: no fraction leaves 2 training items per class and one validation item per class.
    (np.repeat(np.arange(13), 2), {"validation_fraction": 0.5},
     r"FineTuningClassifier: validation_fraction=0.5 of 26 items gives 13 validation items and 13 training items "
     r"for 13 classes \(class 0: 2, .*too few for a stratified split.*26 items cannot hold both \(39 are needed"),
    # A large class and a small one: the split takes one of the small class's two items.
    ([0] * 20 + [1] * 2, {"validation_fraction": 0.5},
     r"leaves 1 of the 2 items of class 1 for training, and contrastive tuning pairs every text with another of "
     r"its class \(2 needed\).*Use validation_fraction from 0.0682 to 0.205.*use objective='classification'"),
    ([0] * 100 + [1] * 2, {"validation_fraction": 0.95, "objective": "classification"},
     r"leaves 0 of the 2 items of class 1 for training, and the head must see every class"),
    ([0] * 13 + [1] * 13, {"validation_fraction": 0.01},
     r"gives 1 validation items .*Use validation_fraction from 0.0577 to 0.827"),
    ([0] * 6, {}, r"at least 2 classes"),
    ([0, 0, 1, 1, 2], {}, r"at least 2 samples of every class .*class 2 has 1"),
    (["a", "b", None, "a", "b", "a"], {}, r"y\[2\] is a missing value \(None\); 1 of 6 labels are missing"),
    ([1.0, 2.0, np.nan, 1.0, 2.0, 1.0], {}, r"y\[2\] is a missing value \(nan\)"),
])
def test_fine_tuning_checks_labels_and_split_before_encoding(y, params, match):
    with pytest.raises(ValueError, match=match):
        fine_tune(y, **params)


def test_the_suggested_fractions_pass_the_split_check():
    for fraction in (0.0577, 0.827):
        with pytest.raises(AssertionError, match="encoder was fitted"):  # past every check, into the encoder
            fine_tune([0] * 13 + [1] * 13, validation_fraction=fraction)
    with pytest.raises(AssertionError, match="encoder was fitted"):
        fine_tune([0] * 20 + [1] * 2, validation_fraction=0.5, objective="classification")


# ---------------------------------------------------------------------- review: labels of any dtype, honest advice
@pytest.mark.parametrize("y, params, match", [
    # Object-dtype labels (a pandas column of strings) are named in messages, not crashed on with .item().
    (pd.Series(["a"] * 4 + ["b"] * 2), {"validation_fraction": 0.25},
     r"leaves 1 of the 2 items of class 'b' for training.*No validation_fraction works"),
    (pd.Series(["a", "b"] * 3), {"validation_fraction": 1e-9}, r"\(class 'a': 3, class 'b': 3\)"),
    (np.array(["a"] * 4 + ["b"] * 2, dtype=object), {"validation_fraction": 0.25}, r"class 'b'"),
])
def test_object_labels_are_named_in_split_errors(y, params, match):
    with pytest.raises(ValueError, match=match):
        fine_tune(y, **params)


def test_the_split_advice_is_only_fractions_that_work():
    # a: 4, b: 2 at 0.2: one validation item per class leaves b one training item, so no fraction works (contrastive).
    with pytest.raises(ValueError, match=r"No validation_fraction works.*objective='classification'") as info:
        fine_tune(["a"] * 4 + ["b"] * 2, validation_fraction=0.2)
    assert "lower validation_fraction" not in str(info.value)
    # The suggested fractions come from the split itself: each passes every check.
    with pytest.raises(ValueError, match=r"Use validation_fraction from 0.0682 to 0.205"):
        fine_tune([0] * 20 + [1] * 2, validation_fraction=0.5)
    for fraction in (0.0682, 0.205):
        with pytest.raises(AssertionError, match="encoder was fitted"):
            fine_tune([0] * 20 + [1] * 2, validation_fraction=fraction)


def test_label_count_is_checked_against_the_items_before_any_model_loads():
    with pytest.raises(ValueError, match=r"X has 6 items and y has 4 labels"):
        FineTuningClassifier(NoFitTextEncoder(), random_state=0).fit([f"text {i}" for i in range(6)], [0, 0, 1, 1])


@pytest.mark.parametrize("y", [["a", 1, "a", 1, "a", 1], np.array(["a", 1, "a", 1, "a", 1], dtype=object)])
def test_mixed_label_types_are_refused_by_name(y):
    with pytest.raises(ValueError, match=r"mix of label types \(string and number\): y\[0\] is 'a' and y\[1\] is 1"):
        fine_tune(y)


@pytest.mark.parametrize("labels, match", [
    ({"a": "x", "b": "x"}, r"describe the classes 'a' and 'b' by the same text 'x'.*every prediction would be 'a'"),
    ({0: ["x", "y"], 1: "z", 2: ["y", "x"]}, r"classes 0 and 2 by the same text \['x', 'y'\]"),
])
def test_zero_shot_refuses_two_classes_with_the_same_description(labels, match):
    with pytest.raises(ValueError, match=match):  # before the encoder loads
        ZeroShotClassifier(TextEncoder(model="no-such-model"), labels).fit(["x"])


def test_a_polars_lazyframe_is_refused_with_the_way_to_collect_it():
    lazy = pl.DataFrame({"review": ["a", "b"]}).lazy()
    with pytest.raises(TypeError, match=r"polars LazyFrame.*\.collect\(\)"):
        column_to_list(lazy, "TextEncoder")


def test_a_numpy_matrix_column_gives_its_items_not_nested_lists():
    column = np.matrix([["a"], ["b"]], dtype=object)
    assert column_to_list(column, "TextEncoder") == ["a", "b"]
    with pytest.raises(ValueError, match="encodes one column"):
        column_to_list(np.matrix([["a", "b"]], dtype=object), "TextEncoder")
