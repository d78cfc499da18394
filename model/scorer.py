"""A numpy scorer folded out of a fitted logistic-regression Pipeline, for the serving hot path.

`predict_proba` on the Pipeline costs 10–16 ms per call whatever the batch size (a pandas
DataFrame and the ColumnTransformer), while the model is a logistic regression over one-hot
pages and three transformed numbers. Folded, the page one-hots become index lookups into the
fitted coefficients with the scaler divided in, and a batch of 500 scores in about a
millisecond. The Pipeline stays the artifact and the training path; `fold_pipeline` returns
None for any Pipeline whose shape it does not recognise (another estimator, a contract with
other columns), and the caller falls back to it. Parity with `predict_proba` is checked when the
model loads (`largest_difference`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from features.contract import BUILDABLE_COLUMNS, FLAG_COLUMNS, PAGE_COLUMNS, RECENCY_COLUMNS, SPEND_COLUMNS, FeatureContract
from features.event_time import recency
from features.inputs import NumericInputs, Pages

# The contract's vocabulary is small (ten pages make a thousand triples); this bound only
# matters for callers that pass raw names.
MAX_REMEMBERED_PAGE_TRIPLES = 100_000

# What the folded form assumes of each ColumnTransformer step, by name: its columns.
EXPECTED_STEPS = {
    "pages": list(PAGE_COLUMNS),
    "spend": list(SPEND_COLUMNS),
    "recency": list(RECENCY_COLUMNS),
    "flags": list(FLAG_COLUMNS),
}


@dataclass(frozen=True)
class FoldedScorer:
    """logit = intercept + Σ page weights + spend, recency and flag weights; p = expit(logit)."""

    page_index: dict[str, int]  # page name → row of `page_weights`
    other_row: int  # the row a page outside the vocabulary is read as (the contract's other_page)
    page_weights: np.ndarray  # (categories, 3): column i is page position i
    mean_spend_weight: float
    count_weight: float
    recency_weight: float
    recency_scale_days: float
    new_user_weight: float
    intercept: float
    _pages_logit: dict[Pages, float] = field(default_factory=dict, repr=False, compare=False)

    def score(self, pages: Sequence[Pages], numbers: NumericInputs) -> np.ndarray:
        known = self._pages_logit
        try:
            page_part = np.array([known[p] for p in pages], dtype=np.float64)
        except KeyError:  # a page triple not seen yet: remember it, then go again
            page_part = np.array([known[p] if p in known else self._page_logit(p) for p in pages], dtype=np.float64)
        logit = (
            page_part
            + self.mean_spend_weight * np.log1p(numbers.mean_last_3_purchases)
            + self.count_weight * np.log1p(numbers.purchase_count)
            + self.recency_weight * recency(numbers.days_since_last_purchase, self.recency_scale_days)
            + self.new_user_weight * numbers.is_new_user
            + self.intercept
        )
        return expit(logit)

    def _page_logit(self, pages: Pages) -> float:
        """The three pages' share of the logit, remembered: there are only so many page triples."""
        rows = [self.page_index.get(page, self.other_row) for page in pages]
        value = float(self.page_weights[rows[0], 0] + self.page_weights[rows[1], 1] + self.page_weights[rows[2], 2])
        if len(self._pages_logit) < MAX_REMEMBERED_PAGE_TRIPLES:
            self._pages_logit[pages] = value
        return value


def fold_pipeline(pipeline: Pipeline, contract: FeatureContract) -> FoldedScorer | None:
    """The Pipeline as a FoldedScorer, or None when its shape is not the one logistic regression
    over the full contract makes (model/estimators.py)."""
    steps = dict(pipeline.steps)
    columns, scale, classifier = steps.get("columns"), steps.get("scale"), steps.get("classifier")
    if not (
        set(contract.features) == set(BUILDABLE_COLUMNS)
        and isinstance(columns, ColumnTransformer) and isinstance(scale, StandardScaler)
        and isinstance(classifier, LogisticRegression) and list(steps) == ["columns", "scale", "classifier"]
        and classifier.coef_.shape[0] == 1 and not scale.with_mean
    ):
        return None
    fitted = {name: (transformer, list(cols)) for name, transformer, cols in columns.transformers_ if name != "remainder"}
    if {name: cols for name, (_, cols) in fitted.items()} != EXPECTED_STEPS or not _known_transformers(fitted, contract):
        return None
    encoder: OneHotEncoder = fitted["pages"][0]
    categories = [list(c) for c in encoder.categories_]
    if any(c != list(contract.pages) for c in categories) or encoder.drop_idx_ is not None:
        return None
    scale_ = scale.scale_ if scale.scale_ is not None else np.ones_like(classifier.coef_[0])
    weights = classifier.coef_[0] / scale_
    n = len(contract.pages)
    if weights.shape != (3 * n + 4,):
        return None
    page_weights = np.zeros((n, 3))
    for position in range(3):
        page_weights[:, position] = weights[position * n : (position + 1) * n]
    mean_w, count_w, recency_w, new_w = weights[3 * n :]
    page_index = {page: i for i, page in enumerate(contract.pages)}
    return FoldedScorer(
        page_index=page_index,
        other_row=page_index[contract.other_page],
        page_weights=page_weights,
        mean_spend_weight=float(mean_w),
        count_weight=float(count_w),
        recency_weight=float(recency_w),
        recency_scale_days=contract.recency_scale_days,
        new_user_weight=float(new_w),
        intercept=float(classifier.intercept_[0]),
    )


def _known_transformers(fitted: dict, contract: FeatureContract) -> bool:
    pages, spend, recency_step, flags = (fitted[name][0] for name in ("pages", "spend", "recency", "flags"))
    return (
        isinstance(pages, OneHotEncoder) and pages.handle_unknown == "ignore"
        and isinstance(spend, FunctionTransformer) and spend.func is np.log1p and not spend.kw_args
        and isinstance(recency_step, FunctionTransformer) and recency_step.func is recency
        and recency_step.kw_args == {"scale_days": contract.recency_scale_days}
        # "passthrough" is fitted into an identity FunctionTransformer.
        and (flags == "passthrough" or (isinstance(flags, FunctionTransformer) and flags.func is None))
    )


PARITY_TOLERANCE = 1e-9
RANDOM_PARITY_ROWS = 2_000


def parity_rows(page_names: Sequence[str], cold_days: float, seed: int = 0) -> tuple[list[Pages], NumericInputs]:
    """Canned rows (every page at every position, cold start, extremes) and random ones, for the parity check."""
    rng = np.random.default_rng(seed)
    names = [*page_names, "not-a-known-page"]
    pages: list[Pages] = [
        (names[i % len(names)], names[(i * 7 + 3) % len(names)], names[(i * 13 + 5) % len(names)]) for i in range(len(names) * 3)
    ]
    users = [[0.0, 0.0, cold_days, 1.0], [0.0, 0.0, 0.0, 0.0], [1e6, 1e4, 0.0, 0.0], [5.0, 1.0, 3650.0, 0.0]]
    users += [[0.0, 0.0, cold_days, 1.0]] * (len(pages) - len(users))
    pages += [tuple(rng.choice(names, 3)) for _ in range(RANDOM_PARITY_ROWS)]
    random_users = np.column_stack([
        rng.uniform(0, 500, RANDOM_PARITY_ROWS), rng.integers(0, 60, RANDOM_PARITY_ROWS),
        rng.uniform(0, 400, RANDOM_PARITY_ROWS), rng.integers(0, 2, RANDOM_PARITY_ROWS),
    ])
    table = np.vstack([np.array(users, dtype=np.float64), random_users])
    return pages, NumericInputs(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def largest_difference(scorer: FoldedScorer, reference: Callable[[list[Pages], NumericInputs], np.ndarray],
                       page_names: Sequence[str], cold_days: float) -> float:
    """The largest |folded − predict_proba| over the parity rows; `reference(pages, numbers)` is predict_proba."""
    pages, numbers = parity_rows(page_names, cold_days)
    return float(np.max(np.abs(scorer.score(pages, numbers) - reference(pages, numbers))))
