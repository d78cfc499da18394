"""Wires the service together: model, MySQL pool, Kafka clients, then runs the loop until stopped."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config import Settings
from messaging.topics import ensure_topics, pipeline_topics
from events.pages import OTHER_PAGE
from model.artifact import load_model
from offline_store.features import COLD_START
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool
from runtime.shutdown import stop_on_signals
from service.loop import FinishBatchBeforeRevoke, PredictionLoop
from service.retry import Backoff, ShutdownRequested, retry_until_done, unless_stopped

log = logging.getLogger(__name__)

# How long a rebalance waits for the batch in hand; well under the group's rebalance timeout.
REVOKE_WAIT_S = 30.0


async def run_service(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (by default, until SIGINT or SIGTERM)."""
    model = load_model(settings.model_path)  # fail fast: without a model there is nothing to serve
    # The first call into sklearn pays for lazy imports and allocations; pay it before the first event.
    model.predict([(OTHER_PAGE,) * 3], [COLD_START])
    log.info("loaded model %s from %s", model.version, settings.model_path)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)

    backoff = Backoff.from_settings(settings)

    def retry(step, what):
        return retry_until_done(step, what=what, stop=stop, backoff=backoff)

    pool = producer = consumer = None
    try:
        await retry(lambda: ensure_topics(settings, pipeline_topics(settings)), f"reaching Kafka at {settings.kafka_bootstrap_servers}")
        pool = await retry(lambda: create_pool(settings), f"connecting to MySQL at {settings.mysql_host}:{settings.mysql_port}")
        feature_store = MySQLFeatureStore(pool, settings.mysql_query_timeout_ms)
        await retry(feature_store.check_schema, "checking the offline store")
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id="prediction-service",
            acks="all",
            # Broker-side de-duplication of the producer's own retries.
            enable_idempotence=True,
            linger_ms=5,
        )
        await retry(producer.start, "starting the Kafka producer")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            client_id="prediction-service",
            enable_auto_commit=False,
            # A new group starts at the oldest event, so nothing produced before the first
            # start goes unpredicted.
            auto_offset_reset="earliest",
        )
        prediction_loop = PredictionLoop(settings, consumer, producer, feature_store, model, stop)
        consumer.subscribe([settings.input_topic], listener=FinishBatchBeforeRevoke(prediction_loop, REVOKE_WAIT_S))
        joining = "joining the consumer group"
        await retry(lambda: unless_stopped(consumer.start(), stop, joining), joining)
        log.info(
            "consuming %s as group %s; predictions to %s, dead letters to %s",
            settings.input_topic, settings.kafka_group_id, settings.output_topic, settings.dlq_topic,
        )
        await prediction_loop.run()
        stats = prediction_loop.stats
        log.info("stopped cleanly after %d events: %d predictions, %d dead letters", stats.events, stats.predictions, stats.dead_letters)
    except ShutdownRequested as exc:
        log.warning("stopped while still %s; nothing in hand was committed, it will be processed on the next start", exc)
    finally:
        # Leaving the group first hands the partitions over at once instead of after a timeout.
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
        if pool is not None:
            await close_pool(pool)
