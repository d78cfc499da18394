"""Training on what was served: the labelled data of `python -m model.train --from-logged`, the fit on
it, and the comparison with the serving model.

1. The served events are read back from Kafka (model/served_data.py).
2. MySQL computes each event's features as of the event and its label, a purchase in (event
   time, event time + LABEL_WINDOW_S], from `purchases` (offline_store/point_in_time.sql). Only
   events whose window has closed are used (offline_store/point_in_time.label_horizon).
3. The model is fitted on the older events and held out on the most recent ones, by event time:
   what it will meet next is later than anything it learned from, so a random split would flatter it.
4. The serving model (MODEL_URI) is scored on the same hold-out; model/comparison.py decides
   whether the new model is not worse.

The "oracle" of the gates and the report is model/ground_truth.py's probability on each event's
point-in-time features: the world the synthetic purchases (`producer.py --outcomes`) are drawn from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from config import Settings
from features.contract import FeatureContract
from features.inputs import Pages, feature_frame
from features.user import UserFeatures
from model.artifact import PurchaseModel, gate_results, load_model, read_metadata
from model.calibration import expected_calibration_error
from model.comparison import Comparison, Scores, Tolerance, scores
from model.estimators import build_pipeline
from model.evaluation import Trained, feature_contributions
from model.ground_truth import true_purchase_probability
from model.report import Evaluation
from model.served_data import DEFAULT_MAX_EVENTS, NoServedData, ReadCounts, read_served
from model.sources import NoModelYet, open_model_source
from offline_store.mysql import close_pool, create_pool
from offline_store.point_in_time import ServedEventRows, label_horizon, latest_purchase_at, point_in_time

log = logging.getLogger(__name__)

# The new model is worse than the serving one on the hold-out: nothing registered.
EXIT_WORSE = 3
DEFAULT_HOLDOUT_FRACTION = 0.25
# Fewer labelled events than this say nothing reliable about a model, whatever their labels.
MIN_LABELLED_EVENTS = 200
# Each side of the split needs this many of each class: an ROC curve needs both, and a handful
# of purchases makes the comparison a coin flip.
MIN_PER_CLASS = 10


@dataclass(frozen=True)
class LoggedOptions:
    since: datetime | None = None  # None: from the start of the topics
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    max_events: int = DEFAULT_MAX_EVENTS
    tolerance: Tolerance = field(default_factory=Tolerance)


# eq=False: the fields include arrays, whose == is elementwise.
@dataclass(frozen=True, eq=False)
class LabelledServed:
    """Served events whose label window has closed, oldest first, with their point-in-time features."""

    pages: list[Pages]
    users: list[UserFeatures | None]  # as of each event; None for a user who had bought nothing yet
    event_at_s: np.ndarray
    features: pd.DataFrame  # the contract's raw columns
    labels: np.ndarray  # int8
    true_probability: np.ndarray  # model/ground_truth.py on the same features
    served_probability: np.ndarray  # what the service published
    served_events: int  # before keeping only the closed windows
    horizon: datetime  # windows ending by then are closed
    counts: ReadCounts  # what the read of the topics found

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Rows [0, at) train, rows [at, rows) are the hold-out: the most recent events."""

    rows: int
    at: int

    def holdout_from(self, data: LabelledServed) -> datetime:
        """The event time of the oldest held-out event."""
        return datetime.fromtimestamp(float(data.event_at_s[self.at]), UTC)

    @property
    def holdout_rows(self) -> int:
        return self.rows - self.at


def split_by_time(labels: np.ndarray, holdout_fraction: float) -> Split:
    """Hold out the most recent `holdout_fraction` of rows (sorted by event time); NoServedData when
    either side is too small or lacks a class, saying what to do."""
    rows = len(labels)
    if rows < MIN_LABELLED_EVENTS:
        raise NoServedData(
            f"only {rows} served events have a closed label window, at least {MIN_LABELLED_EVENTS} are needed:"
            " read further back (--since, --hours), or wait for more traffic and for the label windows to close"
        )
    at = rows - round(rows * holdout_fraction)
    for side, part in (("training", labels[:at]), ("hold-out", labels[at:])):
        positives = int(np.count_nonzero(part))
        negatives = len(part) - positives
        if min(positives, negatives) < MIN_PER_CLASS:
            raise NoServedData(
                f"the {side} events ({len(part)} of {rows}) hold {positives} purchases and {negatives} non-purchases,"
                f" at least {MIN_PER_CLASS} of each are needed: read further back (--since, --hours)"
                + (" or change --holdout-fraction" if len(part) < rows else "")
                + ("" if labels.any() else " (no purchase at all: are purchases reaching the offline store?)")
            )
    return Split(rows, at)


async def gather_labelled(settings: Settings, options: LoggedOptions, contract: FeatureContract, now: datetime) -> LabelledServed:
    """Read the served events, then label them and take their features as of each event, in MySQL."""
    history = await read_served(settings, options.since, options.max_events)
    counts = history.counts
    log.info("read %d predictions from %s (%d repeated, %d unreadable) and %d events from %s: %d served events joined",
             counts.predictions, settings.output_topic, counts.duplicate_predictions, counts.unreadable_predictions,
             counts.events, settings.input_topic, len(history))
    if not len(history):
        raise NoServedData(f"no prediction on {settings.output_topic} has its event on {settings.input_topic}: nothing to train on")
    pool = await create_pool(settings)
    try:
        horizon = label_horizon(await latest_purchase_at(pool), now, settings.label_late_allowance_s)
        if horizon is None:
            raise NoServedData("the offline store holds no purchase at all, so no served event can be labelled:"
                               " are purchases reaching it (the purchase sink)?")
        rows = ServedEventRows(history.user_ids, history.event_times())
        found = await point_in_time(pool, rows, settings.label_window_s, horizon)
    finally:
        await close_pool(pool)
    keep = np.flatnonzero(found.labelled)
    users: list[UserFeatures | None] = [
        UserFeatures(float(found.mean_last_3_purchases[i]), int(found.purchase_count[i]), float(found.last_purchase_at_s[i]), False)
        if found.purchase_count[i] else None
        for i in keep.tolist()
    ]
    pages = [history.pages[i] for i in keep.tolist()]
    event_at_s = history.event_at_s[keep]
    features = feature_frame(contract, pages, users, event_at_s)
    return LabelledServed(
        pages=pages,
        users=users,
        event_at_s=event_at_s,
        features=features,
        labels=found.labels[keep],
        true_probability=true_purchase_probability(features),
        served_probability=history.probabilities[keep],
        served_events=len(history),
        horizon=horizon,
        counts=history.counts,
    )


def fit_on_split(data: LabelledServed, split: Split, seed: int, estimator: str, contract: FeatureContract,
                 gates: dict[str, float]) -> Trained:
    """Fit on the older rows and measure on the hold-out, recording the metrics, gates and report data
    that model/evaluation.py's train_and_evaluate records after its random split, so the model is
    judged, served and listed like any other."""
    at = split.at
    train_x, test_x = data.features.iloc[:at], data.features.iloc[at:].reset_index(drop=True)
    train_y, test_y, test_truth = data.labels[:at], data.labels[at:], data.true_probability[at:]
    pipeline = build_pipeline(contract, estimator).fit(train_x, train_y)
    predicted = pipeline.predict_proba(test_x)[:, 1]
    metrics = {
        "roc_auc": float(roc_auc_score(test_y, predicted)),
        "log_loss": float(log_loss(test_y, predicted, labels=[0, 1])),
        "brier_score": float(brier_score_loss(test_y, predicted)),
        "ece": expected_calibration_error(test_y, predicted),
        "oracle_roc_auc": float(roc_auc_score(test_y, test_truth)),
        "oracle_log_loss": float(log_loss(test_y, test_truth, labels=[0, 1])),
        "oracle_ece": expected_calibration_error(test_y, test_truth),
        "train_rows": float(at),
        "test_rows": float(split.holdout_rows),
        "positive_rate": float(data.labels.mean()),
    }
    trained_at = datetime.now(UTC)
    digest = hashlib.sha256(pickle.dumps(pipeline)).hexdigest()[:10]
    model = PurchaseModel(pipeline=pipeline, version=f"{trained_at:%Y%m%dT%H%M%SZ}-{digest}", estimator=estimator,
                          sklearn_version=sklearn.__version__, contract=contract)
    contributions, kind = feature_contributions(pipeline, test_x, test_y, seed)
    evaluation = Evaluation(
        version=model.version, estimator=estimator, labels=np.asarray(test_y), probabilities=predicted,
        oracle_probabilities=np.asarray(test_truth), contributions=contributions, contributions_kind=kind,
        metrics=metrics, gates=gate_results(metrics, gates),
    )
    return Trained(model=model, metrics=metrics, gates=dict(gates), evaluation=evaluation)


@dataclass(frozen=True)
class ServingModel:
    model: PurchaseModel
    metadata: dict[str, Any]  # its model.json


def load_serving(settings: Settings) -> ServingModel | None:
    """The model MODEL_URI serves, checked as a service checks it; None when nothing serves yet."""
    source = open_model_source(settings.model_uri, mlflow_tracking_uri=settings.mlflow_tracking_uri)
    try:
        candidate = source.fetch()
    except NoModelYet as exc:
        log.warning("%s; the new model is compared with nothing", exc)
        return None
    log.info("comparing with the serving model, %s", candidate.label)
    model = load_model(candidate.artifact_path, expected_sha256=candidate.expected_sha256)
    return ServingModel(model, read_metadata(candidate.artifact_path))


def trained_on_holdout(serving: ServingModel, holdout_from: datetime) -> str | None:
    """Why the serving model's scores on the hold-out are flattered, when it was trained on served events
    that fall in it (an earlier --from-logged run over an overlapping range); None when it was not."""
    training = serving.metadata.get("training")
    trained_before = training.get("holdout_from") if isinstance(training, dict) and training.get("source") == "logged" else None
    try:
        if not isinstance(trained_before, str) or datetime.fromisoformat(trained_before) <= holdout_from:
            return None
    except ValueError:  # a model.json edited by hand: nothing to go by
        return None
    return (f"the serving model {serving.model.version} was trained on served events up to {trained_before}, after the"
            f" hold-out starts ({holdout_from.isoformat(timespec='seconds')}): it has seen part of the hold-out, so its scores"
            " there are flattered; a later --since, or a smaller --holdout-fraction, compares them fairly")


def compare(data: LabelledServed, split: Split, trained: Trained, serving: ServingModel | None, tolerance: Tolerance) -> Comparison:
    """The new model, the serving model and what was served, on the same hold-out rows."""
    at = split.at
    labels = data.labels[at:]
    serving_scores: Scores | None = None
    if serving is not None:
        # Scored through its own contract, as the service would score these events with these features.
        probabilities = serving.model.predict(data.pages[at:], data.users[at:], data.event_at_s[at:])
        serving_scores = scores(labels, probabilities)
    return Comparison(
        rows=split.holdout_rows,
        new=Scores(roc_auc=trained.metrics["roc_auc"], log_loss=trained.metrics["log_loss"]),
        serving=serving_scores,
        serving_version=None if serving is None else serving.model.version,
        tolerance=tolerance,
        as_served=scores(labels, data.served_probability[at:]),
    )


def with_comparison(trained: Trained, comparison: Comparison) -> Trained:
    """`trained` with the comparison's scores among its metrics: model.json, the report and MLflow show them."""
    metrics = {**trained.metrics, **comparison.metrics()}
    return dataclasses.replace(trained, metrics=metrics, evaluation=dataclasses.replace(trained.evaluation, metrics=metrics))


def training_record(data: LabelledServed, split: Split, options: LoggedOptions, settings: Settings, seed: int) -> dict[str, Any]:
    """What model.json's "training" says of a model trained on served events."""
    return {
        "source": "logged",
        "since": None if options.since is None else options.since.isoformat(),
        "label_horizon": data.horizon.isoformat(),
        "label_window_s": settings.label_window_s,
        "label_late_allowance_s": settings.label_late_allowance_s,
        "served_events": data.served_events,
        "labelled_events": len(data),
        "train_rows": split.at,
        "holdout_rows": split.holdout_rows,
        "holdout_fraction": options.holdout_fraction,
        "holdout_from": _iso(data.event_at_s[split.at]),
        "holdout_to": _iso(data.event_at_s[-1]),
        "seed": seed,
        "read": asdict(data.counts),
    }


def describe_holdout(data: LabelledServed, split: Split) -> str:
    holdout = data.labels[split.at:]
    return (f"hold-out: the {split.holdout_rows:,} most recent of {len(data):,} labelled events (event time"
            f" {_iso(data.event_at_s[split.at])} to {_iso(data.event_at_s[-1])}), {100 * holdout.mean():.1f}% purchases")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="seconds")

