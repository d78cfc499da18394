"""A stop request ends the service with exit code 0 within SHUTDOWN_TIMEOUT_S, whatever it is doing,
and nothing undelivered is committed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from config import Settings
from tests.conftest import STORE_USERS, env_settings
from tests.factories import random_events
from tests.integration.kafka_helpers import read_topic, send_records
from tests.integration.test_hostile_records import decode
from tests.integration.test_pipeline import as_records, read_predictions
from tools.chaos.private_kafka import PrivateKafka
from tools.chaos.tcp_proxy import TcpProxy, free_port

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT_S = 6
# The deadline is the service's; this slack only absorbs a busy machine starting and reaping it.
REAP_SLACK_S = 10


def stop_and_time(service) -> tuple[int, float]:
    started = time.monotonic()
    code = service.stop(timeout_s=SHUTDOWN_TIMEOUT_S + REAP_SLACK_S)
    return code, time.monotonic() - started


def test_a_stop_during_start_up_exits_cleanly(start_service):
    """SIGTERM while the program is still importing and loading the model ends it with exit 0, not a kill."""
    service = start_service(SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S))
    time.sleep(0.3)
    assert service.alive, "the stop must arrive during start-up"
    code, _ = stop_and_time(service)
    assert code == 0, service.tail()


def test_a_stop_while_kafka_is_unreachable_exits_cleanly_and_quietly(start_service):
    """With no broker at all, the service retries quietly (no flood of client errors) and a stop ends it with exit 0."""
    service = start_service(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S))
    service.wait_for_message("Kafka unavailable while creating topics", timeout_s=60, count=3)
    code, _ = stop_and_time(service)
    assert code == 0, service.tail()
    retry_lines = [m for m in service.messages() if "unavailable while" in m]
    assert all("next try in" in m for m in retry_lines)


def test_a_stop_during_a_database_outage_exits_cleanly_without_committing(pipeline_settings, start_service):
    """MySQL cut with a batch in hand: SIGTERM ends the retries with exit 0 and commits nothing for that batch."""
    with TcpProxy(pipeline_settings.mysql_host, pipeline_settings.mysql_port) as proxy:
        service = start_service(MYSQL_PORT=str(proxy.port), SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S), FEATURE_CACHE_MAX_USERS="0")
        service.wait_for_message("partitions assigned")
        proxy.cut()
        events = random_events(20, list(range(STORE_USERS)), seed=31)
        asyncio.run(send_records(pipeline_settings, as_records(events)))
        service.wait_for_message("MySQL unavailable while looking up features", timeout_s=30)
        code, _ = stop_and_time(service)
        assert code == 0, service.tail()
    start_service()
    predicted = Counter(decode(r) for r in read_predictions(pipeline_settings, [e.event_id for e in events]))
    assert set(predicted) == {e.event_id for e in events}


@pytest.fixture
def private_kafka(tmp_path):
    broker = PrivateKafka(tmp_path / "kafka").start()
    yield broker
    broker.thaw()
    broker.kill()


def test_a_stop_during_a_broker_outage_exits_in_time_and_loses_nothing(private_kafka, pipeline_env, start_service):
    """Broker killed mid-stream: SIGTERM ends the service with exit 0 within SHUTDOWN_TIMEOUT_S, the client's
    error storm is collapsed, and after the broker returns every event is predicted (nothing undelivered was committed)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": private_kafka.bootstrap_servers,
        "BATCH_MAX_RECORDS": "50",
        "SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
    }
    settings: Settings = env_settings(**{**pipeline_env, **env})
    events = random_events(3000, list(range(STORE_USERS)), seed=32)
    service = start_service(**env)
    service.wait_for_message("partitions assigned", timeout_s=60)
    asyncio.run(send_records(settings, as_records(events)))
    asyncio.run(read_topic(settings, settings.output_topic, lambda rs: len(rs) >= 100, 60))

    private_kafka.kill()
    time.sleep(5)
    code, _ = stop_and_time(service)
    assert code == 0, service.tail()
    client_lines = [e for e in service.log_entries() if e.get("logger", "").startswith("aiokafka")]
    assert len(client_lines) < 40, f"{len(client_lines)} client log lines in about 5 s of outage"

    private_kafka.start(format_storage=False)
    start_service(**env)
    predicted = Counter(decode(r) for r in read_predictions(settings, [e.event_id for e in events], timeout_s=120))
    assert set(predicted) == {e.event_id for e in events}
