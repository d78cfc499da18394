"""The alert rules in monitoring/prometheus/ load, pass their promtool unit tests, and query real metrics.

promtool is Prometheus' own checker (Debian's `prometheus` package; stack/install_system_deps.sh
installs it), so the rules are evaluated exactly as Prometheus evaluates them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.known_metrics import SCRAPE_METRIC_NAMES, metric_names, monitor_metric_names, service_metric_names

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
PROMTOOL_TIMEOUT_S = 60
SEVERITIES = {"critical", "warning"}
EXPECTED_ALERTS = {"LiveAucBelowTraining", "CalibrationGap", "LabelsStopped", "ConsumerLagGrowing", "ServiceNotReady"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: install Debian's `prometheus` package (as root, `bash stack/install_system_deps.sh` does)")
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    # From the rules' directory, as Prometheus resolves rule_files against its config's directory.
    return subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S,
                          check=False)


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules(promtool):
    result = run_promtool(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout


def test_promtool_accepts_the_config_and_the_rule_files_it_loads(promtool):
    result = run_promtool(promtool, "check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_rule_unit_tests_pass(promtool):
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_rule_fails_its_unit_tests(promtool, tmp_path):
    """The unit tests can fail: with CalibrationGap's threshold moved from 0.05 to 0.5, they do."""
    rules = RULES.read_text(encoding="utf-8")
    assert rules.count(") > 0.05\n") == 2  # LiveAucBelowTraining's and CalibrationGap's thresholds
    broken = rules.replace(") > 0.05\n", ") > 0.5\n")
    (tmp_path / RULES.name).write_text(broken, encoding="utf-8")
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True,
                            timeout=PROMTOOL_TIMEOUT_S, check=False)
    assert result.returncode != 0
    assert "alertname: CalibrationGap" in result.stdout + result.stderr
    assert "alertname: LiveAucBelowTraining" in result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_a_description():
    rules = alerting_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip() and len(rule["annotations"]["description"]) > 100, rule["alert"]
        assert rule.get("for"), f"{rule['alert']} would fire on a single evaluation"


def test_every_alert_is_tested_firing_and_quiet():
    """Each rule has at least one unit test expecting it to fire and one expecting silence."""
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_alert_expressions_query_only_metrics_that_exist():
    known = service_metric_names() | monitor_metric_names() | SCRAPE_METRIC_NAMES
    for rule in alerting_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert names <= known, f"{rule['alert']}: {sorted(names - known)} are exported by neither the service nor the monitor"
