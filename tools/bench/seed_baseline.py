"""The original write-up's per-message design, re-implemented faithfully as the benchmark's baseline.

    .venv/bin/python -m tools.bench.seed_baseline      # same settings as the service (environment, .env)

For every message, one at a time, as the seed README describes: `async for` over an aiokafka
consumer (auto-commit), `json.loads`, one SQL query for that user, a one-row pandas DataFrame,
`predict_proba` in `asyncio.to_thread`, and `send_and_wait` of the JSON result. It uses this
project's store, model (MODEL_URI, checked as the service checks it) and wire format so the
numbers compare like for like; it has none of the service's validation or failure handling, and
is not meant to be run for anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

import aiomysql
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config import load_settings
from features.user import UserFeatures
from messaging.kafka_security import kafka_client_options
from model.artifact import load_model
from model.sources import open_model_source
from offline_store.mysql import EPOCH_SECONDS, mysql_ssl_context

QUERY = (
    "SELECT mean_last_3_purchases, purchase_count, "
    + EPOCH_SECONDS.format(column="last_purchase_at")
    + " FROM user_features WHERE user_id = %s"
)


def event_at_s(timestamp: str) -> float:
    """The event's moment in seconds since the epoch; a timestamp without an offset is UTC, as the service reads it."""
    moment = datetime.fromisoformat(timestamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def main() -> None:
    settings = load_settings()
    candidate = open_model_source(settings.model_uri, mlflow_tracking_uri=settings.mlflow_tracking_uri).fetch()
    model = load_model(candidate.artifact_path, expected_sha256=candidate.expected_sha256)
    pool = await aiomysql.create_pool(
        host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
        password=settings.mysql_password, db=settings.mysql_database, autocommit=True, ssl=mysql_ssl_context(settings),
    )
    consumer = AIOKafkaConsumer(
        settings.input_topic, bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.kafka_group_id, auto_offset_reset="earliest", **kafka_client_options(settings),
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await consumer.start()
    await producer.start()
    try:
        async for message in consumer:
            event = json.loads(message.value)
            async with pool.acquire() as conn, conn.cursor() as cursor:
                await cursor.execute(QUERY, (event["user_id"],))
                row = await cursor.fetchone()
            user = UserFeatures(float(row[0]), int(row[1]), float(row[2])) if row else None  # None: a cold-start user
            pages = event["last_three_pages_visited"]
            # The seed's shape: one row, through the whole Pipeline, in a thread.
            probability = await asyncio.to_thread(
                model.predict_with_pipeline, [tuple(pages)], [user], [event_at_s(event["timestamp"])]
            )
            result = {
                "event_id": event["event_id"], "user_id": event["user_id"],
                "purchase_probability": float(probability[0]), "model_version": model.version,
                "timestamp": event["timestamp"], "predicted_at": datetime.now(UTC).isoformat(),
            }
            await producer.send_and_wait(settings.output_topic, json.dumps(result).encode(), key=str(event["user_id"]).encode())
    finally:
        await consumer.stop()
        await producer.stop()
        pool.close()
        await pool.wait_closed()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
