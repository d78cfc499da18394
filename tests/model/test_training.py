"""Labelled data, the ground truth it is drawn from, and training judged against its gates."""

import time

import numpy as np
import pytest

from features.contract import BUILDABLE_COLUMNS, DEFAULT_COLD_START, FeatureContract
from features.event_time import SECONDS_PER_DAY
from features.inputs import feature_frame
from features.user import UserFeatures
from model.dataset import EVENT_SPAN_DAYS, make_labelled_data
from model.estimators import build_pipeline
from model.evaluation import DEFAULT_GATES, train_and_evaluate
from model.ground_truth import true_purchase_probability
from tests.factories import small_feature_table

NOW = time.time()
USERS = 400


@pytest.fixture(scope="module")
def labelled():
    return make_labelled_data(FeatureContract(), small_feature_table(USERS, now_s=NOW), num_users=USERS, samples=30_000, seed=5,
                              built_at_s=NOW)


def test_feature_frame_has_the_contracts_columns_in_order():
    """Serving and training build the same raw columns, in the order the contract records; cold start gets its values."""
    frame = feature_frame(FeatureContract(), [("home", "cart", "checkout")], [None], [NOW])
    assert tuple(frame.columns) == BUILDABLE_COLUMNS
    assert frame.iloc[0]["page_3"] == "checkout"
    assert frame.iloc[0]["is_new_user"] == 1.0
    assert frame.iloc[0]["days_since_last_purchase"] == DEFAULT_COLD_START["days_since_last_purchase"]


def test_ground_truth_rewards_checkout_and_recent_buyers():
    """The documented ground truth: checkout beats cart beats home; a recent buyer beats a lapsed one."""
    buyer = UserFeatures(60.0, 5, NOW - 2 * SECONDS_PER_DAY)
    lapsed = UserFeatures(60.0, 5, NOW - 300 * SECONDS_PER_DAY)
    frame = feature_frame(
        FeatureContract(),
        [("home", "product", "checkout"), ("home", "product", "cart"), ("home", "search", "home"), ("home", "product", "checkout")],
        [buyer, buyer, buyer, lapsed],
        [NOW] * 4,
    )
    checkout, cart, home, lapsed_checkout = true_purchase_probability(frame)
    assert checkout > cart > home
    assert checkout > lapsed_checkout


def test_training_events_fall_in_the_weeks_after_the_store_was_built(labelled):
    """Known users' ages run from their age at the build to EVENT_SPAN_DAYS later, as served events' do."""
    table = small_feature_table(USERS, now_s=NOW)
    known = labelled.features[labelled.features["is_new_user"] == 0.0]
    oldest_at_build = max((NOW - user.last_purchase_at) / SECONDS_PER_DAY for user in table.values())
    assert known["days_since_last_purchase"].min() >= 0.0
    assert known["days_since_last_purchase"].max() <= oldest_at_build + EVENT_SPAN_DAYS
    assert known["days_since_last_purchase"].max() > oldest_at_build + EVENT_SPAN_DAYS / 2, "events are dated weeks after the build"
    cold = labelled.features[labelled.features["is_new_user"] == 1.0]
    assert len(cold) > 0 and (cold["days_since_last_purchase"] == DEFAULT_COLD_START["days_since_last_purchase"]).all()


def test_labels_follow_the_ground_truth(labelled):
    """The share of positive labels matches the mean true probability (labels are not random noise)."""
    assert abs(labelled.labels.mean() - labelled.true_probability.mean()) < 0.01
    high = labelled.true_probability > 0.5
    assert labelled.labels[high].mean() > 0.5 > labelled.labels[~high].mean()


def test_training_gets_within_reach_of_the_oracle(labelled):
    """The model's held-out ROC AUC is within the allowed gap of the true probabilities' AUC, and it passes its gates."""
    trained = train_and_evaluate(labelled, 5, "logistic_regression", FeatureContract())
    metrics = trained.metrics
    assert trained.passed
    assert trained.gates == DEFAULT_GATES
    assert metrics["oracle_roc_auc"] - metrics["roc_auc"] <= DEFAULT_GATES["max_auc_gap_to_oracle"]
    assert metrics["ece"] <= DEFAULT_GATES["max_ece"]
    assert metrics["roc_auc"] > 0.65
    assert 0 < metrics["brier_score"] < 0.25
    assert trained.model.version and trained.model.estimator == "logistic_regression"
    assert trained.model.contract == FeatureContract()


def test_a_model_that_learned_nothing_is_rejected(labelled):
    """Features shuffled away from their labels leave nothing to learn, and that model fails the AUC gate."""
    rng = np.random.default_rng(0)
    shuffled_features = labelled.features.iloc[rng.permutation(len(labelled.labels))].reset_index(drop=True)
    shuffled = type(labelled)(shuffled_features, labelled.true_probability, labelled.labels)
    trained = train_and_evaluate(shuffled, 5, "logistic_regression", FeatureContract())
    assert not trained.passed
    _gap, _limit, passed = trained.evaluation.gates["max_auc_gap_to_oracle"]
    assert not passed


def test_an_unknown_estimator_is_refused_with_the_choices():
    """A family name not in ESTIMATORS says which ones exist."""
    with pytest.raises(ValueError, match="logistic_regression"):
        build_pipeline(FeatureContract(), "deep_forest")
