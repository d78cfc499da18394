"""The Grafana dashboard and the Prometheus config in monitoring/ match what the service exports.

The exported names come from a scrape of the service's own registry with every kind of series
present, so a renamed metric fails here rather than as an empty panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.observe.health import HealthState
from service.observe.metrics import build_registry
from service.observe.model_stats import ModelStats
from service.observe.stats import STAGES, ServiceStats

REPO_ROOT = Path(__file__).resolve().parent.parent
MONITORING = REPO_ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"

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


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard file and panel title, expr) for every target of every panel, rows included."""
    queries = []

    def walk(panels, where):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append((f"{where}: {panel.get('title')}", target["expr"]))
            walk(panel.get("panels", []), where)

    for path in sorted(DASHBOARDS.glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8"))["panels"], path.name)
    return queries


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Every sample name of a scrape with each kind of series present (cache, lag, model, histograms)."""
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


def test_metric_names_are_read_out_of_promql():
    """Functions, aggregations, label lists, matchers, windows and numbers are not taken for metric names."""
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(a_seconds_bucket{job="x", stage=~"p.*"}[$__rate_interval])))'
        " / ignoring(le) group_left(stage) sum without (instance) (b_total offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}
    assert metric_names("count by (version) (prediction_service_model_info)") == {"prediction_service_model_info"}


def test_every_dashboard_query_names_a_metric_the_service_exports(exported_names):
    """Each PromQL expression on the dashboard selects only metrics a scrape of the service returns."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported_names, f"{where}: {sorted(names - exported_names)} not exported by the service"


def test_the_dashboard_covers_what_an_operator_asked_for(exported_names):
    """Throughput, latency percentiles, lag, dead letters by kind, model version and cache hit ratio each have a query."""
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    for wanted in (
        "prediction_service_events_total", "prediction_service_end_to_end_latency_seconds_bucket",
        "prediction_service_partition_lag_records", "prediction_service_dead_letters_total",
        "prediction_service_model_info", "prediction_service_feature_cache_hits_total",
    ):
        assert wanted in used, wanted


def test_dashboards_use_the_provisioned_data_source():
    """Every panel and target refers to the data source uid that Grafana's provisioning creates."""
    provisioned = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert ref == {"type": source["type"], "uid": source["uid"]}, (path.name, panel["title"])


def test_prometheus_scrapes_the_compose_service_on_its_metrics_port():
    """prometheus.yml discovers the compose service by name on the METRICS_PORT docker-compose.yml gives it."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    port = int(compose["x-app-env"]["METRICS_PORT"])
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["prediction-service"] and discovery["port"] == port
    assert "prediction-service" in compose["services"]
