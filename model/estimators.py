"""The model families `model.train --estimator` can fit, all behind the same feature contract.

To add a family, add one entry to ESTIMATORS: a name and a function returning an unfitted
scikit-learn classifier with `predict_proba`. Everything else (the contract's columns, the
report, the registry, serving) works unchanged. Logistic regression is folded into numpy for
serving (model/scorer.py); any other family is served through the Pipeline's `predict_proba`,
in a worker thread so the event loop stays responsive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from features.contract import FLAG_COLUMNS, PAGE_COLUMNS, RECENCY_COLUMNS, SPEND_COLUMNS, FeatureContract
from features.event_time import recency

ESTIMATORS: dict[str, Callable[[], Any]] = {
    "logistic_regression": lambda: LogisticRegression(C=1.0, max_iter=1_000),
    # Shallow and early-stopped: the signal is a handful of additive effects, and deep trees only
    # sharpen the scores past what the data supports (worse calibration, the ECE gate).
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_depth=4, early_stopping=True, random_state=0
    ),
}
DEFAULT_ESTIMATOR = "logistic_regression"


def build_pipeline(contract: FeatureContract, estimator: str = DEFAULT_ESTIMATOR) -> Pipeline:
    """An untrained Pipeline: the contract's raw columns in, purchase probability out."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(ESTIMATORS)}")
    present = set(contract.features)

    def columns(names: tuple[str, ...]) -> list[str]:
        return [name for name in names if name in present]

    steps = [
        # Dense: the one-hot block is small, and not every family takes sparse input.
        ("pages", OneHotEncoder(categories=[list(contract.pages)] * len(columns(PAGE_COLUMNS)), handle_unknown="ignore",
                                sparse_output=False), columns(PAGE_COLUMNS)),
        ("spend", FunctionTransformer(np.log1p, feature_names_out="one-to-one"), columns(SPEND_COLUMNS)),
        ("recency", FunctionTransformer(recency, kw_args={"scale_days": contract.recency_scale_days},
                                        feature_names_out="one-to-one"), columns(RECENCY_COLUMNS)),
        ("flags", "passthrough", columns(FLAG_COLUMNS)),
    ]
    return Pipeline(
        [
            ("columns", ColumnTransformer([step for step in steps if step[2]])),
            ("scale", StandardScaler(with_mean=False)),
            ("classifier", ESTIMATORS[estimator]()),
        ]
    )
