"""The documented true purchase probability that synthetic training labels are drawn from.

The original write-up drew labels at random, so its model had nothing to learn. Here a label is a
coin flip with this probability, so a model can be checked against the best possible one (the
"oracle" that knows these probabilities).

    logit = -2.6
            + 2.4 if the current page is checkout, + 1.3 if it is cart, + 0.4 if it is product
            + 0.7 if cart was one of the two pages before
            - 0.5 if the current page is help
            + 0.45 * (ln(1 + mean of the last three purchases) - 3.5)   for returning users
            + 0.3 * ln(1 + purchase count)
            + 1.1 * exp(-days from the last purchase to the event / 30)
            - 0.6 if the user has no purchase history
    p = 1 / (1 + exp(-logit))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.event_time import recency

BASE_LOGIT = -2.6
CURRENT_PAGE_EFFECT = {"checkout": 2.4, "cart": 1.3, "product": 0.4, "help": -0.5}
CART_EARLIER_EFFECT = 0.7
SPEND_EFFECT = 0.45
SPEND_CENTRE = 3.5
COUNT_EFFECT = 0.3
RECENCY_EFFECT = 1.1
NEW_USER_EFFECT = -0.6
# The world's own fading time; a model's contract carries the scale it assumes (the same by default).
RECENCY_SCALE_DAYS = 30.0


def true_purchase_probability(features: pd.DataFrame) -> np.ndarray:
    """The ground-truth probability for each row of a `features.inputs.feature_frame`."""
    current = features["page_3"].map(CURRENT_PAGE_EFFECT).fillna(0.0).to_numpy(dtype=np.float64)
    cart_earlier = ((features["page_1"] == "cart") | (features["page_2"] == "cart")).to_numpy(dtype=np.float64)
    is_new = features["is_new_user"].to_numpy(dtype=np.float64)
    spend = np.log1p(features["mean_last_3_purchases"].to_numpy(dtype=np.float64)) - SPEND_CENTRE
    logit = (
        BASE_LOGIT
        + current
        + CART_EARLIER_EFFECT * cart_earlier
        + SPEND_EFFECT * spend * (1.0 - is_new)
        + COUNT_EFFECT * np.log1p(features["purchase_count"].to_numpy(dtype=np.float64))
        + RECENCY_EFFECT * recency(features["days_since_last_purchase"].to_numpy(), RECENCY_SCALE_DAYS)
        + NEW_USER_EFFECT * is_new
    )
    return 1.0 / (1.0 + np.exp(-logit))
