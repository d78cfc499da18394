"""The model-quality part of `consumer.py --live`: the latest quality snapshot, and its table.

The monitor labels a prediction only once its purchase window has closed, so these figures trail
the predictions on the rest of the screen by LABEL_WINDOW_S; the watermark's lag says by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from quality.snapshot import InvalidSnapshot, ModelQuality, QualitySnapshot, decode_snapshot
from runtime.text import printable

if TYPE_CHECKING:  # rich loads only when a live view is shown
    from rich.console import Group
    from rich.text import Text

# Marked on screen when passed; the same margins as the LiveAucBelowTraining and CalibrationGap
# alerts (monitoring/prometheus/alerts.yml).
AUC_DROP_MARGIN = 0.05
CALIBRATION_GAP_MARGIN = 0.05
# The monitor publishes every few seconds; a snapshot older than this says it stopped.
STALE_AFTER_S = 30.0
NO_LABELS = "no labelled predictions yet"
# One row per figure and one column per model, so a long version costs no figure its room and
# each live figure sits right above or below what it is read against.
FIGURES = ("AUC live", "AUC at training", "log loss", "Brier score", "ECE", "mean probability", "positive rate",
           "labelled in window", "labelled in all")


@dataclass
class QualityState:
    """What the view knows of the quality topic: its newest snapshot, or why there is none."""

    topic: str
    snapshot: QualitySnapshot | None = None
    unreadable: int = 0
    problem: str | None = None  # why the topic cannot be read now, shown instead of figures

    def offer(self, raw: bytes) -> None:
        """Keep the snapshot in `raw` if it is newer than the one held (records may be read out of order)."""
        try:
            snapshot = decode_snapshot(raw)
        except InvalidSnapshot:
            self.unreadable += 1
            return
        if self.snapshot is None or aware(snapshot.at) >= aware(self.snapshot.at):
            self.snapshot = snapshot


def aware(instant: datetime) -> datetime:
    """`instant` with its offset; one written without is taken as UTC, the monitor's clock."""
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def describe_seconds(seconds: float) -> str:
    """A duration for a person: seconds under two minutes, then minutes, then hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3_600:.1f} h"


def quality_title(state: QualityState, now: datetime) -> str:
    snapshot = state.snapshot
    if snapshot is None:
        why = state.problem or "is quality_monitor.py running?"
        return f"model quality: no snapshot on {printable(state.topic)} yet ({printable(why)})"
    age_s = (now - aware(snapshot.at)).total_seconds()
    parts = [f"model quality, snapshot {describe_seconds(max(age_s, 0.0))} old"]
    if age_s > STALE_AFTER_S:
        parts[0] += " (stale: is quality_monitor.py still running?)"
    if snapshot.watermark is None:
        parts.append("no watermark yet")
    else:
        behind_s = (now - aware(snapshot.watermark)).total_seconds()
        parts.append(f"watermark {describe_seconds(behind_s)} behind now" if behind_s >= 0
                     else f"watermark {describe_seconds(-behind_s)} ahead of this clock")
    parts.append(f"{snapshot.pending} pending, {snapshot.late_purchases} late purchases, {snapshot.sampled_out} sampled out")
    if snapshot.invalid_purchases:
        parts[-1] += f", {snapshot.invalid_purchases} invalid purchases"
    if state.problem:
        parts.append(printable(state.problem))
    if state.unreadable:
        parts.append(f"{state.unreadable} unreadable snapshots")
    return "; ".join(parts)


def render_quality(state: QualityState, now: datetime) -> Group | Text:
    """Per model version and role: live AUC beside the training AUC, log loss, Brier, ECE, mean probability against
    positive rate, and how many labelled predictions they are over.

    The heading is a line of its own above the table, so it wraps at the screen's width, not the table's.
    """
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    heading = Text(quality_title(state, now), style="italic")  # Text, not markup: the topic and problem are shown as they are
    snapshot = state.snapshot
    if snapshot is None:
        return heading
    if not snapshot.models:
        heading.append(f"; {NO_LABELS}")
        return heading
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("")
    models = sorted(snapshot.models, key=lambda model: (model.role != "serving", model.model_version))
    for model in models:
        table.add_column(f"{escape(printable(model.model_version))}\n{model.role}", justify="right")
    columns = [quality_column(model) for model in models]
    for index, figure in enumerate(FIGURES):
        table.add_row(figure, *(column[index] for column in columns))
    return Group(heading, table)


def quality_column(model: ModelQuality) -> list[str]:
    """One model's cells, in FIGURES' order, as rich markup; figures past the alerts' margins in red."""
    counts = [str(model.window), str(model.labelled)]
    if not model.window:  # the training AUC is known before any label
        return [NO_LABELS, _figure(model.training_auc), "–", "–", "–", "–", "–", *counts]
    live_auc = _figure(model.auc)
    if model.auc is not None and model.training_auc is not None and model.training_auc - model.auc > AUC_DROP_MARGIN:
        live_auc = f"[red]{live_auc}[/red]"
    mean_p = _figure(model.mean_probability)
    calibrated = model.mean_probability is None or model.positive_rate is None \
        or abs(model.mean_probability - model.positive_rate) <= CALIBRATION_GAP_MARGIN
    if not calibrated:
        mean_p = f"[red]{mean_p}[/red]"
    return [live_auc, _figure(model.training_auc), _figure(model.log_loss), _figure(model.brier), _figure(model.ece),
            mean_p, _figure(model.positive_rate), *counts]


def _figure(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"
