"""Fit one estimator on one split, measure it on the other, and judge it against the gates."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import sklearn
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from features.contract import FeatureContract
from model.artifact import PurchaseModel, gate_results
from model.calibration import expected_calibration_error
from model.dataset import LabelledData
from model.estimators import build_pipeline
from model.report import Evaluation

HELD_OUT_SHARE = 0.25
# The defaults of `model.train --max-auc-gap / --max-ece`, recorded in model.json and checked
# again by every service that loads the model.
DEFAULT_GATES = {"max_auc_gap_to_oracle": 0.02, "max_ece": 0.02}
# Permutation importance (families without coefficients) on this many held-out rows.
IMPORTANCE_ROWS = 5_000


@dataclass(frozen=True)
class Trained:
    model: PurchaseModel
    metrics: dict[str, float]
    gates: dict[str, float]
    evaluation: Evaluation

    @property
    def passed(self) -> bool:
        return all(passed for _, _, passed in self.evaluation.gates.values())


def train_and_evaluate(
    data: LabelledData, seed: int, estimator: str, contract: FeatureContract, gates: dict[str, float] | None = None
) -> Trained:
    limits = dict(DEFAULT_GATES if gates is None else gates)
    train_x, test_x, train_y, test_y, _, test_truth = train_test_split(
        data.features, data.labels, data.true_probability,
        test_size=HELD_OUT_SHARE, random_state=seed, stratify=data.labels,
    )
    pipeline = build_pipeline(contract, estimator).fit(train_x, train_y)
    predicted = pipeline.predict_proba(test_x)[:, 1]
    metrics = {
        "roc_auc": float(roc_auc_score(test_y, predicted)),
        "log_loss": float(log_loss(test_y, predicted)),
        "brier_score": float(brier_score_loss(test_y, predicted)),
        "ece": expected_calibration_error(test_y, predicted),
        "oracle_roc_auc": float(roc_auc_score(test_y, test_truth)),
        "oracle_log_loss": float(log_loss(test_y, test_truth)),
        "oracle_ece": expected_calibration_error(test_y, test_truth),
        "train_rows": float(len(train_y)),
        "test_rows": float(len(test_y)),
        "positive_rate": float(data.labels.mean()),
    }
    trained_at = datetime.now(UTC)
    digest = hashlib.sha256(pickle.dumps(pipeline)).hexdigest()[:10]
    model = PurchaseModel(
        pipeline=pipeline,
        version=f"{trained_at:%Y%m%dT%H%M%SZ}-{digest}",
        estimator=estimator,
        sklearn_version=sklearn.__version__,
        contract=contract,
    )
    contributions, kind = feature_contributions(pipeline, test_x, test_y, seed)
    evaluation = Evaluation(
        version=model.version, estimator=estimator, labels=np.asarray(test_y), probabilities=predicted,
        oracle_probabilities=np.asarray(test_truth), contributions=contributions, contributions_kind=kind,
        metrics=metrics, gates=gate_results(metrics, limits),
    )
    return Trained(model=model, metrics=metrics, gates=limits, evaluation=evaluation)


def feature_contributions(pipeline: Pipeline, test_x, test_y, seed: int) -> tuple[list[tuple[str, float]], str]:
    """What drives the model: standardised coefficients when it has them, else permutation importance."""
    classifier = pipeline.named_steps["classifier"]
    if isinstance(classifier, LogisticRegression):
        names = pipeline[:-1].get_feature_names_out()
        return [(str(name), float(weight)) for name, weight in zip(names, classifier.coef_[0], strict=True)], "coefficient"
    rows = min(IMPORTANCE_ROWS, len(test_y))
    result = permutation_importance(
        pipeline, test_x.iloc[:rows], np.asarray(test_y)[:rows], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    importances = [(str(name), float(value)) for name, value in zip(test_x.columns, result.importances_mean, strict=True)]
    return importances, "permutation importance"
