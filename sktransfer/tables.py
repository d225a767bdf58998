"""Mixed tables: `make_table_encoder` puts numeric, categorical, text and image-path columns in one
ColumnTransformer (docs/mixed_tables.md)."""

from __future__ import annotations

import re

from sklearn.base import clone
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ._messages import with_article
from .image import ImageEncoder
from .text import TextEncoder

__all__ = ["make_table_encoder"]


def make_table_encoder(*, text=None, images=None, categorical="auto", numeric="auto", text_encoder=None,
                       image_encoder=None, cache=None):
    """Build a ColumnTransformer for a table with tabular, text and image-path columns.

    Every text column gets its own [`TextEncoder`][sktransfer.TextEncoder] and every image column its
    own [`ImageEncoder`][sktransfer.ImageEncoder] (clones of the templates you pass, all sharing
    ``cache``); categorical columns are one-hot encoded (missing values become their own
    category) and numeric columns are median-imputed, flagged when missing, and standardised.
    Output names are ``<column>_<i>`` for embeddings, ``<column>_<value>`` for categories and the
    column name for numbers: unique without the ColumnTransformer's prefixes
    (``verbose_feature_names_out=False``), and ``set_output(transform="pandas")`` works end to end.

    Parameters
    ----------
    text : str, list of str or None, default=None
        Columns of free text, encoded with ``text_encoder``.
    images : str, list of str or None, default=None
        Columns of image paths (or anything else [`ImageEncoder`][sktransfer.ImageEncoder] accepts),
        encoded with ``image_encoder``.
    categorical : "auto", list of str or None, default="auto"
        Columns to one-hot encode. ``"auto"``: every object, string, category or boolean column
        that is not listed in ``text`` or ``images``, chosen when the transformer is fitted.
    numeric : "auto", list of str or None, default="auto"
        Columns to impute and standardise. ``"auto"``: every numeric column not listed in
        ``text`` or ``images``.
    text_encoder : TextEncoder or None, default=None
        Template for the text columns (cloned per column). ``None``: ``TextEncoder()``.
    image_encoder : ImageEncoder or None, default=None
        Template for the image columns (cloned per column). ``None``: ``ImageEncoder()``.
    cache : None, str, os.PathLike or EmbeddingCache, default=None
        If given, set as the ``cache`` of every text and image encoder, so that folds and grid
        points encode each distinct text or image once.

    Returns
    -------
    column_transformer : sklearn.compose.ColumnTransformer
        Unfitted. Transformers are named ``text_<column>``, ``image_<column>``, ``categorical`` and
        ``numeric``, so grid searches address e.g. ``columntransformer__image_photo__layer``.

    See Also
    --------
    sklearn.compose.make_column_transformer : The general tool this specialises.

    Examples
    --------
    >>> import pandas as pd
    >>> from sktransfer import make_table_encoder
    >>> table = pd.DataFrame({"year": [2011, 2012, 2012], "season": ["Fall", "Summer", "Fall"],
    ...                       "name": ["navy shirt", "black track pants", "white sneakers"]})
    >>> encoder = make_table_encoder(text="name").set_output(transform="pandas")
    >>> encoder.fit_transform(table).shape
    (3, 387)
    """
    text, images = ([] if c is None else [c] if isinstance(c, str) else list(c) for c in (text, images))
    overlap = set(text) & set(images)
    if overlap:
        raise ValueError(f"Columns {sorted(overlap)} are listed both as text and as images; pick one.")

    transformers = []
    for columns, template, kind, cls in [(text, text_encoder, "text", TextEncoder),
                                         (images, image_encoder, "image", ImageEncoder)]:
        if template is not None and not isinstance(template, cls):
            raise TypeError(f"{kind}_encoder must be {with_article(cls.__name__)}, got {type(template).__name__}.")
        for column in columns:
            encoder = clone(template or cls())
            if cache is not None:
                encoder.set_params(cache=cache)
            transformers.append((f"{kind}_{column}", encoder, column))

    # "auto": a picklable selector of the columns of these dtypes that are not encoded above.
    others = "^(?!(?:" + "|".join(re.escape(str(c)) for c in text + images) + ")$)" if text + images else None
    for name, columns, dtypes, transformer in [
        ("categorical", categorical, ["object", "string", "category", "bool"],
         OneHotEncoder(handle_unknown="ignore", sparse_output=False)),  # dense: pandas output works
        ("numeric", numeric, "number",
         make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())),
    ]:
        if columns == "auto":
            columns = make_column_selector(pattern=others, dtype_include=dtypes)
        if columns is not None and not (isinstance(columns, list) and not columns):
            transformers.append((name, transformer, columns))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
