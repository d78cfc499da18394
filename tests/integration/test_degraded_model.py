"""A deliberately degraded model through the whole closed loop: scored as the shadow, then promoted, it shows a
live AUC at least 0.05 below the normal model's, and LiveAucBelowTraining fires on the series the quality
monitor exported, for the degraded version and not for the normal one.

The degraded version is the normal model with its page effects reversed (tests/integration/degraded_models.py),
still claiming the normal model's held-out AUC in its model.json. The service serves the normal version with the
degraded one as its shadow while `producer.py --outcomes` sends events and the purchases that follow them; then
the degraded version is promoted and serves a second stream. quality_monitor.py labels every prediction, and its
/metrics is scraped every few seconds as Prometheus would, and the recorded series go through `promtool test
rules` against monitoring/prometheus/alerts.yml.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config import Settings
from events.purchase import Purchase, encode_purchase
from events.schema import encode_key
from features.user import UserFeatures
from model.artifact import read_metadata
from model.local_registry import LocalRegistry
from quality.snapshot import QualitySnapshot
from tests.conftest import all_features, delete_topics, env_settings, loaded_store
from tests.factories import train
from tests.integration.degraded_models import degrade
from tests.integration.kafka_helpers import send_records
from tests.integration.lifecycle_helpers import metric_value, registry_serving, run_registry_command, stage
from tests.integration.recorded_series import SeriesRecorder, alerting_rule, expected_alert, run_rule_test
from tests.integration.service_process import REPO_ROOT, ServiceProcess
from tests.integration.test_quality_monitor import MonitorProcess, wait_for_snapshot
from tests.monitoring import test_alert_rules as alert_rules
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration

# The alert rules' own fixture: it finds promtool, and fails (never skips) when it is not installed.
promtool = alert_rules.promtool

# Enough users that one user rarely has two events within a label window (producer.py warns above 0.1 per
# window; here 100/s * 2 s / 3000 users is about 0.07), so each label belongs to its own event.
USERS = 3_000
EVENTS_PER_PHASE, RATE_PER_S = 1_400, 100
LABEL_WINDOW_S, ALLOWANCE_S = 2, 3
SCRAPE_EVERY_S = 2.0
# promtool samples once a minute; after the last scrape the figures are held this long, past the rule's `for: 10m`.
HOLD_MINUTES = 15
ALERT = "LiveAucBelowTraining"
# Where the rule states how many labelled predictions a version's window needs before it is judged.
MIN_WINDOW_CLAUSE = re.compile(r"prediction_quality_window_predictions\{[^}]*\} >= (\d+)")
MIN_AUC_GAP = 0.05
AUC, TRAINING_AUC, WINDOW = "prediction_quality_auc", "prediction_quality_training_auc", "prediction_quality_window_predictions"
SENTINEL_USER = 999_999_999  # buys once at the end, to move the watermark past every window; has no event
WAIT_S = 90.0


@dataclass(frozen=True)
class Versions:
    registry: Path
    normal: str
    degraded: str


@pytest.fixture
def loop_store(stack_settings) -> Iterator[tuple[str, dict[int, UserFeatures]]]:
    """A throwaway database of USERS users loaded by the real loader; yields its name and the users' features."""
    with loaded_store(stack_settings, "prediction_it", USERS) as name:
        yield name, asyncio.run(all_features(env_settings(MYSQL_DATABASE=name)))


@pytest.fixture
def versions(loop_store, tmp_path) -> Versions:
    """A registry of the test's own: the normal model, trained on the test's store, serving; its degraded copy
    registered beside it."""
    trained = train(loop_store[1], USERS, samples=20_000, seed=3)
    assert trained.passed, f"the normal model must pass its gates to serve: {trained.metrics}"
    registry, normal = registry_serving(tmp_path / "registry", stage(trained, tmp_path / "normal"))
    degraded = registry.register(degrade(registry.artifact_path(normal), tmp_path / "degraded"))
    return Versions(registry.root, normal, degraded)


@pytest.fixture
def loop_env(stack_settings, loop_store, versions) -> Iterator[dict[str, str]]:
    """One environment for the service, the producer and the monitor: private topics (deleted afterwards), the test's
    store and registry, the degraded version as the shadow, and a short label window."""
    run = uuid.uuid4().hex[:8]
    topics = {name: f"it-{run}-{suffix}" for name, suffix in (
        ("INPUT_TOPIC", "input"), ("OUTPUT_TOPIC", "output"), ("DLQ_TOPIC", "dlq"), ("SHADOW_OUTPUT_TOPIC", "shadow"),
        ("PURCHASES_TOPIC", "purchases"), ("QUALITY_TOPIC", "quality"),
    )}
    yield {
        **topics, "KAFKA_GROUP_ID": f"it-{run}-service", "TOPIC_PARTITIONS": "2", "MYSQL_DATABASE": loop_store[0],
        "MODEL_URI": str(versions.registry),
        "SHADOW_MODEL_URI": str(LocalRegistry(versions.registry).artifact_path(versions.degraded)),
        "MODEL_POLL_S": "0",  # the promotion is picked up on SIGHUP, when the test asks
        "LABEL_WINDOW_S": str(LABEL_WINDOW_S), "LABEL_LATE_ALLOWANCE_S": str(ALLOWANCE_S), "QUALITY_WINDOW": "5000",
        "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(free_port()), "QUALITY_METRICS_PORT": str(free_port()),
        "LOG_FORMAT": "json", "RETRY_BACKOFF_MAX_MS": "1000",
    }
    asyncio.run(delete_topics(stack_settings, list(topics.values())))


class Scraper:
    """Scrapes the monitor's /metrics into a recorder every `every_s` seconds, in a thread, as Prometheus would."""

    def __init__(self, monitor: MonitorProcess, recorder: SeriesRecorder, every_s: float) -> None:
        self.monitor, self.recorder, self.every_s = monitor, recorder, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def scrape(self) -> bool:
        try:
            families = self.monitor.metrics()
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # not listening yet: Prometheus records nothing
            return False
        self.recorder.record(sample for samples in families.values() for sample in samples)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.scrape()


def produce(env: dict[str, str], seed: int) -> float:
    """producer.py --outcomes as a user runs it: EVENTS_PER_PHASE events and the purchases that follow them.
    Returns the wall clock when it is done (every purchase sent)."""
    produced = subprocess.run(
        [sys.executable, "producer.py", "--outcomes", "--count", str(EVENTS_PER_PHASE), "--rate", str(RATE_PER_S),
         "--seed", str(seed), "--users", str(USERS), "--invalid-ratio", "0"],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=WAIT_S,
    )
    assert produced.returncode == 0, produced.stderr[-3000:]
    summary = produced.stdout.strip().splitlines()[-1]
    assert f"sent {EVENTS_PER_PHASE} events" in summary and "dropped" not in summary, summary
    return time.time()


def wait_until_predicted(service: ServiceProcess, events: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while metric_value(service, "prediction_service_events_total", outcome="predicted") < events:
        assert time.monotonic() < deadline, f"the service predicted fewer than {events} events within {WAIT_S} s:\n{service.tail()}"
        time.sleep(0.2)


def close_every_window(settings: Settings, produced_at: float) -> float:
    """A purchase of a user with no event, stamped (once that moment has come) late enough for the watermark to pass
    the window of every event sent by `produced_at` (unix s); returns its time."""
    due = produced_at + LABEL_WINDOW_S + ALLOWANCE_S
    time.sleep(max(0.0, due - time.time()))
    sentinel = Purchase("sentinel", SENTINEL_USER, 1.0, datetime.now(UTC))
    asyncio.run(send_records(settings, [(encode_key(SENTINEL_USER), encode_purchase(sentinel))], topic=settings.purchases_topic))
    return sentinel.timestamp.timestamp()


def everything_labelled(sentinel_at: float, models: int) -> Callable[[QualitySnapshot], bool]:
    """A snapshot past the sentinel's windows, with nothing pending, `models` (version, role) pairs and each one's training AUC."""

    def condition(snapshot: QualitySnapshot) -> bool:
        return (snapshot.watermark is not None and snapshot.watermark.timestamp() >= sentinel_at - ALLOWANCE_S
                and snapshot.pending == 0 and len(snapshot.models) == models
                and all(model.training_auc is not None for model in snapshot.models))
    return condition


@dataclass(frozen=True)
class Figures:
    auc: float
    training_auc: float
    window: float


def scraped(recorder: SeriesRecorder, version: str, role: str) -> Figures:
    """The last scraped live AUC, training AUC and window size of a version in a role."""
    values = [recorder.latest(name, model_version=version, role=role) for name in (AUC, TRAINING_AUC, WINDOW)]
    auc, training_auc, window = values
    assert auc is not None and training_auc is not None and window is not None, f"{version} as {role}: {values} scraped last"
    return Figures(auc, training_auc, window)


def test_a_degraded_model_shows_a_live_auc_005_lower_and_the_alert_fires_for_it_alone(loop_env, versions, promtool, tmp_path):
    settings = env_settings(**loop_env)
    normal, degraded = versions.normal, versions.degraded
    recorder = SeriesRecorder(frozenset({AUC, TRAINING_AUC, WINDOW}), job="quality-monitor",
                              instance=f"127.0.0.1:{loop_env['QUALITY_METRICS_PORT']}")
    service = ServiceProcess(loop_env, tmp_path / "service.log").start()
    monitor = MonitorProcess(loop_env, tmp_path / "monitor.log")
    try:
        service.wait_for_message("partitions assigned", timeout_s=60)
        assert any(message.startswith(f"shadow model {degraded} (") for message in service.messages()), service.tail()
        monitor.start()
        with Scraper(monitor, recorder, SCRAPE_EVERY_S) as scraper:
            produce(loop_env, seed=21)  # the normal version serves, the degraded one is its shadow
            promoted = run_registry_command(versions.registry, "promote", degraded)
            assert promoted.returncode == 0, promoted.stderr
            assert service.process is not None
            service.process.send_signal(signal.SIGHUP)
            service.wait_for_message(f"serving model is now {degraded} (was {normal})", timeout_s=60)
            done_at = produce(loop_env, seed=22)  # the degraded version serves, and is still the shadow
            wait_until_predicted(service, 2 * EVENTS_PER_PHASE)
            sentinel_at = close_every_window(settings, done_at)
            final = asyncio.run(wait_for_snapshot(settings, settings.quality_topic, everything_labelled(sentinel_at, 3), WAIT_S))
        for _ in range(2):  # a few scrapes of the final figures, as a scrape interval would take them
            time.sleep(SCRAPE_EVERY_S / 2)
            assert scraper.scrape(), monitor.tail()
        assert monitor.stop() == 0, monitor.tail()
        assert service.stop() == 0, service.tail()
    finally:
        for process in (monitor, service):
            if process.alive:
                process.kill()

    rule = alerting_rule(alert_rules.RULES, ALERT)
    min_window = MIN_WINDOW_CLAUSE.search(rule["expr"])
    assert min_window is not None, f"{ALERT} no longer states the window it needs: {rule['expr']}"
    assert {(m.model_version, m.role) for m in final.models} == {(normal, "serving"), (degraded, "shadow"), (degraded, "serving")}
    claimed = read_metadata(LocalRegistry(versions.registry).artifact_path(normal))["metrics"]["roc_auc"]
    as_normal, as_shadow, as_promoted = (scraped(recorder, version, role) for version, role in (
        (normal, "serving"), (degraded, "shadow"), (degraded, "serving")))
    described = f"normal {as_normal}, degraded as the shadow {as_shadow}, degraded promoted {as_promoted}; last snapshot: {final}"
    for figures in (as_normal, as_shadow, as_promoted):
        assert figures.window >= int(min_window[1]), described  # else the rule would not judge it
        assert figures.training_auc == claimed, described  # the degraded copy claims the normal model's held-out AUC
    # Loosely: live traffic comes from the world training sampled, but it is fewer events, with the store's features as loaded.
    assert abs(as_normal.auc - claimed) < MIN_AUC_GAP, described
    assert as_shadow.auc <= as_normal.auc - MIN_AUC_GAP, described
    assert as_promoted.auc <= as_normal.auc - MIN_AUC_GAP, described

    eval_time = f"{recorder.minutes - 1 + HOLD_MINUTES}m"
    degraded_labels = {"job": recorder.job, "instance": recorder.instance, "model_version": degraded, "role": "serving"}
    cases = {"normal": (normal, []), "degraded": (degraded, [expected_alert(rule, degraded_labels, claimed - as_promoted.auc)])}
    for case, (version, expected) in cases.items():
        series = recorder.input_series(HOLD_MINUTES, model_version=version)
        checks = [{"eval_time": eval_time, "alertname": ALERT, "exp_alerts": expected}]
        result = run_rule_test(promtool, alert_rules.RULES, tmp_path / f"{case}_alerts_test.yml", f"the series recorded for {version}",
                               series, checks, alert_rules.PROMTOOL_TIMEOUT_S)
        assert result.returncode == 0 and "SUCCESS" in result.stdout, f"{version}:\n{result.stdout}{result.stderr}"
