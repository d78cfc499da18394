"""The benchmark's ceiling: aiokafka consuming and producing the same records, with no work at all.

    .venv/bin/python -m tools.bench.passthrough      # same settings as the service (environment, .env)

Same batch size (BATCH_MAX_RECORDS), same consumer group mechanics and the same producer
settings as the service; each input record is copied to OUTPUT_TOPIC as it is, one record
batch per partition, with up to four batches awaiting acknowledgement while the next is
fetched and offsets committed every COMMIT_INTERVAL_MS, as the service does. Whatever the
service does beyond this is its own cost.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from config import load_settings
from messaging.kafka_security import kafka_client_options


async def main() -> None:
    settings = load_settings()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    consumer = AIOKafkaConsumer(
        settings.input_topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.kafka_group_id,
        **kafka_client_options(settings),
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True, **kafka_client_options(settings),
        compression_type=None if settings.output_compression == "none" else settings.output_compression,
        max_batch_size=256 * 1024,
    )
    await consumer.start()
    await producer.start()
    in_flight: list[tuple[list[asyncio.Future[Any]], dict[TopicPartition, int]]] = []
    pending_commit: dict[TopicPartition, int] = {}
    last_commit = time.monotonic()
    try:
        while not stop.is_set():
            timeout_ms = 2 if in_flight else settings.poll_timeout_ms
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=settings.batch_max_records)
            deliveries = []
            for tp, records in batches.items():
                batch = producer.create_batch()
                for record in records:
                    if batch.append(timestamp=None, key=record.key, value=record.value) is None:
                        deliveries.append(await producer.send_batch(batch, settings.output_topic, partition=tp.partition))
                        batch = producer.create_batch()
                        batch.append(timestamp=None, key=record.key, value=record.value)
                deliveries.append(await producer.send_batch(batch, settings.output_topic, partition=tp.partition))
            if deliveries:
                in_flight.append((deliveries, {tp: records[-1].offset + 1 for tp, records in batches.items()}))
            acknowledged: dict[TopicPartition, int] = {}
            while in_flight and (len(in_flight) > 4 or all(d.done() for d in in_flight[0][0])):
                done, offsets = in_flight.pop(0)
                await asyncio.gather(*done)
                acknowledged.update(offsets)
            pending_commit.update(acknowledged)
            if pending_commit and (not batches or time.monotonic() - last_commit >= settings.commit_interval_ms / 1000):
                await consumer.commit(dict(pending_commit))
                pending_commit.clear()
                last_commit = time.monotonic()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
