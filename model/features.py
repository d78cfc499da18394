"""The one place features are built, for training and for serving alike.

`feature_frame` turns events and their users' offline features into the raw columns the saved
sklearn Pipeline expects; every transformation after that lives inside the Pipeline, so the
artifact carries it and training and serving cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from events.pages import KNOWN_PAGES
from offline_store.features import UserFeatures

PAGE_COLUMNS = ("page_1", "page_2", "page_3")  # oldest first; page_3 is where the user is now
SPEND_COLUMNS = ("mean_last_3_purchases", "purchase_count")
RECENCY_COLUMNS = ("days_since_last_purchase",)
FLAG_COLUMNS = ("is_new_user",)
FEATURE_COLUMNS = PAGE_COLUMNS + SPEND_COLUMNS + RECENCY_COLUMNS + FLAG_COLUMNS

# Days over which the pull of a recent purchase fades (e-folding time).
RECENCY_SCALE_DAYS = 30.0


def feature_frame(pages: Sequence[tuple[str, str, str]], users: Sequence[UserFeatures]) -> pd.DataFrame:
    """Raw feature columns, one row per event; `pages[i]` belongs to the user with `users[i]`."""
    page_1, page_2, page_3 = zip(*pages, strict=True) if pages else ((), (), ())
    mean_last_3, count, days_since, is_new = zip(*users, strict=True) if users else ((), (), (), ())
    return pd.DataFrame(
        {
            "page_1": pd.Series(page_1, dtype=object),
            "page_2": pd.Series(page_2, dtype=object),
            "page_3": pd.Series(page_3, dtype=object),
            "mean_last_3_purchases": np.asarray(mean_last_3, dtype=np.float64),
            "purchase_count": np.asarray(count, dtype=np.float64),
            "days_since_last_purchase": np.asarray(days_since, dtype=np.float64),
            "is_new_user": np.asarray(is_new, dtype=np.float64),
        },
        columns=list(FEATURE_COLUMNS),
    )


def recency(days_since_last_purchase: np.ndarray) -> np.ndarray:
    """1 for a purchase today, fading towards 0 for purchases long ago."""
    return np.exp(-np.asarray(days_since_last_purchase, dtype=np.float64) / RECENCY_SCALE_DAYS)


def build_pipeline(regularisation_c: float = 1.0) -> Pipeline:
    """An untrained Pipeline: raw feature columns in, purchase probability out."""
    columns = ColumnTransformer(
        [
            (
                "pages",
                OneHotEncoder(categories=[list(KNOWN_PAGES)] * len(PAGE_COLUMNS), handle_unknown="ignore"),
                list(PAGE_COLUMNS),
            ),
            ("spend", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), list(SPEND_COLUMNS)),
            ("recency", FunctionTransformer(recency, feature_names_out="one-to-one"), list(RECENCY_COLUMNS)),
            ("flags", "passthrough", list(FLAG_COLUMNS)),
        ]
    )
    return Pipeline(
        [
            ("columns", columns),
            ("scale", StandardScaler(with_mean=False)),
            ("classifier", LogisticRegression(C=regularisation_c, max_iter=1_000)),
        ]
    )
