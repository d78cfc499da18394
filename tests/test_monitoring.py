"""The Grafana dashboard and the Prometheus config in monitoring/ match what the service and the quality monitor export.

The service's names come from a scrape of its own registry with every kind of series present, so a
renamed metric fails here rather than as an empty panel (tests/monitoring/known_metrics.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from config import Settings
from tests.monitoring.known_metrics import (
    QUALITY_METRIC_NAMES,
    QUALITY_PER_MODEL,
    metric_names,
    monitor_metric_names,
    service_metric_names,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MONITORING = REPO_ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"


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
    """Every sample name a scrape of the service returns, and every metric the quality monitor defines."""
    return service_metric_names() | monitor_metric_names()


def test_metric_names_are_read_out_of_promql():
    """Functions, aggregations, label lists, matchers, windows and numbers are not taken for metric names."""
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(a_seconds_bucket{job="x", stage=~"p.*"}[$__rate_interval])))'
        " / ignoring(le) group_left(stage) sum without (instance) (b_total offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}
    assert metric_names("count by (version) (prediction_service_model_info)") == {"prediction_service_model_info"}


def test_every_dashboard_query_names_a_metric_the_service_or_the_monitor_exports(exported_names):
    """Each PromQL expression on the dashboard selects only metrics a scrape of the service or the monitor returns."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported_names, f"{where}: {sorted(names - exported_names)} exported by neither the service nor the monitor"


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


def dashboard_panels() -> list[dict]:
    return json.loads((DASHBOARDS / "prediction-service.json").read_text(encoding="utf-8"))["panels"]


def row_panels(title: str) -> list[dict]:
    """The panels below the row called `title`, up to the next row."""
    panels = dashboard_panels()
    start = next(index for index, panel in enumerate(panels) if panel["type"] == "row" and panel["title"] == title)
    below = []
    for panel in panels[start + 1:]:
        if panel["type"] == "row":
            break
        below.append(panel)
    return below


def test_the_monitor_exports_what_the_dashboard_and_the_alerts_rely_on():
    assert monitor_metric_names() >= QUALITY_METRIC_NAMES


def test_the_model_quality_row_shows_every_figure_the_monitor_exports():
    """Live against training AUC, log loss, Brier, ECE, calibration, labels, pending, late and sampled out: all in one row."""
    panels = row_panels("Model quality")
    used = set().union(*(metric_names(target["expr"]) for panel in panels for target in panel["targets"]))
    assert used == monitor_metric_names()
    auc = next(panel for panel in panels if {"prediction_quality_auc", "prediction_quality_training_auc"}
               <= set().union(*(metric_names(t["expr"]) for t in panel["targets"])))
    assert len(auc["targets"]) == 2, "live and training AUC belong on one panel, to be read against each other"


def test_per_model_quality_is_kept_apart_by_model_version_and_role():
    """A query of a per-model figure groups by model_version and role and names both in its legend, so versions never blend."""
    for panel in row_panels("Model quality"):
        for target in panel["targets"]:
            if metric_names(target["expr"]) & set(QUALITY_PER_MODEL):
                assert "by (model_version, role" in target["expr"], (panel["title"], target["expr"])
                assert "{{model_version}}" in target["legendFormat"] and "{{role}}" in target["legendFormat"], panel["title"]
            else:
                assert "model_version" not in target["expr"], (panel["title"], target["expr"])


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def scrape_jobs() -> dict[str, dict]:
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_the_compose_service_on_its_metrics_port():
    """prometheus.yml discovers the compose service by name on the METRICS_PORT docker-compose.yml gives it."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    port = int(compose["x-app-env"]["METRICS_PORT"])
    (discovery,) = scrape_jobs()["prediction-service"]["dns_sd_configs"]
    assert discovery["names"] == ["prediction-service"] and discovery["port"] == port
    assert "prediction-service" in compose["services"]


def test_prometheus_scrapes_the_quality_monitor_on_its_default_port():
    """The quality-monitor job finds the monitor by its compose name on QUALITY_METRICS_PORT's default."""
    (discovery,) = scrape_jobs()["quality-monitor"]["dns_sd_configs"]
    assert discovery["names"] == ["quality-monitor"] and discovery["port"] == Settings().quality_metrics_port


def test_compose_mounts_every_rule_file_beside_the_prometheus_config():
    """Prometheus resolves rule_files against its config's directory: each must be mounted there, from monitoring/prometheus/."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    prometheus = compose["services"]["prometheus"]
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_dir = config_flag.removeprefix("--config.file=").rsplit("/", 1)[0]
    mounts = {target: source for source, target, *_ in (volume.split(":") for volume in prometheus["volumes"])}
    rule_files = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        assert mounts.get(f"{config_dir}/{rule_file}") == f"./monitoring/prometheus/{rule_file}", rule_file
        assert (MONITORING / "prometheus" / rule_file).is_file(), rule_file
