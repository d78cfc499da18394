"""The rule that decides whether a model trained on served events may replace the serving one, and how fair its comparison is."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from model.comparison import AUC_TOLERANCE, LOG_LOSS_TOLERANCE, Comparison, Scores, Tolerance, scores
from model.logged import ServingModel, trained_on_holdout
from tests.factories import small_feature_table, trained_model

# Binary fractions, so "exactly at the tolerance" is exact in floating point.
SERVING = Scores(roc_auc=0.75, log_loss=0.5)
LOOSE = Tolerance(roc_auc=0.125, log_loss=0.0625)


def comparison(new: Scores, serving: Scores | None = SERVING, tolerance: Tolerance = LOOSE) -> Comparison:
    return Comparison(rows=1_000, new=new, serving=serving, serving_version=None if serving is None else "v-serving",
                      tolerance=tolerance)


def test_a_better_model_is_not_worse():
    assert comparison(Scores(0.8, 0.45)).not_worse


def test_a_model_exactly_at_both_tolerances_is_still_not_worse():
    result = comparison(Scores(0.75 - 0.125, 0.5 + 0.0625))
    assert result.not_worse
    assert result.shortfalls() == []


def test_a_lower_auc_beyond_the_tolerance_is_worse_even_with_a_better_log_loss():
    result = comparison(Scores(0.75 - 0.125 - 2**-10, 0.3))
    assert not result.not_worse
    assert not result.auc_ok and result.log_loss_ok
    [reason] = result.shortfalls()
    assert reason.startswith("ROC AUC 0.6240 < 0.7500")


def test_a_higher_log_loss_beyond_the_tolerance_is_worse_even_with_a_better_auc():
    """A model can rank as well and still give probabilities further from the truth."""
    result = comparison(Scores(0.9, 0.5 + 0.0625 + 2**-10))
    assert not result.not_worse
    assert result.auc_ok and not result.log_loss_ok
    [reason] = result.shortfalls()
    assert reason.startswith("log loss 0.5635 > 0.5000")


def test_worse_on_both_names_both():
    result = comparison(Scores(0.5, 0.7))
    assert [reason.split()[0] for reason in result.shortfalls()] == ["ROC", "log"]


def test_with_no_serving_model_there_is_nothing_to_be_worse_than():
    result = comparison(Scores(0.51, 0.69), serving=None)
    assert result.not_worse
    assert result.table()[-1] == "no model serves: nothing to compare with"
    assert "serving_roc_auc" not in result.metrics()


def test_the_default_tolerances_refuse_a_drop_of_a_hundredth():
    """The defaults let a tie through and refuse a measurable loss (see model/comparison.py for why)."""
    assert 0 < AUC_TOLERANCE < 0.01 and 0 < LOG_LOSS_TOLERANCE < 0.01
    tie = Comparison(rows=1_000, new=Scores(0.7480, 0.4420), serving=Scores(0.7500, 0.4400), serving_version="v")
    drop = Comparison(rows=1_000, new=Scores(0.7400, 0.4400), serving=Scores(0.7500, 0.4400), serving_version="v")
    assert tie.not_worse
    assert not drop.not_worse


def test_the_table_sets_the_scores_side_by_side_and_states_the_verdict():
    result = Comparison(rows=500, new=Scores(0.7, 0.45), serving=Scores(0.8, 0.40), serving_version="v-serving",
                        tolerance=LOOSE, as_served=Scores(0.79, 0.41))
    header, new, serving, served, verdict = result.table()
    assert header.split() == ["ROC", "AUC", "log", "loss"]
    assert new.split()[-2:] == ["0.7000", "0.4500"] and new.startswith("new model")
    assert serving.split()[-2:] == ["0.8000", "0.4000"] and "v-serving" in serving
    assert served.split()[-2:] == ["0.7900", "0.4100"]
    assert "not worse" in verdict


def test_the_metrics_and_the_record_carry_every_model_compared():
    result = Comparison(rows=500, new=Scores(0.7, 0.45), serving=Scores(0.8, 0.40), serving_version="v-serving",
                        as_served=Scores(0.79, 0.41))
    assert result.metrics() == {"comparison_rows": 500.0, "serving_roc_auc": 0.8, "serving_log_loss": 0.4,
                                "as_served_roc_auc": 0.79, "as_served_log_loss": 0.41}
    record = result.to_dict()
    assert record["serving_version"] == "v-serving"
    assert record["not_worse"] is False
    assert record["tolerance"] == {"roc_auc": AUC_TOLERANCE, "log_loss": LOG_LOSS_TOLERANCE}


def test_scores_of_a_perfect_ranking_and_of_a_coin():
    labels = np.array([0, 0, 1, 1, 0, 1])
    assert scores(labels, [0.1, 0.2, 0.9, 0.8, 0.3, 0.7]).roc_auc == 1.0
    coin = scores(labels, np.full(6, 0.5))
    assert coin.roc_auc == 0.5
    assert math.isclose(coin.log_loss, math.log(2))


@pytest.mark.parametrize("tolerance", [(-0.001, 0.0), (0.0, float("nan"))])
def test_a_negative_or_missing_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerances must be 0 or more"):
        Tolerance(*tolerance)


@pytest.fixture(scope="module")
def some_model():
    return trained_model(small_feature_table(50), 50, samples=2_000)


def test_a_serving_model_trained_on_part_of_the_hold_out_is_called_out(some_model):
    """Trained by an earlier --from-logged run on events up to 12:00, it has seen a hold-out starting at 11:00."""
    serving = ServingModel(some_model, {"training": {"source": "logged", "holdout_from": "2026-12-05T12:00:00+00:00"}})
    warning = trained_on_holdout(serving, datetime(2026, 12, 5, 11, 0, tzinfo=UTC))
    assert warning is not None and "has seen part of the hold-out" in warning and some_model.version in warning
    assert trained_on_holdout(serving, datetime(2026, 12, 5, 12, 0, tzinfo=UTC)) is None


def test_a_serving_model_trained_on_synthetic_events_has_seen_no_served_event(some_model):
    serving = ServingModel(some_model, {"training": {"samples": 60_000, "users": 10_000, "seed": 7}})
    assert trained_on_holdout(serving, datetime(2026, 12, 5, 11, 0, tzinfo=UTC)) is None
