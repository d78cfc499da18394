"""Every metric the quality monitor exports on its own /metrics (QUALITY_METRICS_PORT), by name.

Per model version and role (labels `model_version`, `role` = serving | shadow) the window's figures,
as last computed for a snapshot, and the label counts (also by `outcome`); unlabelled, the monitor's
own counters and where its watermark stands. Values are read from the tracker at each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from quality.event_time import SECOND_US
from quality.snapshot import ModelQuality
from quality.tracker import QualityTracker

PREFIX = "prediction_quality"
MODEL_LABELS = ["model_version", "role"]

AUC = f"{PREFIX}_auc"
LOG_LOSS = f"{PREFIX}_log_loss"
BRIER = f"{PREFIX}_brier"
ECE = f"{PREFIX}_ece"
MEAN_PROBABILITY = f"{PREFIX}_mean_probability"
POSITIVE_RATE = f"{PREFIX}_positive_rate"
WINDOW_PREDICTIONS = f"{PREFIX}_window_predictions"
TRAINING_AUC = f"{PREFIX}_training_auc"
LABELLED_TOTAL = f"{PREFIX}_labelled_total"  # model_version, role, outcome: positive | negative
LATE_PURCHASES_TOTAL = f"{PREFIX}_late_purchases_total"
SAMPLED_OUT_TOTAL = f"{PREFIX}_sampled_out_total"
PENDING = f"{PREFIX}_pending"
WATERMARK_SECONDS = f"{PREFIX}_watermark_seconds"
LAST_LABEL_TIME_SECONDS = f"{PREFIX}_last_label_time_seconds"
INVALID_PURCHASES_TOTAL = f"{PREFIX}_invalid_purchases_total"
LATE_PREDICTIONS_TOTAL = f"{PREFIX}_late_predictions_total"
UNREADABLE_PREDICTIONS_TOTAL = f"{PREFIX}_unreadable_predictions_total"

# The window's figures: (metric, help, the field of ModelQuality it shows).
WINDOW_GAUGES: tuple[tuple[str, str, Callable[[ModelQuality], float | None]], ...] = (
    (AUC, "ROC AUC over the window of recent labelled predictions; absent while the window holds one class only.", lambda m: m.auc),
    (LOG_LOSS, "Log loss over the window (probabilities clipped to [1e-15, 1 - 1e-15]).", lambda m: m.log_loss),
    (BRIER, "Brier score (mean squared error of the probability) over the window.", lambda m: m.brier),
    (ECE, "Expected calibration error over the window, 10 equal-width bins.", lambda m: m.ece),
    (MEAN_PROBABILITY, "Mean predicted purchase probability over the window.", lambda m: m.mean_probability),
    (POSITIVE_RATE, "Share of the window's predictions labelled positive: the observed purchase rate.", lambda m: m.positive_rate),
    (WINDOW_PREDICTIONS, "Labelled predictions in the window the figures are computed over (at most QUALITY_WINDOW).",
     lambda m: m.window),
    (TRAINING_AUC, "The held-out ROC AUC recorded when the version was trained; absent when unknown.", lambda m: m.training_auc),
)


class QualityCollector:
    """Turns the tracker's counters and last computed figures into metric families at each scrape."""

    def __init__(self, tracker: QualityTracker, training_auc: Callable[[str], float | None]) -> None:
        self._tracker = tracker
        self._training_auc = training_auc

    def collect(self) -> Iterator[Metric]:
        tracker = self._tracker
        current = tracker.snapshot(datetime.now(UTC), training_auc=self._training_auc, remeasure=False)
        for name, documentation, value_of in WINDOW_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=MODEL_LABELS)
            for model in current.models:
                value = value_of(model)
                if value is not None and (model.window or name in (WINDOW_PREDICTIONS, TRAINING_AUC)):
                    family.add_metric([model.model_version, model.role], value)
            yield family
        labelled = CounterMetricFamily(LABELLED_TOTAL, "Predictions labelled, by outcome.", labels=[*MODEL_LABELS, "outcome"])
        for model in current.models:
            labelled.add_metric([model.model_version, model.role, "positive"], model.labelled_positive)
            labelled.add_metric([model.model_version, model.role, "negative"], model.labelled - model.labelled_positive)
        yield labelled
        yield CounterMetricFamily(
            LATE_PURCHASES_TOTAL, "Purchases read after the watermark had passed their time; used only for predictions not yet labelled.",
            value=current.late_purchases,
        )
        yield CounterMetricFamily(
            SAMPLED_OUT_TOTAL, "Predictions not labelled because QUALITY_MAX_PENDING was reached (the hash sample left them out).",
            value=current.sampled_out,
        )
        yield CounterMetricFamily(INVALID_PURCHASES_TOTAL, "Records on PURCHASES_TOPIC that are no valid purchase.",
                                  value=current.invalid_purchases)
        yield CounterMetricFamily(
            LATE_PREDICTIONS_TOTAL, "Predictions read after the watermark had passed their label time; not labelled.",
            value=current.late_predictions,
        )
        yield CounterMetricFamily(UNREADABLE_PREDICTIONS_TOTAL, "Records on the prediction topics that are no prediction.",
                                  value=current.unreadable_predictions)
        yield GaugeMetricFamily(PENDING, "Predictions waiting for their label.", value=current.pending)
        if tracker.watermark_us is not None:
            yield GaugeMetricFamily(
                WATERMARK_SECONDS, "Event time (unix seconds) up to which predictions are labelled: the newest event time seen"
                " minus LABEL_LATE_ALLOWANCE_S.", value=tracker.watermark_us / SECOND_US,
            )
        if tracker.last_label_wall_s is not None:
            yield GaugeMetricFamily(
                LAST_LABEL_TIME_SECONDS, "Wall clock (unix seconds) of the last labelling.", value=tracker.last_label_wall_s
            )


def build_registry(tracker: QualityTracker, training_auc: Callable[[str], float | None]) -> CollectorRegistry:
    """A registry of the monitor's metrics plus the process's CPU, memory and open files."""
    registry = CollectorRegistry()
    registry.register(QualityCollector(tracker, training_auc))
    ProcessCollector(registry=registry)
    return registry
