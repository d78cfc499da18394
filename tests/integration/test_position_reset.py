"""The input topic deleted and created again under a running service: its positions are reset,
and every record of the new topic still gets its prediction or dead letter."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import TopicAlreadyExistsError

from config import Settings
from events.dead_letter import read_dead_letter_headers
from service.observe import metrics
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import create_topic, read_topic, send_records
from tests.integration.test_pipeline import as_records, predictions_by_event, read_predictions
from tools.bench.bench_topics import delete_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
# More events before the recreation than after it, so that the old positions lie past the new
# topic's end on every partition.
EVENTS_BEFORE = 120
EVENTS_AFTER = 40
INVALID_AFTER = 5
RECREATE_TIMEOUT_S = 60


async def recreate_topic(settings: Settings, topic: str) -> None:
    await delete_topics(settings, [topic])
    deadline = time.monotonic() + RECREATE_TIMEOUT_S
    while True:  # deletion completes in the background; creating too soon is refused
        try:
            await create_topic(settings, topic, PARTITIONS)
            return
        except TopicAlreadyExistsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_recreated_input_topic_is_read_from_its_start_and_nothing_of_it_is_lost(guarantee, pipeline_settings, start_service):
    """After the input topic is deleted and created again, every event of the new topic is predicted and every
    invalid record dead-lettered, and the service says (and counts) that it reset its positions. The broker
    drops the group's offsets with the topic, so this is the reset of a partition whose offset is gone; a
    position past a truncated log's end, without a rebalance, is in test_delivery_properties.py."""
    service = start_service(PROCESSING_GUARANTEE=guarantee, TOPIC_PARTITIONS=str(PARTITIONS))
    service.wait_for_message("consuming", timeout_s=90)
    before = random_events(EVENTS_BEFORE, list(range(STORE_USERS)), seed=31)
    asyncio.run(send_records(pipeline_settings, as_records(before)))
    read_predictions(pipeline_settings, [e.event_id for e in before], timeout_s=60)

    asyncio.run(recreate_topic(pipeline_settings, pipeline_settings.input_topic))
    after = random_events(EVENTS_AFTER, list(range(STORE_USERS)), seed=32)
    invalid = [(b"1", f"not json {n}".encode()) for n in range(INVALID_AFTER)]
    asyncio.run(send_records(pipeline_settings, as_records(after) + invalid))

    wanted = {e.event_id for e in after}
    outputs = predictions_by_event(read_predictions(pipeline_settings, wanted, timeout_s=90))
    assert wanted <= set(outputs), f"not predicted: {sorted(wanted - set(outputs))}\n{service.tail()}"
    dead = asyncio.run(read_topic(
        pipeline_settings, pipeline_settings.dlq_topic, lambda rs: len(rs) >= INVALID_AFTER, 30,
    ))
    assert sorted(d.value for d in dead) == sorted(value for _, value in invalid)
    assert all(read_dead_letter_headers(d.headers)["dlq.error.kind"] == "not_json" for d in dead)
    gone = [m for m in service.messages() if "its committed offset is gone" in m or "past the end of the log" in m]
    assert gone, f"the reset is logged:\n{service.tail()}"
    assert service.metric_total(metrics.POSITION_RESETS_TOTAL) >= 1
    assert service.alive
    assert service.stop() == 0
