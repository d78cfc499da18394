"""The benchmark's steady-rate load and arrival watcher (tools/bench/kcat.py) against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.delivery.key_partitions import keyed_partition
from tests.integration.kafka_helpers import read_topic
from tools.bench.bench_topics import PARTITIONS, create_topics, delete_topics, events, read_times
from tools.bench.kcat import arrivals_watched, send_paced

pytestmark = pytest.mark.integration

WATCHED = 2


def test_paced_load_arrives_whole_keyed_like_the_service_and_its_arrival_is_noted(stack_settings):
    """Every record arrives once, unchanged, on the partition Kafka's own partitioner picks; the
    watcher notes each partition's last offset, or one partition's when asked; the run takes as
    long as the rate says."""
    topic = f"it-{uuid.uuid4().hex[:8]}-paced"
    sent_events = list(events(300, users=50, seed=5))

    async def run():
        await create_topics(stack_settings, topic)
        try:
            async with arrivals_watched(stack_settings, topic) as arrived, arrivals_watched(stack_settings, topic, WATCHED) as arrived_one:
                started = asyncio.get_running_loop().time()
                sent = await send_paced(stack_settings, topic, iter(sent_events), rate=600, seconds=0.5)
                took_s = asyncio.get_running_loop().time() - started
                records = await read_topic(stack_settings, topic, lambda rs: len(rs) >= sent, timeout_s=30)
                times = await read_times(stack_settings, topic, sent, timeout_s=30)
                last_watched = max(r.offset for r in records if r.partition == WATCHED)
                for _ in range(100):  # the watchers may see the last records a moment after the reader
                    if {p for p, _, _ in arrived} >= {r.partition for r in records} and any(o >= last_watched for _, o, _ in arrived_one):
                        break
                    await asyncio.sleep(0.05)
                return sent, took_s, records, times, list(arrived), list(arrived_one)
        finally:
            await delete_topics(stack_settings, [topic])

    sent, took_s, records, times, arrived, arrived_one = asyncio.run(run())
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
    # Watching one partition notes that partition alone, and maps to exactly its events.
    assert {partition for partition, _, _ in arrived_one} == {WATCHED}
    assert max(offset for _, offset, _ in arrived_one) == last_offsets[WATCHED]
    assert set(times.arrivals(arrived_one)) == {e for e, (p, _) in times.positions.items() if p == WATCHED}
