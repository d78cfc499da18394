"""Hostile input that once cost memory without bound: a decompression bomb and very long page names."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import cramjam
import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.util import calc_crc32c, encode_varint
from aiokafka.structs import TopicPartition

from config import Settings
from events.dead_letter import read_dead_letter_headers
from events.schema import MAX_PAGE_NAME_CHARS, encode_key
from messaging.kafka_security import kafka_client_options
from service.delivery.decompression import BOMB_KIND, MAX_DECOMPRESSED_BATCH_BYTES
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import read_topic
from tests.integration.test_hostile_records import decode
from tests.integration.test_pipeline import as_records, read_predictions

pytestmark = pytest.mark.integration

# 1 GiB of one byte: about 32 kB as zstd, far under the broker's 1 MB limit on a batch.
BOMB_BYTES = 1024 * 1024 * 1024
# The service's documented peak resident memory while it reads such a batch (README, "Bounded memory").
RSS_BOUND_BYTES = 500 * 1024 * 1024
PARTITION = 1
ZSTD = 4  # the codec bits of a record batch's attributes
LONG_PAGE_EVENTS = 5


def varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


def zstd_bomb_batch(value_bytes: int, chunk_bytes: int = 1024 * 1024) -> bytes:
    """A magic v2 record batch of one record whose value is `value_bytes` of b"x", compressed as it
    is written, so that this process never holds the value (aiokafka's producer would hold it twice)."""
    # Record: length, attributes, timestamp delta, offset delta, key (null), value, header count.
    head = b"\0" + varint(0) + varint(0) + varint(-1) + varint(value_bytes)
    tail = varint(0)
    compressor = cramjam.zstd.Compressor()
    compressor.compress(varint(len(head) + value_bytes + len(tail)) + head)
    chunk = b"x" * chunk_bytes
    for start in range(0, value_bytes, chunk_bytes):
        compressor.compress(chunk[: min(chunk_bytes, value_bytes - start)])
    compressor.compress(tail)
    records = bytes(compressor.finish())
    now_ms = int(time.time() * 1000)
    # Attributes, last offset delta, first and max timestamp, producer id, epoch, base sequence, count.
    covered = struct.pack(">hiqqqhii", ZSTD, 0, now_ms, now_ms, -1, -1, -1, 1) + records
    # Base offset (the broker assigns it), batch length, partition leader epoch, magic, CRC-32C.
    return struct.pack(">qiibI", 0, 4 + 1 + 4 + len(covered), -1, 2, calc_crc32c(covered)) + covered


async def send_raw_batch(settings: Settings, partition: int, batch: bytes) -> int:
    """Append a record batch as built, with no client re-encoding it; returns its offset."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await producer.start()
    try:
        await producer.partitions_for(settings.input_topic)
        leader = producer.client.cluster.leader_for_partition(TopicPartition(settings.input_topic, partition))
        request = ProduceRequest(
            transactional_id=None, required_acks=-1, timeout=30_000, topics=[(settings.input_topic, [(partition, batch)])]
        )
        response = await producer.client.send(leader, request)
    finally:
        await producer.stop()
    ((_, ((_, error_code, offset, *_),)),) = response.topics
    if error_code:
        raise for_code(error_code)()
    return int(offset)


async def send_to_partition(settings: Settings, records: list[tuple[bytes, bytes]], partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(settings))
    async with producer:
        deliveries = [await producer.send(settings.input_topic, value, key, partition=partition) for key, value in records]
        await asyncio.gather(*deliveries)


def long_page_event(n: int) -> bytes:
    return msgspec.json.encode({
        "event_id": f"long-page-{n}", "user_id": n, "timestamp": "2026-11-26T12:00:00Z",
        "last_three_pages_visited": ["home", f"{n}" + "p" * 10_000, "cart"],
    })


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the most resident memory the process has had since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_decompression_bomb_is_dead_lettered_and_the_service_stays_under_its_memory_bound(
    guarantee, pipeline_settings, start_service
):
    """A 32 kB zstd batch that expands to 1 GiB is dead-lettered (its offset, no value) as decompression_bomb,
    10 kB page names as invalid_pages; the service stays up, under 500 MB resident at its peak, and predicts
    every event behind them on the same partition."""
    service = start_service(PROCESSING_GUARANTEE=guarantee)
    service.wait_for_message("consuming", timeout_s=90)
    assert service.process is not None
    idle_peak = peak_rss_bytes(service.process.pid)
    events = random_events(50, list(range(STORE_USERS)), seed=21)
    bomb_offset = asyncio.run(send_raw_batch(pipeline_settings, PARTITION, zstd_bomb_batch(BOMB_BYTES)))
    long_pages = [(encode_key(n), long_page_event(n)) for n in range(LONG_PAGE_EVENTS)]
    asyncio.run(send_to_partition(pipeline_settings, long_pages + as_records(events), PARTITION))

    predicted = [decode(record) for record in read_predictions(pipeline_settings, [e.event_id for e in events], timeout_s=90)]
    assert sorted(predicted) == sorted(e.event_id for e in events), "every event behind the bomb, once"
    dead = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: len(rs) >= 1 + LONG_PAGE_EVENTS, 30))
    by_kind = sorted(((read_dead_letter_headers(d.headers)["dlq.error.kind"], d) for d in dead), key=lambda pair: pair[0])
    assert [kind for kind, _ in by_kind] == [BOMB_KIND] + ["invalid_pages"] * LONG_PAGE_EVENTS
    bomb = read_dead_letter_headers(by_kind[0][1].headers)
    assert (bomb["dlq.source.partition"], bomb["dlq.source.offset"]) == (str(PARTITION), str(bomb_offset))
    assert f"beyond {MAX_DECOMPRESSED_BATCH_BYTES:,} bytes" in bomb["dlq.error.reason"]
    assert not by_kind[0][1].value, "the bomb's value is not carried"
    assert all(f"at most {MAX_PAGE_NAME_CHARS}" in read_dead_letter_headers(d.headers)["dlq.error.reason"] for _, d in by_kind[1:])

    assert service.alive
    peak = peak_rss_bytes(service.process.pid)
    print(f"\n{guarantee}: service peak RSS {idle_peak / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB after a 1 GiB bomb")
    assert peak < RSS_BOUND_BYTES, f"peak RSS {peak / 2**20:.0f} MiB"
    assert any(f"@{bomb_offset}..{bomb_offset}:" in message for message in service.messages()), "one ERROR names the batch"
    assert service.stop() == 0
