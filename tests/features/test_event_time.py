"""Event-time features: an event's inputs depend on its own timestamp and the store's moments, never on when it is processed.

A user last bought at T, which is also when the store was built. Events dated before, at and after
T get the ages the documented rule gives, and the model scores them as it scores a frame built by
hand with those ages.
"""

import time

import numpy as np
import pandas as pd
import pytest

from features.contract import BUILDABLE_COLUMNS, DEFAULT_COLD_START, FeatureContract
from features.event_time import SECONDS_PER_DAY, days_since_last_purchase
from features.inputs import feature_frame, numeric_inputs
from features.user import UserFeatures
from tests.factories import small_feature_table, trained_model

T = 1_780_000_000.0  # the last purchase the store knows of, and the store's build time
DAY = SECONDS_PER_DAY
USER = UserFeatures(mean_last_3_purchases=80.0, purchase_count=6, last_purchase_at=T)
PAGES = ("home", "product", "cart")
# A day before the purchase (a late or replayed event: clamped to age 0), at it, and 10 and 60 days after.
EVENT_AT = [T - DAY, T, T + 10 * DAY, T + 60 * DAY]
AGES = [0.0, 0.0, 10.0, 60.0]


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200, now_s=T), num_users=200, built_at_s=T).with_fast_path()


def frame_with_ages(ages: list[float]) -> pd.DataFrame:
    """The raw columns written out by hand, not through features/inputs.py."""
    rows = [(*PAGES, USER.mean_last_3_purchases, float(USER.purchase_count), age, 0.0) for age in ages]
    return pd.DataFrame(rows, columns=list(BUILDABLE_COLUMNS))


def test_ages_are_days_from_the_last_purchase_to_the_event_and_never_negative():
    """Before the purchase counts as age 0 (the documented rule), then whole days after it."""
    assert days_since_last_purchase(np.full(4, T), np.array(EVENT_AT)).tolist() == AGES
    numbers = numeric_inputs(FeatureContract(), [USER] * 4, EVENT_AT)
    assert numbers.days_since_last_purchase.tolist() == AGES
    assert numbers.is_new_user.tolist() == [0.0] * 4


def test_the_models_probabilities_are_those_of_a_frame_with_those_ages(model):
    """Folded scorer and Pipeline both give predict_proba on the hand-built frame, to 1e-9."""
    expected = model.pipeline.predict_proba(frame_with_ages(AGES))[:, 1]
    served = model.predict([PAGES] * 4, [USER] * 4, EVENT_AT)
    reference = model.predict_with_pipeline([PAGES] * 4, [USER] * 4, EVENT_AT)
    assert model.scorer is not None
    assert np.max(np.abs(served - expected)) <= 1e-9
    assert np.max(np.abs(reference - expected)) <= 1e-9
    assert served[0] == served[1] > served[2] > served[3], "age 0 twice, then fading with age"


def test_the_same_event_processed_twice_gets_identical_probabilities(model, monkeypatch):
    """Processed again later, alone or in another batch, an event scores exactly as it did the first time."""
    first = model.predict([PAGES], [USER], [T + 10 * DAY])
    monkeypatch.setattr(time, "time", lambda: T + 400 * DAY)  # the wall clock is no input
    again = model.predict([PAGES], [USER], [T + 10 * DAY])
    in_a_batch = model.predict([("help", "help", "help"), PAGES], [None, USER], [T, T + 10 * DAY])[1]
    assert first[0] == again[0] == in_a_batch


CUSTOM_COLD_START = FeatureContract(cold_start={**DEFAULT_COLD_START, "days_since_last_purchase": 90.0})


@pytest.mark.parametrize("contract", [FeatureContract(), CUSTOM_COLD_START], ids=["default", "custom cold start"])
def test_a_cold_start_user_gets_the_contracts_values_whatever_the_timestamp(contract):
    """No history: the contract's cold-start values, at the epoch, at T and a decade later alike."""
    times = [0.0, T - DAY, T, T + 3650 * DAY]
    numbers = numeric_inputs(contract, [None] * len(times), times)
    cold = contract.cold_start
    assert numbers.mean_last_3_purchases.tolist() == [cold["mean_last_3_purchases"]] * len(times)
    assert numbers.purchase_count.tolist() == [cold["purchase_count"]] * len(times)
    assert numbers.days_since_last_purchase.tolist() == [cold["days_since_last_purchase"]] * len(times)
    assert numbers.is_new_user.tolist() == [1.0] * len(times)


def test_a_cold_start_users_probability_does_not_move_with_time(model):
    """The model scores a cold-start event the same whenever it is dated, as it does the contract's values."""
    times = [0.0, T - DAY, T, T + 3650 * DAY]
    served = model.predict([PAGES] * len(times), [None] * len(times), times)
    expected = model.pipeline.predict_proba(feature_frame(model.contract, [PAGES], [None], [T]))[0, 1]
    assert np.max(np.abs(served - expected)) <= 1e-9
    assert np.all(served == served[0])
