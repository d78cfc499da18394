"""The metric names the dashboard and the alert rules may query, and a reader of PromQL that finds them.

The service's names come from a scrape of its own registry with every kind of series present, and the
quality monitor's from the names quality/exporter.py defines, so a renamed metric fails the monitoring
tests rather than leaving an empty panel or a silent alert.
"""

from __future__ import annotations

import re

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quality import exporter
from service.observe.health import HealthState
from service.observe.metrics import build_registry
from service.observe.model_stats import ModelStats
from service.observe.stats import STAGES, ServiceStats

# What the dashboard and the alerts rely on the quality monitor for. Labelled by model_version and
# role (serving | shadow); labelled_total also by outcome.
QUALITY_PER_MODEL = (
    "prediction_quality_auc", "prediction_quality_log_loss", "prediction_quality_brier", "prediction_quality_ece",
    "prediction_quality_mean_probability", "prediction_quality_positive_rate", "prediction_quality_window_predictions",
    "prediction_quality_training_auc", "prediction_quality_labelled_total",
)
QUALITY_UNLABELLED = (
    "prediction_quality_late_purchases_total", "prediction_quality_sampled_out_total", "prediction_quality_pending",
    "prediction_quality_watermark_seconds", "prediction_quality_last_label_time_seconds",
    "prediction_quality_invalid_purchases_total",
)
QUALITY_METRIC_NAMES = frozenset(QUALITY_PER_MODEL + QUALITY_UNLABELLED)


def monitor_metric_names() -> set[str]:
    """Every metric name quality/exporter.py defines: its module's `prediction_quality_*` constants."""
    prefix = f"{exporter.PREFIX}_"
    return {value for value in vars(exporter).values() if isinstance(value, str) and value.startswith(prefix)}
# What Prometheus adds to every scrape target.
SCRAPE_METRIC_NAMES = frozenset({"up"})

# PromQL words that look like identifiers but name no metric.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan", "le",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregation keywords, label names, strings, durations or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values) go first
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows, $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def service_metric_names() -> set[str]:
    """Every sample name of a scrape of the service with each kind of series present (cache, lag, model, histograms)."""
    stats = ServiceStats()
    stats.record_dead_letter("not_json", "in", 0, 1)
    stats.record_batch(2, 1, 1, 0.01)
    stats.record_retry("MySQL")
    for stage in STAGES:
        stats.observe_stage(stage, 0.001)
    stats.observe_latencies([0.02])
    stats.set_lag({("in", 0): 3})
    stats.set_cache(hits=1, misses=1, size=1)
    stats.mark_batch_started()
    models = ModelStats(serving_version="v1", shadow_version="v2")
    models.swaps["serving"] += 1
    models.refused[("serving", "checksum")] += 1
    models.source_errors["shadow"] += 1
    models.compare_shadow(np.array([0.2, 0.7]), np.array([0.3, 0.4]))
    health = HealthState(stats, stall_after_s=300, model_version="v1", models=models)
    health.mark_loop_started()
    text = generate_latest(build_registry(stats, health)).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
