"""Measure each OUTPUT_COMPRESSION codec on real prediction records: bytes on the wire and producer CPU.

    .venv/bin/python -m tools.bench.measure_output_compression [--records 50000] [--batch 100]

Wire bytes come from building record batches exactly as the producer does (a batch of
`--batch` predictions, as one partition receives from one service batch). CPU is the producer
process's CPU time to send `--records` predictions to a fresh topic on the local broker and
have them acknowledged, per codec in turn, so the figures are comparable within one run; the
batch build time isolates the codec's own cost from the rest of the send path.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from config import COMPRESSION_TYPES, Settings, load_settings
from events.schema import Prediction, encode_key, encode_prediction
from messaging.kafka_security import kafka_client_options
from messaging.topics import ensure_topics

# The codec ids of Kafka's record-batch attributes.
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def predictions(count: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(1)
    now = datetime.now(UTC)
    records = []
    for _ in range(count):
        user_id = rng.randrange(10_000)
        p = Prediction(str(uuid.UUID(int=rng.getrandbits(128))), user_id, rng.random(), "20261126T174256Z-6b0000d504", now, now)
        records.append((encode_key(user_id), encode_prediction(p)))
    return records


def wire_bytes(records: list[tuple[bytes, bytes]], codec: str, batch: int) -> int:
    total = 0
    for start in range(0, len(records), batch):
        builder = DefaultRecordBatchBuilder(2, CODEC_IDS[codec], 0, -1, -1, -1, batch_size=10**8)
        for offset, (key, value) in enumerate(records[start : start + batch]):
            builder.append(offset, timestamp=None, key=key, value=value, headers=[])
        total += len(builder.build())
    return total


async def producer_cpu_s(settings: Settings, records: list[tuple[bytes, bytes]], codec: str, topic: str) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5,
        **kafka_client_options(settings),
        compression_type=None if codec == "none" else codec,
    )
    await producer.start()
    try:
        started = time.process_time()
        for start in range(0, len(records), 500):
            deliveries = [await producer.send(topic, value, key) for key, value in records[start : start + 500]]
            await asyncio.gather(*deliveries)
        return time.process_time() - started
    finally:
        await producer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    settings = load_settings()
    records = predictions(args.records)
    topic = f"compression-bench-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    print(f"{args.records} predictions, {sum(len(v) for _, v in records) / len(records):.0f} bytes of JSON each, batches of {args.batch}")
    print(f"{'codec':<8}{'wire bytes/record':>20}{'ratio':>8}{'batch build µs/record':>24}{'producer CPU µs/record':>25}")
    plain = wire_bytes(records, "none", args.batch)
    try:
        for codec in COMPRESSION_TYPES:
            started = time.process_time()
            size = wire_bytes(records, codec, args.batch)
            build = time.process_time() - started
            cpu = await producer_cpu_s(settings, records, codec, topic)
            print(
                f"{codec:<8}{size / len(records):>20.1f}{plain / size:>8.2f}{build / len(records) * 1e6:>24.2f}"
                f"{cpu / len(records) * 1e6:>25.1f}"
            )
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
