"""The closed loop on a private stack with STACK_SECURITY=on, every program as its own principal with only the
stack's grants: producer.py --outcomes sends purchases, the purchase sink stores them with the loader's MySQL
user, the quality monitor labels the service's predictions and publishes its snapshot, which the consumer
principal reads (and cannot forge), and training reads what was served and labels it in a temporary table.
Then a program lacking a grant stops with exit code 2 naming what it was refused, and the MySQL users stay
within theirs."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from config import Settings
from events.purchase import decode_purchase
from events.schema import decode_prediction
from features.contract import FeatureContract
from model.logged import LoggedOptions, gather_labelled
from offline_store.mysql import mysql_ssl_context
from quality.snapshot import QualitySnapshot, decode_snapshot
from tests.integration.kafka_helpers import read_topic, send_records
from tests.integration.secured_stack import MYSQL_LOADER_ENV, MYSQL_SERVICE_ENV, plain_settings, running_secured_stack, settings_of
from tests.integration.service_process import REPO_ROOT, ServiceProcess
from tests.integration.test_secured_pipeline import REFUSAL_TIMEOUT_S, STORE_USERS, program_env, promoted_model_registry
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration

# Short windows, so that the run's first events are labelled within seconds of the last.
LOOP_SETTINGS = {"LABEL_WINDOW_S": "2", "LABEL_LATE_ALLOWANCE_S": "1", "POLL_TIMEOUT_MS": "100", "STATS_INTERVAL_S": "1"}
EVENTS = 60
WAIT_S = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    with running_secured_stack(tmp_path_factory.mktemp("secured-loop")) as env:
        yield env


@pytest.fixture(scope="module")
def model_registry(stack, tmp_path_factory) -> Path:
    return promoted_model_registry(stack, tmp_path_factory)


class ProgramProcess(ServiceProcess):
    """One of the project's programs (`argv` after the interpreter), with the service process's log helpers."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.argv = argv

    def start(self) -> ProgramProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen([sys.executable, *self.argv], cwd=REPO_ROOT, env=self.env, stdout=log_file,
                                            stderr=subprocess.STDOUT)
        return self


def loop_env(stack: dict[str, str], *env_files: str, **extra: str) -> dict[str, str]:
    return program_env(stack, *env_files, **LOOP_SETTINGS, **extra)


def sink_process(stack: dict[str, str], log_path: Path, **extra: str) -> ProgramProcess:
    return ProgramProcess(["-m", "offline_store.purchase_sink"], loop_env(stack, "purchase-sink", MYSQL_LOADER_ENV, **extra), log_path)


def monitor_process(stack: dict[str, str], principal: str, log_path: Path, model_registry: Path) -> ProgramProcess:
    env = loop_env(stack, principal, MODEL_URI=str(model_registry), QUALITY_METRICS_PORT=str(free_port()))
    return ProgramProcess(["quality_monitor.py", "--snapshot-interval-s", "0.5"], env, log_path)


def mysql_rows(settings: Settings, *statements: str, args: tuple | list = ()) -> tuple:
    """The last statement's rows, all of them run on one connection (a temporary table lives in its connection)."""
    connection = pymysql.connect(host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
                                 password=settings.mysql_password, database=settings.mysql_database,
                                 ssl=mysql_ssl_context(settings), connect_timeout=5, autocommit=True)
    with connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, args or None)
        return cursor.fetchall()


def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.5)


@dataclass(frozen=True)
class LoopRun:
    events: int  # as producer.py --outcomes reported them
    purchases: int


@pytest.fixture(scope="module")
def loop_run(stack, model_registry, tmp_path_factory) -> Iterator[LoopRun]:
    """The service, the purchase sink and the quality monitor running as their principals while producer.py
    --outcomes sends one run's events and purchases; yields what the producer reported, then stops all three."""
    logs = tmp_path_factory.mktemp("loop-logs")
    service = ServiceProcess(loop_env(stack, "prediction-service", MYSQL_SERVICE_ENV, MODEL_URI=str(model_registry),
                                      METRICS_PORT=str(free_port())), logs / "service.log")
    sink = sink_process(stack, logs / "sink.log")
    monitor = monitor_process(stack, "quality-monitor", logs / "monitor.log", model_registry)
    running: list[ServiceProcess] = []
    try:
        # Each creates the topics it owns, in the order a fresh secured cluster needs: the pipeline's, then the
        # purchases topic, then the snapshots' topic.
        running.append(service.start())
        service.wait_for_message("partitions assigned", timeout_s=WAIT_S)
        running.append(sink.start())
        sink.wait_for_message("writing purchases from", timeout_s=WAIT_S)
        running.append(monitor.start())
        monitor.wait_for_message("snapshots to", timeout_s=WAIT_S)
        produced = subprocess.run(
            [sys.executable, "producer.py", "--outcomes", "--count", str(EVENTS), "--rate", "15", "--seed", "11",
             "--users", str(STORE_USERS)],
            cwd=REPO_ROOT, env=loop_env(stack, "producer", MYSQL_SERVICE_ENV), capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_S,
        )
        assert produced.returncode == 0, produced.stdout[-2000:] + produced.stderr[-2000:]
        counts = re.search(r"sent (\d+) events .*; (\d+) purchases? to (\S+)", produced.stdout)
        assert counts, produced.stdout[-2000:]
        yield LoopRun(events=int(counts[1]), purchases=int(counts[2]))
        for process in reversed(running):
            assert process.stop() == 0, process.tail()
    finally:
        for process in running:
            if process.alive:
                process.kill()


def test_the_sink_stores_every_purchase_the_producer_sent(stack, loop_run):
    """Every purchase on PURCHASES_TOPIC (read on the plain listener) is in the store, written as prediction_loader."""
    assert loop_run.events == EVENTS and loop_run.purchases > 0
    topic = settings_of(stack, "purchase-sink").purchases_topic
    records = asyncio.run(read_topic(plain_settings(stack), topic, lambda r: len(r) >= loop_run.purchases, 30))
    refs = [decode_purchase(record.value).purchase_id for record in records]
    assert len(refs) == loop_run.purchases
    loader = settings_of(stack, MYSQL_LOADER_ENV)
    placeholders = ", ".join(["%s"] * len(refs))

    def stored() -> int:
        return mysql_rows(loader, f"SELECT COUNT(*) FROM purchases WHERE purchase_ref IN ({placeholders})", args=refs)[0][0]

    until(lambda: stored() == len(refs), f"{len(refs)} purchases in the store")


def test_the_monitor_labels_predictions_and_the_consumer_reads_its_snapshot(stack, loop_run):
    """The consumer principal reads the service's predictions and a snapshot in which the serving version has labelled
    predictions; it may read QUALITY_TOPIC, never write it."""
    consumer = settings_of(stack, "consumer")
    predictions = asyncio.run(read_topic(consumer, consumer.output_topic, lambda r: len(r) >= EVENTS, WAIT_S))
    versions = {decode_prediction(record.value).model_version for record in predictions}
    assert len(predictions) >= EVENTS and versions

    def labelled(snapshot: QualitySnapshot) -> int:
        return sum(m.labelled for m in snapshot.models if m.role == "serving" and m.model_version in versions)

    def has_labels(records: list) -> bool:
        return any(labelled(decode_snapshot(record.value)) > 0 for record in records)

    snapshots = asyncio.run(read_topic(consumer, consumer.quality_topic, has_labels, WAIT_S))
    assert has_labels(snapshots), f"no snapshot with labelled predictions of {versions} among {len(snapshots)}"
    assert max(labelled(decode_snapshot(record.value)) for record in snapshots) <= len(predictions)
    forged = json.dumps({"at": datetime.now(UTC).isoformat(), "models": []}).encode()
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(send_records(consumer, [(b"quality", forged)], consumer.quality_topic))


def test_training_reads_what_was_served_and_labels_it_in_a_temporary_table(stack, loop_run):
    """The trainer principal reads the predictions and their events; prediction_loader labels them in MySQL."""
    settings = settings_of(stack, "trainer", MYSQL_LOADER_ENV, **LOOP_SETTINGS)
    data = asyncio.run(gather_labelled(settings, LoggedOptions(), FeatureContract(), datetime.now(UTC)))
    assert data.served_events >= EVENTS
    assert 0 < len(data) <= data.served_events


def refusal_of(process: ProgramProcess) -> str:
    assert process.process is not None
    assert process.process.wait(timeout=REFUSAL_TIMEOUT_S) == 2, process.tail()
    return "\n".join(process.messages())


def test_the_sink_without_its_group_acl_stops_naming_the_group(stack, loop_run, tmp_path):
    """A PURCHASES_GROUP_ID the purchase-sink principal has no ACL for: exit 2, naming the principal and the group."""
    refusal = refusal_of(sink_process(stack, tmp_path / "sink.log", PURCHASES_GROUP_ID="unlisted-group").start())
    assert "User:purchase-sink" in refusal and "unlisted-group" in refusal, refusal[-2000:]


def test_the_monitor_as_the_consumer_principal_stops_naming_the_purchases_topic(stack, model_registry, loop_run, tmp_path):
    """The consumer principal may not read purchases: the monitor logged in as it stops with exit 2 naming that topic."""
    refusal = refusal_of(monitor_process(stack, "consumer", tmp_path / "monitor.log", model_registry).start())
    purchases_topic = settings_of(stack, "consumer").purchases_topic
    assert "User:consumer" in refusal and f"topic {purchases_topic}" in refusal, refusal[-2000:]


def test_only_the_loaders_account_may_write_purchases_or_create_temporary_tables(stack, loop_run):
    """prediction_loader may create and fill a temporary table; prediction_service may neither create one nor write purchases."""
    loader, service = settings_of(stack, MYSQL_LOADER_ENV), settings_of(stack, MYSQL_SERVICE_ENV)
    probe = ("CREATE TEMPORARY TABLE served_probe (id INT)", "INSERT INTO served_probe VALUES (7)", "SELECT id FROM served_probe")
    assert mysql_rows(loader, *probe) == ((7,),)
    for statement in ("CREATE TEMPORARY TABLE served_probe (id INT)",
                      "INSERT INTO purchases (purchase_ref, user_id, amount, purchased_at) VALUES ('forged', 1, 9.99, NOW())"):
        with pytest.raises(pymysql.err.OperationalError, match="denied"):
            mysql_rows(service, statement)
