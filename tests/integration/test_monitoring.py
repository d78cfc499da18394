"""The service's /metrics, /healthz and /readyz, scraped from a real process during a real run."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from events.invalid_samples import INVALID_SAMPLES
from events.schema import InvalidEvent, parse_event
from model.artifact import load_model
from service.observe import metrics
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import send_records
from tests.integration.service_process import ServiceProcess
from tests.integration.test_pipeline import as_records, read_predictions
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_ready(service: ServiceProcess, port: int, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert service.alive, service.tail()
        try:
            status, body = get(port, "/readyz")
        except OSError:
            status = None  # not listening yet
        if status == 200:
            return json.loads(body)
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout_s} s:\n{service.tail()}")


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """Sample values by sample name, then by sorted label pairs."""
    status, text = get(port, "/metrics")
    assert status == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def expected_kind(value: bytes) -> str:
    try:
        parse_event(value)
    except InvalidEvent as error:
        return error.kind
    raise AssertionError(f"{value[:40]!r} is valid")


def test_a_scrape_during_a_run_counts_the_events_processed(pipeline_settings, start_service, model_path):
    """/readyz turns 200 once joined; then /metrics counts every event by outcome and every dead letter by kind,
    names the model's version, and /healthz says the loop is alive."""
    port = free_port()
    service = start_service(METRICS_PORT=str(port))
    readiness = wait_until_ready(service, port)
    assert readiness == {"status": "ready", "model_loaded": True, "group_joined": True, "mysql_reachable": True}

    events = random_events(40, user_ids=list(range(STORE_USERS)), seed=41)
    invalid = [(f"bad-{kind}".encode(), value) for kind, value in INVALID_SAMPLES.items()]
    asyncio.run(send_records(pipeline_settings, as_records(events) + invalid))
    read_predictions(pipeline_settings, [e.event_id for e in events])

    # Counted once committed, which follows the acknowledged outputs by a commit interval.
    deadline = time.monotonic() + 30
    samples = scrape(port)
    while sum(samples[metrics.EVENTS_TOTAL].values()) < len(events) + len(invalid) and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape(port)
    assert samples[metrics.EVENTS_TOTAL] == {(("outcome", "predicted"),): len(events), (("outcome", "dead_lettered"),): len(invalid)}
    kinds = Counter(expected_kind(value) for _, value in invalid)
    assert {labels[0][1]: value for labels, value in samples[metrics.DEAD_LETTERS_TOTAL].items()} == kinds
    retry_lines = sum("unavailable while" in m for m in service.messages())
    assert sum(samples.get(metrics.RETRIES_TOTAL, {}).values()) == retry_lines == 0
    assert samples[f"{metrics.MODEL}_info"] == {(("version", load_model(model_path).version),): 1}
    for histogram in (metrics.STAGE_SECONDS, metrics.LATENCY_SECONDS, metrics.BATCH_SECONDS):
        assert f"{histogram}_bucket" in samples, histogram
    assert samples[f"{metrics.BATCH_SECONDS}_count"][()] >= 1
    partitions = {dict(labels)["partition"] for labels in samples.get(metrics.PARTITION_LAG, {})}
    assert partitions <= {"0", "1", "2", "3"} and all(v >= 0 for v in samples.get(metrics.PARTITION_LAG, {}).values())

    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert service.stop() == 0


def test_a_second_instance_on_a_taken_metrics_port_stops_with_exit_code_2(start_service):
    """Two instances on one machine with the same METRICS_PORT: the second exits 2 naming METRICS_PORT, not a traceback."""
    port = free_port()
    first = start_service(METRICS_PORT=str(port))
    wait_until_ready(first, port)
    second = start_service(METRICS_PORT=str(port))
    assert second.process.wait(timeout=60) == 2
    assert any("METRICS_PORT" in m for m in second.messages()), second.tail()
    assert first.alive
