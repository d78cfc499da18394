"""A numpy scorer folded out of the fitted Pipeline, for the serving hot path.

`predict_proba` on the Pipeline costs 10–16 ms per call whatever the batch size (a pandas
DataFrame and the ColumnTransformer), while the model is a logistic regression over one-hot
pages and three transformed numbers. Folded, the page one-hots become index lookups into the
fitted coefficients with the scaler divided in, and a batch of 500 scores in about a
millisecond. The Pipeline stays the artifact and the training path; `fold_pipeline` returns
None for any Pipeline whose shape it does not recognise, and the caller falls back to it.
Parity with `predict_proba` is checked when the model loads (`check_parity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from model.features import FLAG_COLUMNS, PAGE_COLUMNS, RECENCY_COLUMNS, SPEND_COLUMNS, recency

# Ten pages make a thousand triples; names outside the vocabulary are folded into `other` before
# scoring, so this bound only matters for callers that pass raw names.
MAX_REMEMBERED_PAGE_TRIPLES = 100_000

# What the folded form assumes of each ColumnTransformer step, by name: its columns and kind.
EXPECTED_STEPS = {
    "pages": list(PAGE_COLUMNS),
    "spend": list(SPEND_COLUMNS),
    "recency": list(RECENCY_COLUMNS),
    "flags": list(FLAG_COLUMNS),
}


@dataclass(frozen=True)
class FoldedScorer:
    """logit = intercept + Σ page weights + spend, recency and flag weights; p = expit(logit)."""

    page_index: dict[str, int]  # page name → row of `page_weights`; unknown pages get the last (zero) row
    page_weights: np.ndarray  # (categories + 1, 3): column i is page position i
    mean_spend_weight: float
    count_weight: float
    recency_weight: float
    new_user_weight: float
    intercept: float
    _pages_logit: dict[tuple[str, str, str], float] = field(default_factory=dict, repr=False, compare=False)

    def score(
        self,
        pages: Sequence[tuple[str, str, str]],
        mean_last_3: np.ndarray,
        purchase_count: np.ndarray,
        days_since: np.ndarray,
        is_new: np.ndarray,
    ) -> np.ndarray:
        known = self._pages_logit
        try:
            page_part = np.array([known[p] for p in pages], dtype=np.float64)
        except KeyError:  # a page triple not seen yet: remember it, then go again
            page_part = np.array([known[p] if p in known else self._page_logit(p) for p in pages], dtype=np.float64)
        logit = (
            page_part
            + self.mean_spend_weight * np.log1p(mean_last_3)
            + self.count_weight * np.log1p(purchase_count)
            + self.recency_weight * recency(days_since)
            + self.new_user_weight * is_new
            + self.intercept
        )
        return expit(logit)

    def _page_logit(self, pages: tuple[str, str, str]) -> float:
        """The three pages' share of the logit, remembered: there are only so many page triples."""
        unknown = len(self.page_index)
        rows = [self.page_index.get(page, unknown) for page in pages]
        value = float(self.page_weights[rows[0], 0] + self.page_weights[rows[1], 1] + self.page_weights[rows[2], 2])
        if len(self._pages_logit) < MAX_REMEMBERED_PAGE_TRIPLES:
            self._pages_logit[pages] = value
        return value


def fold_pipeline(pipeline: Pipeline) -> FoldedScorer | None:
    """The Pipeline as a FoldedScorer, or None when its shape is not the one `build_pipeline` makes."""
    steps = dict(pipeline.steps)
    columns, scale, classifier = steps.get("columns"), steps.get("scale"), steps.get("classifier")
    if not (
        isinstance(columns, ColumnTransformer) and isinstance(scale, StandardScaler)
        and isinstance(classifier, LogisticRegression) and list(steps) == ["columns", "scale", "classifier"]
        and classifier.coef_.shape[0] == 1 and not scale.with_mean
    ):
        return None
    fitted = {name: (transformer, list(cols)) for name, transformer, cols in columns.transformers_ if name != "remainder"}
    if {name: cols for name, (_, cols) in fitted.items()} != EXPECTED_STEPS or not _known_transformers(fitted):
        return None
    encoder: OneHotEncoder = fitted["pages"][0]
    categories = [list(c) for c in encoder.categories_]
    if any(c != categories[0] for c in categories) or encoder.drop_idx_ is not None:
        return None
    scale_ = scale.scale_ if scale.scale_ is not None else np.ones_like(classifier.coef_[0])
    weights = classifier.coef_[0] / scale_
    n = len(categories[0])
    if weights.shape != (3 * n + 4,):
        return None
    page_weights = np.zeros((n + 1, 3))
    for position in range(3):
        page_weights[:n, position] = weights[position * n : (position + 1) * n]
    mean_w, count_w, recency_w, new_w = weights[3 * n :]
    return FoldedScorer(
        page_index={page: i for i, page in enumerate(categories[0])},
        page_weights=page_weights,
        mean_spend_weight=float(mean_w),
        count_weight=float(count_w),
        recency_weight=float(recency_w),
        new_user_weight=float(new_w),
        intercept=float(classifier.intercept_[0]),
    )


def _known_transformers(fitted: dict) -> bool:
    pages, spend, recency_step, flags = (fitted[name][0] for name in ("pages", "spend", "recency", "flags"))
    return (
        isinstance(pages, OneHotEncoder) and pages.handle_unknown == "ignore"
        and isinstance(spend, FunctionTransformer) and spend.func is np.log1p
        and isinstance(recency_step, FunctionTransformer) and recency_step.func is recency
        # "passthrough" is fitted into an identity FunctionTransformer.
        and (flags == "passthrough" or (isinstance(flags, FunctionTransformer) and flags.func is None))
        and not any(getattr(step, "kw_args", None) for step in (spend, recency_step))
    )


PARITY_TOLERANCE = 1e-9
RANDOM_PARITY_ROWS = 2_000


def parity_rows(page_names: Sequence[str], seed: int = 0) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """Canned rows (every page at every position, cold start, extremes) and random ones, for the parity check."""
    rng = np.random.default_rng(seed)
    names = [*page_names, "not-a-known-page"]
    pages = [(names[i % len(names)], names[(i * 7 + 3) % len(names)], names[(i * 13 + 5) % len(names)]) for i in range(len(names) * 3)]
    users = [[0.0, 0.0, 365.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1e6, 1e4, 0.0, 0.0], [5.0, 1.0, 3650.0, 0.0]]
    users += [[0.0, 0.0, 365.0, 1.0]] * (len(pages) - len(users))
    random_pages = [tuple(rng.choice(names, 3)) for _ in range(RANDOM_PARITY_ROWS)]
    random_users = np.column_stack([
        rng.uniform(0, 500, RANDOM_PARITY_ROWS), rng.integers(0, 60, RANDOM_PARITY_ROWS),
        rng.uniform(0, 400, RANDOM_PARITY_ROWS), rng.integers(0, 2, RANDOM_PARITY_ROWS),
    ])
    return pages + random_pages, np.vstack([np.array(users, dtype=np.float64), random_users])


def largest_difference(scorer: FoldedScorer, pipeline_predict, page_names: Sequence[str]) -> float:
    """The largest |folded − predict_proba| over the parity rows; `pipeline_predict(pages, table)` is the reference."""
    pages, table = parity_rows(page_names)
    folded = scorer.score(pages, table[:, 0], table[:, 1], table[:, 2], table[:, 3])
    return float(np.max(np.abs(folded - pipeline_predict(pages, table))))
