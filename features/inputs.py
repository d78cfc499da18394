"""Model inputs for a batch of events, built by a contract: the one path training and serving share.

Everything after these raw columns lives inside the saved Pipeline (or its folded numpy form),
so the artifact carries it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract import FeatureContract
from features.event_time import days_since_last_purchase
from features.user import UserFeatures

Pages = tuple[str, str, str]


@dataclass(frozen=True)
class NumericInputs:
    mean_last_3_purchases: np.ndarray
    purchase_count: np.ndarray
    days_since_last_purchase: np.ndarray
    is_new_user: np.ndarray


def numeric_inputs(
    contract: FeatureContract, users: Sequence[UserFeatures | None], event_at_s: Sequence[float] | np.ndarray
) -> NumericInputs:
    """One row per event: `users[i]` is the store's features of event i's user, None for a cold-start
    user (who gets the contract's values), and `event_at_s[i]` its timestamp in seconds since the epoch."""
    cold = contract.cold_start
    cold_row = (cold["mean_last_3_purchases"], cold["purchase_count"], np.nan, 1.0)
    rows = [cold_row if user is None else user for user in users]
    table = np.fromiter(itertools.chain.from_iterable(rows), np.float64, 4 * len(rows)).reshape(-1, 4)
    is_new = table[:, 3]
    with np.errstate(invalid="ignore"):  # the cold rows' NaN moments, replaced just below
        days = days_since_last_purchase(table[:, 2], np.asarray(event_at_s, dtype=np.float64))
    days = np.where(is_new > 0.5, cold["days_since_last_purchase"], days)
    return NumericInputs(table[:, 0], table[:, 1], days, is_new)


def known_pages(contract: FeatureContract, pages: Pages) -> Pages:
    """The pages as the contract's vocabulary reads them: anything outside it is `other_page`."""
    vocabulary = contract.pages
    if pages[0] in vocabulary and pages[1] in vocabulary and pages[2] in vocabulary:
        return pages
    other = contract.other_page
    return (
        pages[0] if pages[0] in vocabulary else other,
        pages[1] if pages[1] in vocabulary else other,
        pages[2] if pages[2] in vocabulary else other,
    )


def feature_frame(
    contract: FeatureContract, pages: Sequence[Pages], users: Sequence[UserFeatures | None], event_at_s: Sequence[float] | np.ndarray
) -> pd.DataFrame:
    """The raw feature columns in the contract's order, one row per event."""
    return frame_from_inputs(contract, pages, numeric_inputs(contract, users, event_at_s))


def frame_from_inputs(contract: FeatureContract, pages: Sequence[Pages], numbers: NumericInputs) -> pd.DataFrame:
    read = [known_pages(contract, p) for p in pages]
    page_1, page_2, page_3 = zip(*read, strict=True) if read else ((), (), ())
    columns = {
        "page_1": pd.Series(page_1, dtype=object),
        "page_2": pd.Series(page_2, dtype=object),
        "page_3": pd.Series(page_3, dtype=object),
        "mean_last_3_purchases": numbers.mean_last_3_purchases,
        "purchase_count": numbers.purchase_count,
        "days_since_last_purchase": numbers.days_since_last_purchase,
        "is_new_user": numbers.is_new_user,
    }
    return pd.DataFrame({name: columns[name] for name in contract.features}, columns=list(contract.features))
