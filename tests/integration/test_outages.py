"""Broken dependencies: retried, never dead-lettered, and their offsets are not committed."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from events.schema import encode_event, encode_key
from tests.conftest import server_sql
from tests.factories import random_events
from tests.integration.kafka_helpers import committed_offsets, read_topic, send_records
from tests.integration.test_pipeline import predictions_by_event, read_predictions
from tools.chaos.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


async def committed_total(settings) -> int:
    return sum((await committed_offsets(settings)).values())


def send(settings, events):
    asyncio.run(send_records(settings, [(encode_key(e.user_id), encode_event(e)) for e in events]))


def test_a_database_outage_holds_the_offsets_and_loses_nothing(pipeline_settings, start_service):
    """MySQL cut mid-stream: the service retries, commits nothing for the events it cannot serve,
    dead-letters none of them, and predicts them all once MySQL is back."""
    before, during = random_events(20, list(range(50)), seed=21), random_events(20, list(range(50)), seed=22)
    with TcpProxy(pipeline_settings.mysql_host, pipeline_settings.mysql_port) as proxy:
        # No cache: every batch looks its users up, so the outage is in the batch's way.
        service = start_service(MYSQL_PORT=str(proxy.port), RETRY_BACKOFF_MAX_MS="300", FEATURE_CACHE_MAX_USERS="0")
        send(pipeline_settings, before)
        read_predictions(pipeline_settings, [e.event_id for e in before])
        deadline = time.monotonic() + 30
        while asyncio.run(committed_total(pipeline_settings)) < len(before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert asyncio.run(committed_total(pipeline_settings)) == len(before)

        proxy.cut()
        send(pipeline_settings, during)
        service.wait_for_message("MySQL unavailable while looking up features", timeout_s=30, count=3)
        assert asyncio.run(committed_total(pipeline_settings)) == len(before), "no commit while MySQL is down"
        early = predictions_by_event(asyncio.run(read_topic(pipeline_settings, pipeline_settings.output_topic, lambda rs: False, 2)))
        assert not {e.event_id for e in during} & set(early)

        proxy.restore()
        predictions = predictions_by_event(read_predictions(pipeline_settings, [e.event_id for e in during + before]))
        assert {e.event_id for e in during + before} <= set(predictions)
        dead = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: False, 2))
        assert dead == [], "an outage is never the event's fault"
        assert service.alive
        assert service.stop() == 0
    assert asyncio.run(committed_total(pipeline_settings)) == len(before) + len(during)


def test_with_the_features_in_memory_a_database_outage_does_not_stop_predictions(pipeline_settings, start_service):
    """The whole feature table fits the cache: MySQL cut mid-stream, events are still predicted, and the
    failed refresh is logged once."""
    events = random_events(30, list(range(50)), seed=23)
    with TcpProxy(pipeline_settings.mysql_host, pipeline_settings.mysql_port) as proxy:
        service = start_service(MYSQL_PORT=str(proxy.port), FEATURE_CACHE_VERSION_CHECK_S="1")
        service.wait_for_message("feature cache: snapshot")
        proxy.cut()
        send(pipeline_settings, events)
        predictions = predictions_by_event(read_predictions(pipeline_settings, [e.event_id for e in events]))
        assert {e.event_id for e in events} <= set(predictions)
        service.wait_for_message("cannot refresh cached features", timeout_s=30)
        assert sum("cannot refresh cached features" in m for m in service.messages()) == 1
        assert service.stop() == 0


def test_a_store_without_the_feature_table_stops_start_up_with_a_hint(start_service, stack_settings):
    """Pointed at an empty database, the service exits with code 2 and says to run the loader."""
    name = f"prediction_empty_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{name}`"))
    try:
        service = start_service(MYSQL_DATABASE=name)
        assert service.process.wait(timeout=60) == 2
        assert "offline_store.loader" in service.tail()
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))


def test_a_wrong_mysql_password_is_a_setting_to_fix_not_an_outage(start_service):
    """Access denied is not retried for ever: the service exits with code 2 and points at the MYSQL_* settings."""
    service = start_service(MYSQL_PASSWORD="certainly-not-the-password")
    assert service.process.wait(timeout=60) == 2
    assert "Access denied" in service.tail() and "MYSQL_" in service.tail()
