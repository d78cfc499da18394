"""The benchmark's steady-rate load and arrival watcher (scripts/bench/kcat.py) against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bench.kafka_io import PARTITIONS, create_topics, delete_topics, events, read_times
from bench.kcat import arrivals_watched, send_paced
from service.publish import keyed_partition
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def test_paced_load_arrives_whole_keyed_like_the_service_and_its_arrival_is_noted(stack_settings):
    """Every record arrives once, unchanged, on the partition Kafka's own partitioner picks; the
    watcher notes each partition's last offset; the run takes as long as the rate says."""
    topic = f"it-{uuid.uuid4().hex[:8]}-paced"
    sent_events = list(events(300, users=50, seed=5))

    async def run():
        await create_topics(stack_settings, topic)
        try:
            async with arrivals_watched(stack_settings.kafka_bootstrap_servers, topic) as arrived:
                started = asyncio.get_running_loop().time()
                sent = await send_paced(stack_settings.kafka_bootstrap_servers, topic, iter(sent_events), rate=600, seconds=0.5)
                took_s = asyncio.get_running_loop().time() - started
                records = await read_topic(stack_settings, topic, lambda rs: len(rs) >= sent, timeout_s=30)
                times = await read_times(stack_settings, topic, sent, timeout_s=30)
                for _ in range(100):  # the watcher may see the last records a moment after the reader
                    if {p for p, _, _ in arrived} >= {r.partition for r in records}:
                        break
                    await asyncio.sleep(0.05)
                return sent, took_s, records, times, list(arrived)
        finally:
            await delete_topics(stack_settings, [topic])

    sent, took_s, records, times, arrived = asyncio.run(run())
    assert sent == 300
    assert took_s >= 0.45  # paced, not sent at once
    assert sorted((r.key, r.value) for r in records) == sorted((key, value) for key, value, _ in sent_events)
    assert all(r.partition == keyed_partition(r.key, PARTITIONS) for r in records)
    last_offsets: dict[int, int] = {}
    for r in records:
        last_offsets[r.partition] = max(last_offsets.get(r.partition, -1), r.offset)
    noted: dict[int, int] = {}
    for partition, offset, _ms in arrived:
        noted[partition] = max(noted.get(partition, -1), offset)
    assert noted == last_offsets
    assert len(times.arrivals(arrived)) == 300
