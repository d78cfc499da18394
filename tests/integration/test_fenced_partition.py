"""A fenced instance against the real broker: it leaves the partition alone until the group moves it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from messaging.kafka_security import kafka_client_options
from service.delivery.positions import name
from service.delivery.transactional_producer import transactional_id
from service.observe import metrics
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import create_topic, read_topic
from tests.integration.test_group_timing import FAST_GROUP
from tests.integration.test_hostile_records import decode
from tests.integration.test_pipeline import as_records, read_predictions
from tools.bench.bench_topics import delete_topics

pytestmark = pytest.mark.integration

TAKEN_OVER = "was taken over by another instance"
# Past the session timeout after which the service used to start a producer again, fencing the
# owner back.
HOLD_S = 1.5 * int(FAST_GROUP["KAFKA_SESSION_TIMEOUT_MS"]) / 1000
COMMIT_EVERY_S = 0.5


def test_a_fenced_instance_never_fences_the_owner_back_and_nothing_is_lost(pipeline_settings, start_service):
    """Another producer with a partition's transactional id fences the service while the group still assigns
    it the partition: the service logs and counts the fence once and leaves the partition paused (the other
    producer commits for longer than a session timeout without being fenced back) while its other partitions
    go on; after a real rebalance the partition is processed again, every event predicted exactly once."""
    settings = pipeline_settings
    fenced = TopicPartition(settings.input_topic, 0)
    first = start_service(**FAST_GROUP)
    first.wait_for_message("transactions ready", count=4)
    users = list(range(STORE_USERS))
    before, during, elsewhere = (random_events(n, users, seed=seed) for n, seed in ((30, 71), (30, 72), (60, 73)))
    asyncio.run(send_to(settings, as_records(before), only=fenced.partition))
    read_predictions(settings, [e.event_id for e in before])

    scratch = f"{settings.input_topic}-owner"
    asyncio.run(create_topic(settings, scratch, 1))
    try:
        commits = asyncio.run(hold(settings, fenced, scratch, as_records(during), as_records(elsewhere), first))
    finally:
        asyncio.run(delete_topics(settings, [scratch]))
    assert commits >= HOLD_S / COMMIT_EVERY_S / 2, "the owner kept committing, never fenced back"
    assert sum(TAKEN_OVER in m for m in first.messages()) == 1 and first.metric_total(metrics.FENCES_TOTAL) == 1
    assert sum(f"{name(fenced)}: transactions ready" in m for m in first.messages()) == 1, "no producer started again"
    read_predictions(settings, [e.event_id for e in elsewhere])  # the other partitions went on meanwhile

    second = start_service(**FAST_GROUP)  # joining: a real rebalance moves every partition
    second.wait_for_message("transactions ready", timeout_s=60)
    wanted = [e.event_id for e in before + during + elsewhere]
    predicted = Counter(decode(r) for r in read_predictions(settings, wanted, timeout_s=90))
    late = asyncio.run(read_topic(settings, settings.output_topic, lambda rs: False, 3))
    assert Counter(decode(r) for r in late) == predicted, "nothing came late"
    assert set(predicted) == set(wanted) and max(predicted.values()) == 1, "every event predicted exactly once"
    assert first.stop() == 0 and second.stop() == 0


async def hold(settings, fenced: TopicPartition, scratch: str, during, elsewhere, service) -> int:
    """Start a producer with the partition's transactional id (fencing the service's), send events to
    that partition and to the others, and once the service has hit the fence, commit a transaction
    every COMMIT_EVERY_S for HOLD_S. Returns how many committed; being fenced back raises
    ProducerFenced and fails the test."""
    owner = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, transactional_id=transactional_id(settings, fenced),
        **kafka_client_options(settings),
    )
    await owner.start()
    try:
        await send_to(settings, during, only=fenced.partition)
        await send_to(settings, elsewhere, avoid=fenced.partition)
        await asyncio.to_thread(service.wait_for_message, TAKEN_OVER, 30)
        commits = 0
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            async with owner.transaction():
                await owner.send_and_wait(scratch, b"owner", partition=0)
            commits += 1
            await asyncio.sleep(COMMIT_EVERY_S)
        return commits
    finally:
        await owner.stop()


async def send_to(settings, records, *, only: int | None = None, avoid: int | None = None) -> None:
    """Send `records` to one input partition (`only`), or in turn to every one but `avoid`."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(settings))
    await producer.start()
    try:
        targets = [only] if only is not None else sorted(set(await producer.partitions_for(settings.input_topic)) - {avoid})
        deliveries = [
            await producer.send(settings.input_topic, value, key, partition=targets[n % len(targets)])
            for n, (key, value) in enumerate(records)
        ]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
