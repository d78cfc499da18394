"""The metrics on the monitor's /metrics: the agreed names and labels, with the tracker's values."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quality.exporter import build_registry
from tests.quality.builders import T0, prediction, purchase, tracker

# The names other parts of the project (alert rules, dashboards) query.
PER_MODEL = {
    "prediction_quality_auc", "prediction_quality_log_loss", "prediction_quality_brier", "prediction_quality_ece",
    "prediction_quality_mean_probability", "prediction_quality_positive_rate", "prediction_quality_window_predictions",
    "prediction_quality_training_auc", "prediction_quality_labelled_total",
}
UNLABELLED = {
    "prediction_quality_late_purchases_total", "prediction_quality_sampled_out_total", "prediction_quality_pending",
    "prediction_quality_watermark_seconds", "prediction_quality_last_label_time_seconds", "prediction_quality_invalid_purchases_total",
}


def scrape(t, training_auc=lambda version: None) -> dict:
    text = generate_latest(build_registry(t, training_auc)).decode()
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_every_agreed_metric_is_exported_with_its_labels_and_values():
    t = tracker(window_s=10, allowance_s=1)
    for i, (user, probability) in enumerate([(1, 0.9), (2, 0.1), (3, 0.8), (4, 0.3)]):
        t.prediction(prediction(f"e{i}", user, i, probability, version="v1"), "serving")
        t.prediction(prediction(f"e{i}", user, i, 0.5, version="v2"), "shadow")
    t.purchase(purchase(1, 5))
    t.purchase(purchase(3, 6))
    t.prediction(prediction("pending", 9, 30), "serving")
    t.purchase(purchase(999, 10))  # late: the watermark is at 29
    t.invalid_purchase()
    t.snapshot(T0)  # computes the figures, as the periodic snapshot does
    samples = scrape(t, {"v1": 0.73}.get)
    assert set(samples) >= PER_MODEL | UNLABELLED

    def value(name: str, **labels: str) -> float:
        [sample] = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
        return sample.value

    assert value("prediction_quality_labelled_total", model_version="v1", role="serving", outcome="positive") == 2
    assert value("prediction_quality_labelled_total", model_version="v1", role="serving", outcome="negative") == 2
    assert value("prediction_quality_labelled_total", model_version="v2", role="shadow", outcome="positive") == 2
    assert value("prediction_quality_auc", model_version="v1", role="serving") == 1.0
    assert value("prediction_quality_auc", model_version="v2", role="shadow") == 0.5
    assert value("prediction_quality_window_predictions", model_version="v1", role="serving") == 4
    assert value("prediction_quality_training_auc", model_version="v1", role="serving") == 0.73
    assert [s.labels["model_version"] for s in samples["prediction_quality_training_auc"]] == ["v1"]  # v2's is unknown
    assert value("prediction_quality_pending") == 1
    assert value("prediction_quality_late_purchases_total") == 1
    assert value("prediction_quality_invalid_purchases_total") == 1
    assert t.watermark_us is not None and value("prediction_quality_watermark_seconds") == t.watermark_us / 1e6
    assert value("prediction_quality_last_label_time_seconds") == t.last_label_wall_s


def test_before_any_record_there_is_no_watermark_and_no_model():
    samples = scrape(tracker())
    assert "prediction_quality_watermark_seconds" not in samples
    assert "prediction_quality_last_label_time_seconds" not in samples
    assert "prediction_quality_auc" not in samples
    assert samples["prediction_quality_pending"][0].value == 0
