"""Encoders inside ColumnTransformer on a real mixed table (a slice of fashion_products)."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer, make_column_selector, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import EmbeddingCache, ImageEncoder, TextEncoder, make_table_encoder


@pytest.fixture(scope="module")
def products(data_dir):
    """12 products of 3 categories, with a photo path column; one missing colour kept as NaN."""
    folder = data_dir / "fashion_products"
    if not (folder / "styles.csv").is_file():
        pytest.skip(f"{folder} not found")
    table = pd.read_csv(folder / "styles.csv")
    table = table[table["subCategory"].isin(["Topwear", "Shoes", "Watches"])]
    table = table.groupby("subCategory", group_keys=False).head(4)
    table = table.set_index(table["id"].rename("product")).drop(columns=["id"])
    table["photo"] = [str(folder / "images" / name) for name in table["image"]]
    table.loc[table.index[1], "baseColour"] = np.nan
    return table[["gender", "baseColour", "season", "year", "productDisplayName", "photo", "subCategory"]]


TEXT = TextEncoder(device="cpu")
IMAGE = ImageEncoder(weights="IMAGENET1K_V1", device="cpu")


def test_column_by_name_list_or_selector_gives_the_same_features_and_names(products):
    by_name = make_column_transformer((TEXT, "productDisplayName")).fit(products)
    as_frame = make_column_transformer((TEXT, ["productDisplayName"])).fit(products)
    selected = make_column_transformer((TEXT, make_column_selector(pattern="^productDisplayName$"))).fit(products)
    reference = by_name.transform(products)
    np.testing.assert_allclose(as_frame.transform(products), reference, atol=1e-6)
    np.testing.assert_allclose(selected.transform(products), reference, atol=1e-6)
    for ct in (by_name, as_frame, selected):
        names = ct.get_feature_names_out()
        assert names[0] == "textencoder__productDisplayName_000" and len(set(names)) == 384


def test_selector_matching_several_columns_says_how_to_fix(products):
    ct = make_column_transformer((TEXT, make_column_selector(pattern="^(?:gender|season)$")))
    with pytest.raises(ValueError, match="encodes one column.*one encoder per column"):
        ct.fit(products)


def test_two_text_columns_get_unique_names_without_prefixes(products):
    ct = ColumnTransformer([("name", TEXT, "productDisplayName"), ("season", TEXT, "season")],
                           verbose_feature_names_out=False).fit(products)
    names = ct.get_feature_names_out()
    assert names[0] == "productDisplayName_000" and names[384] == "season_000" and len(set(names)) == 768


def test_table_encoder_pandas_output_end_to_end(products):
    encoder = make_table_encoder(text="productDisplayName", images="photo", text_encoder=TEXT, image_encoder=IMAGE)
    out = encoder.set_output(transform="pandas").fit_transform(products.drop(columns="subCategory"))
    assert isinstance(out, pd.DataFrame) and list(out.index) == list(products.index)
    columns = list(out.columns)
    assert len(set(columns)) == len(columns) == 384 + 1280 + out.shape[1] - 384 - 1280
    assert columns[0] == "productDisplayName_000" and columns[384] == "photo_0000"
    assert {"gender_Men", "season_Fall", "baseColour_nan", "year"} <= set(columns)  # NaN: its own category
    assert out.dtypes.map(lambda d: d.kind == "f").all() and np.isfinite(out.to_numpy()).all()
    assert [name for name, *_ in encoder.transformers_][:4] == ["text_productDisplayName", "image_photo",
                                                                "categorical", "numeric"]


def test_table_pipeline_grid_search_encodes_each_item_once(products, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    X, y = products.drop(columns="subCategory"), products["subCategory"]
    pipe = make_pipeline(
        make_table_encoder(text="productDisplayName", images="photo", categorical=["gender"], numeric=["year"],
                           text_encoder=TEXT, image_encoder=IMAGE, cache=cache),
        LogisticRegression(max_iter=2000),
    )
    search = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2).fit(X, y)
    assert cache.stats.misses == X["productDisplayName"].nunique() + X["photo"].nunique()
    assert search.best_score_ > 0.8
    blob = pickle.dumps(search.best_estimator_)
    assert len(blob) < 200_000  # parameters and the head, never the networks' weights
    np.testing.assert_array_equal(pickle.loads(blob).predict(X), search.predict(X))


def test_table_encoder_auto_columns_and_errors(products):
    encoder = make_table_encoder(text="productDisplayName", images="photo", text_encoder=TEXT,
                                 image_encoder=IMAGE).fit(products.drop(columns="subCategory"))
    names = set(encoder.get_feature_names_out())
    assert "year" in names and "gender_Men" in names
    assert not any(n.startswith(("productDisplayName_", "photo_")) and not n[-1].isdigit() for n in names)
    with pytest.raises(ValueError, match="both as text and as images"):
        make_table_encoder(text="photo", images="photo")
    with pytest.raises(TypeError, match="text_encoder must be a TextEncoder"):
        make_table_encoder(text="productDisplayName", text_encoder=IMAGE)
