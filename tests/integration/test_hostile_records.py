"""Ordinary records that once stopped a partition for good: compressed batches and records near 1 MB."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter

import pytest

from config import COMPRESSION_TYPES
from events.dead_letter import read_dead_letter_headers
from events.schema import decode_prediction
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import create_topic, read_topic, send_records
from tests.integration.test_pipeline import as_records, read_predictions

pytestmark = pytest.mark.integration

NEAR_ONE_MB = 1_048_500


def test_input_in_every_codec_gets_exactly_one_prediction_each(pipeline_settings, start_service):
    """Batches compressed with none, gzip, snappy, lz4 and zstd are all read, and each event is predicted once."""
    service = start_service(OUTPUT_COMPRESSION="zstd")
    by_codec = {codec: random_events(20, list(range(STORE_USERS)), seed=100 + n) for n, codec in enumerate(COMPRESSION_TYPES)}

    async def produce_each_codec():
        for codec, events in by_codec.items():
            await send_records(pipeline_settings, as_records(events), compression_type=None if codec == "none" else codec)

    asyncio.run(produce_each_codec())
    wanted = [e.event_id for events in by_codec.values() for e in events]
    predicted = Counter(decode(record) for record in read_predictions(pipeline_settings, wanted))
    assert set(predicted) == set(wanted)
    assert max(predicted.values()) == 1, "exactly one prediction per event"
    assert service.alive
    assert service.stop() == 0


def decode(record) -> str:
    return decode_prediction(record.value).event_id


def test_a_record_near_one_megabyte_is_dead_lettered_cut_to_fit_and_the_partition_goes_on(pipeline_settings, start_service):
    """The broker takes a 1,048,500-byte record; its dead letter is truncated with size and digest, and the 249 events
    behind it are predicted."""
    big = b"{" + b"x" * (NEAR_ONE_MB - 1)
    events = random_events(249, list(range(STORE_USERS)), seed=7)
    # One key for all, so the events queue up behind the big record on its partition.
    records = [(b"same-partition", big)] + [(b"same-partition", value) for _, value in as_records(events)]
    asyncio.run(send_records(pipeline_settings, records, max_request_size=2 * 1024 * 1024))
    service = start_service()

    predicted = Counter(decode(record) for record in read_predictions(pipeline_settings, [e.event_id for e in events], timeout_s=90))
    assert set(predicted) == {e.event_id for e in events} and max(predicted.values()) == 1
    (dead,) = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: len(rs) >= 1, 30))
    headers = dict(dead.headers)
    assert headers["dlq.value.truncated"] == b"true"
    assert headers["dlq.value.original.bytes"] == str(NEAR_ONE_MB).encode()
    assert headers["dlq.value.sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert big.startswith(dead.value) and len(dead.value) > 900_000
    assert read_dead_letter_headers(dead.headers)["dlq.error.kind"] == "not_json"
    assert service.alive
    assert service.stop() == 0


def test_a_dead_letter_the_topic_refuses_is_sent_without_its_value(pipeline_settings, start_service):
    """A DLQ topic with a 20 kB limit refuses a 100 kB dead letter; it goes out in its smallest form and the next event
    is still predicted."""
    asyncio.run(create_topic(pipeline_settings, pipeline_settings.dlq_topic, **{"max.message.bytes": "20000"}))
    bad = random.Random(8).randbytes(100_000)  # incompressible, so no codec brings it under the limit
    (after,) = random_events(1, list(range(STORE_USERS)), seed=8)
    asyncio.run(send_records(pipeline_settings, [(b"k", bad), (b"k", as_records([after])[0][1])]))
    service = start_service()

    assert after.event_id in {decode(r) for r in read_predictions(pipeline_settings, [after.event_id])}
    (dead,) = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: len(rs) >= 1, 30))
    headers = dict(dead.headers)
    assert dead.value == b""
    assert headers["dlq.value.original.bytes"] == b"100000"
    assert headers["dlq.value.sha256"] == hashlib.sha256(bad).hexdigest().encode()
    assert read_dead_letter_headers(dead.headers)["dlq.source.offset"] == "0"
    assert service.alive
    assert service.stop() == 0
