"""The monitor's progress line, one per snapshot: where the watermark is, what waits, and each model's figures."""

from __future__ import annotations

from quality.snapshot import ModelQuality, QualitySnapshot


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def describe_model(model: ModelQuality) -> str:
    trained = f" (trained {_figure(model.training_auc)})" if model.training_auc is not None else ""
    return (
        f"{model.role} {model.model_version}: {model.labelled} labelled, window {model.window}, AUC {_figure(model.auc)}{trained},"
        f" log loss {_figure(model.log_loss)}, ECE {_figure(model.ece)}, positive rate {_figure(model.positive_rate)}"
    )


def describe_snapshot(snapshot: QualitySnapshot) -> str:
    watermark = "none yet" if snapshot.watermark is None else snapshot.watermark.isoformat(timespec="seconds")
    parts = [f"watermark {watermark}, {snapshot.pending} pending"]
    parts.extend(describe_model(model) for model in snapshot.models)
    parts.append(
        f"late purchases {snapshot.late_purchases}, late predictions {snapshot.late_predictions}, sampled out {snapshot.sampled_out},"
        f" invalid purchases {snapshot.invalid_purchases}"
    )
    return "quality: " + "; ".join(parts)
