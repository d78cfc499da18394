"""The Kafka clients of the service, configured for the guarantees service/delivery/ keeps."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config import Settings
from messaging.kafka_security import kafka_client_options
from service.delivery.decompression import install_decompression_bound
from service.delivery.outputs import MAX_BATCH_BYTES, MAX_REQUEST_BYTES
from service.delivery.transactional_producer import transaction_timeout_ms

# aiokafka's wait before retrying a transactional request the broker was not ready for.
TRANSACTION_RETRY_BACKOFF_MS = 20
# How soon the consumer notices topics that appear or change; one small request to the broker.
CONSUMER_METADATA_MAX_AGE_MS = 10_000


def new_producer(settings: Settings, transactional_id: str | None = None) -> AIOKafkaProducer:
    transactions = {} if transactional_id is None else {
        "transactional_id": transactional_id, "transaction_timeout_ms": transaction_timeout_ms(settings),
        # The broker answers CONCURRENT_TRANSACTIONS while it still writes the previous
        # transaction's markers, a few ms; aiokafka's default 100 ms wait before asking again
        # then sets the latency of the next transaction.
        "retry_backoff_ms": TRANSACTION_RETRY_BACKOFF_MS,
    }
    return AIOKafkaProducer(
        **transactions,
        **kafka_client_options(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="prediction-service" if transactional_id is None else transactional_id,
        acks="all",
        # Broker-side de-duplication of the producer's own retries.
        enable_idempotence=True,
        # No waiting for more: while one request is with the broker (aiokafka sends one at a
        # time), the next batch fills by itself.
        linger_ms=0,
        max_request_size=MAX_REQUEST_BYTES,
        # Predictions go out as record batches per partition (record_batches.py); a bigger
        # batch means fewer, better-compressed requests (aiokafka's default is 16 kB, about 65
        # predictions).
        max_batch_size=MAX_BATCH_BYTES,
        compression_type=None if settings.output_compression == "none" else settings.output_compression,
    )


def new_consumer(settings: Settings) -> AIOKafkaConsumer:
    # Left alone, the client expands a compressed input batch whole, however far that goes.
    install_decompression_bound()
    return AIOKafkaConsumer(
        **kafka_client_options(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.kafka_group_id,
        client_id="prediction-service",
        enable_auto_commit=False,
        # Never move a position silently: PredictionLoop starts a new group at the oldest
        # event and reports offsets lost to retention (positions.py).
        auto_offset_reset="none",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        # aiokafka sends one fetch at a time to a broker, and a partition whose records were
        # still in hand when it went out waits for the next; the broker holds a fetch with no
        # data this long, so it bounds that wait (aiokafka's default, 500 ms, made p99 ~500 ms).
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        # Input written in transactions is read once committed, never from an aborted one.
        isolation_level="read_committed",
        # A deleted input topic leaves the group with no partitions, and it only sees the topic
        # created again at its next metadata refresh: at aiokafka's default, 5 minutes later.
        metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
    )
