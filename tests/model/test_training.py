import numpy as np
import pytest

from model.dataset import make_labelled_data
from model.features import FEATURE_COLUMNS, feature_frame
from model.ground_truth import true_purchase_probability
from model.train import MAX_AUC_GAP_TO_ORACLE, ModelRejected, train_and_evaluate
from offline_store.features import COLD_START, UserFeatures
from tests.factories import small_feature_table


@pytest.fixture(scope="module")
def labelled():
    return make_labelled_data(small_feature_table(400), num_users=400, samples=30_000, seed=5)


def test_feature_frame_has_the_model_columns_in_order():
    """Serving and training build the same raw columns, in the order the artifact records."""
    frame = feature_frame([("home", "cart", "checkout")], [COLD_START])
    assert tuple(frame.columns) == FEATURE_COLUMNS
    assert frame.iloc[0]["page_3"] == "checkout"
    assert frame.iloc[0]["is_new_user"] == 1.0


def test_ground_truth_rewards_checkout_and_recent_buyers():
    """The documented ground truth: checkout beats cart beats home; a recent buyer beats a lapsed one."""
    buyer = UserFeatures(60.0, 5, 2.0, False)
    lapsed = UserFeatures(60.0, 5, 300.0, False)
    frame = feature_frame(
        [("home", "product", "checkout"), ("home", "product", "cart"), ("home", "search", "home"), ("home", "product", "checkout")],
        [buyer, buyer, buyer, lapsed],
    )
    checkout, cart, home, lapsed_checkout = true_purchase_probability(frame)
    assert checkout > cart > home
    assert checkout > lapsed_checkout


def test_labels_follow_the_ground_truth(labelled):
    """The share of positive labels matches the mean true probability (labels are not random noise)."""
    assert abs(labelled.labels.mean() - labelled.true_probability.mean()) < 0.01
    high = labelled.true_probability > 0.5
    assert labelled.labels[high].mean() > 0.5 > labelled.labels[~high].mean()


def test_training_gets_within_reach_of_the_oracle(labelled):
    """The model's held-out ROC AUC is within the allowed gap of the true probabilities' AUC."""
    model, metrics = train_and_evaluate(labelled, seed=5)
    assert metrics["oracle_roc_auc"] - metrics["roc_auc"] <= MAX_AUC_GAP_TO_ORACLE
    assert metrics["roc_auc"] > 0.65
    assert 0 < metrics["brier_score"] < 0.25
    assert model.version and model.features == FEATURE_COLUMNS


def test_a_model_that_learned_nothing_is_rejected(labelled):
    """Features shuffled away from their labels leave nothing to learn, and that model is refused."""
    rng = np.random.default_rng(0)
    shuffled_features = labelled.features.iloc[rng.permutation(len(labelled.labels))].reset_index(drop=True)
    shuffled = type(labelled)(shuffled_features, labelled.true_probability, labelled.labels)
    with pytest.raises(ModelRejected, match="below the oracle"):
        train_and_evaluate(shuffled, seed=5)
