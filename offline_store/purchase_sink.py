"""The purchase sink: purchases from PURCHASES_TOPIC into the offline store, their users' features fresh within seconds.

    python -m offline_store.purchase_sink [--check-config]

It reads PURCHASES_TOPIC in consumer group PURCHASES_GROUP_ID (run more copies to share the
partitions) and, per batch, in one MySQL transaction, adds the purchases the store does not hold
yet and recomputes their users' rows of `user_features` (offline_store/purchase_writes.py). The
prediction service picks the changed rows up within FEATURE_CHANGES_POLL_MS (offline_store/cache.py).

Nothing is lost and nothing counts twice: offsets are committed only after the batch's
transaction has committed (and its dead letters are acknowledged), so a crash replays the batch,
and a replayed purchase is known by its id and adds nothing. A purchase that does not decode goes
to DLQ_TOPIC with the reason, as invalid events do. MySQL or Kafka being away is retried with
backoff, nothing committed meanwhile. It writes with the loader's MySQL account (it inserts
purchases and rewrites feature rows) on a store the loader has built (`--keep-history` adds what
an older store lacks). SIGINT or SIGTERM stops it cleanly, exit code 0; a setting or grant to
fix stops it with one message and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiomysql
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings, describe_settings
from errors import SetupError, ShutdownRequested
from events.dead_letter import DeadLetter, strip_dead_letter
from events.purchase import Purchase, decode_purchase
from events.schema import InvalidEvent, WithheldValue
from messaging.kafka_security import kafka_client_options, start_kafka_client
from messaging.topics import ensure_topics
from offline_store.due_refreshes import DueRefreshes
from offline_store.mysql import close_pool, create_pool
from offline_store.purchase_writes import Written, check_sink_schema, check_storable, refresh_users, write_purchases
from runtime.shutdown import catch_stop_signals_early, stop_on_signals
from runtime.startup import start_program
from service.delivery.decompression import install_decompression_bound
from service.delivery.outputs import MAX_REQUEST_BYTES, dead_letter_for
from service.failures import as_setup_error, describe_error, exit_code, record_refusal
from service.retry import Backoff, retry_until_done, unless_stopped

# Named explicitly: run with `python -m`, this module's __name__ is "__main__".
log = logging.getLogger("offline_store.purchase_sink")

T = TypeVar("T")

# Purchases per transaction: enough to keep up with a backlog in few transactions, few enough
# that one holds the feature_set row (which the service's rebuilds also wait on) only briefly.
MAX_BATCH_RECORDS = 500
# A transaction may wait on the lock of a full rebuild; InnoDB's own lock wait timeout (50 s by
# default) ends such a wait first, as a retriable error.
MIN_TRANSACTION_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 5.0


@dataclass
class SinkCounts:
    written: int = 0
    known: int = 0
    dead_letters: int = 0
    refreshed_users: int = 0
    last_change_seq: int | None = None

    def add(self, written: Written) -> None:
        self.written += written.new
        self.known += written.known
        self.refreshed_users += written.refreshed_users
        if written.change_seq is not None:
            self.last_change_seq = written.change_seq

    def summary(self) -> str:
        return (
            f"purchases: {self.written} written, {self.known} already held (replays or repeated ids),"
            f" {self.dead_letters} dead-lettered; {self.refreshed_users} feature rows refreshed"
            f" (last change {self.last_change_seq if self.last_change_seq is not None else '-'})"
        )


def decode_storable(record: ConsumerRecord) -> Purchase:
    """The record's purchase, or InvalidEvent saying why it cannot be one the store holds."""
    if isinstance(record.value, WithheldValue):
        raise InvalidEvent(record.value.kind, record.value.reason)
    return check_storable(decode_purchase(record.value))


async def run_purchase_sink(
    settings: Settings, stop: asyncio.Event, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    counts: SinkCounts | None = None,
) -> None:
    """Write purchases into the offline store until `stop` is set; `counts`, when given, is kept up to date."""
    counts = counts if counts is not None else SinkCounts()
    backoff = Backoff.from_settings(settings)

    def step(action: Callable[[], Awaitable[T]], dependency: str, what: str) -> Awaitable[T]:
        # Start-up steps give way to a stop request at once; a batch's steps finish (see _Sink).
        return retry_until_done(
            lambda: unless_stopped(action(), stop, what), dependency=dependency, action=what, stop=stop, backoff=backoff
        )

    try:
        async with contextlib.AsyncExitStack() as resources:
            await step(
                lambda: ensure_topics(settings, [settings.purchases_topic, settings.dlq_topic]),
                "Kafka", f"creating topics at {settings.kafka_bootstrap_servers}",
            )
            pool = await step(lambda: create_pool(settings), "MySQL", f"connecting to {settings.mysql_host}:{settings.mysql_port}")
            resources.push_async_callback(_close, "the MySQL pool", lambda: close_pool(pool))
            timeout_s = max(settings.mysql_query_timeout_ms / 1000, MIN_TRANSACTION_TIMEOUT_S)
            await step(lambda: check_sink_schema(pool, settings.mysql_query_timeout_ms / 1000), "MySQL", "checking the offline store")
            producer = _dead_letter_producer(settings)
            resources.push_async_callback(_close, "the Kafka producer", producer.stop)
            await step(lambda: start_kafka_client(producer, settings), "Kafka", "starting the dead-letter producer")
            consumer = _purchase_consumer(settings)
            # Leaving the group first hands the partitions over at once instead of after a timeout.
            resources.push_async_callback(_close, "the Kafka consumer", consumer.stop)
            await step(lambda: start_kafka_client(consumer, settings), "Kafka", "starting the consumer")
            log.info(
                "writing purchases from %s (group %s) into %s at %s:%s; dead letters to %s",
                settings.purchases_topic, settings.purchases_group_id, settings.mysql_database,
                settings.mysql_host, settings.mysql_port, settings.dlq_topic,
            )
            sink = _Sink(settings, consumer, producer, pool, timeout_s, stop, clock, counts)
            reported = time.monotonic()
            last_summary = counts.summary()
            while not stop.is_set():
                await sink.run_batch()
                if time.monotonic() - reported >= settings.stats_interval_s:
                    reported = time.monotonic()
                    if counts.summary() != last_summary:
                        last_summary = counts.summary()
                        log.info("%s", last_summary)
            log.info("stopped cleanly; %s", counts.summary())
    except ShutdownRequested as exc:
        log.warning("stopped while still %s; nothing in hand was committed, it will be written on the next start", exc)
    except Exception as exc:
        refusal = as_setup_error(exc, settings)
        if refusal is None or refusal is exc:
            raise
        raise refusal from exc


class _Sink:
    """One batch at a time: decode, write, dead-letter, then commit the offsets.

    Each step is bounded by its own timeout and retried while its dependency is away; a stop
    request ends only the waits between retries, so a clean stop finishes the batch in hand.
    """

    def __init__(
        self, settings: Settings, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, pool: aiomysql.Pool, timeout_s: float,
        stop: asyncio.Event, clock: Callable[[], datetime], counts: SinkCounts,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._timeout_s = timeout_s
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        self._clock = clock
        self._counts = counts
        self._due = DueRefreshes()

    def _step(self, action: Callable[[], Awaitable[T]], dependency: str, what: str) -> Awaitable[T]:
        return retry_until_done(action, dependency=dependency, action=what, stop=self._stop, backoff=self._backoff)

    async def run_batch(self) -> None:
        settings, step = self._settings, self._step
        batches = await step(
            lambda: self._consumer.getmany(timeout_ms=settings.poll_timeout_ms, max_records=MAX_BATCH_RECORDS),
            "Kafka", f"reading {settings.purchases_topic}",
        )
        await self._refresh_due()
        records = [record for partition_records in batches.values() for record in partition_records]
        if not records:
            return
        purchases: list[Purchase] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                purchases.append(decode_storable(record))
            except InvalidEvent as error:
                outgoing = dead_letter_for(record, error, settings.dlq_topic)
                letters.append(DeadLetter(outgoing.key, outgoing.value, outgoing.headers))
        if purchases:
            as_of = self._clock()
            written = await step(
                lambda: write_purchases(self._pool, purchases, as_of, self._timeout_s), "MySQL", f"writing {len(purchases)} purchases"
            )
            self._counts.add(written)
            for purchase in purchases:
                if purchase.timestamp > as_of:
                    self._due.add(purchase.timestamp, purchase.user_id)
        if letters:
            await step(lambda: self._send_dead_letters(letters), "Kafka", f"dead-lettering {len(letters)} purchases")
            self._counts.dead_letters += len(letters)
        await self._commit({tp: partition_records[-1].offset + 1 for tp, partition_records in batches.items() if partition_records})

    async def _refresh_due(self) -> None:
        if not len(self._due):
            return
        now = self._clock()
        users = self._due.pop_due(now)
        if users:
            written = await self._step(
                lambda: refresh_users(self._pool, users, now, self._timeout_s), "MySQL", f"refreshing {len(users)} users' features"
            )
            self._counts.add(written)

    async def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        # Sent again whole when a retry follows a failure part way: a dead letter may then appear
        # twice, never not at all. The producer's own retries are idempotent.
        topic = self._settings.dlq_topic
        deliveries = [await self._producer.send(topic, letter.value, letter.key, headers=letter.headers) for letter in letters]
        outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        for letter, outcome in zip(letters, outcomes, strict=True):
            if isinstance(outcome, BaseException) and record_refusal(outcome):
                await self._send_stripped(letter, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

    async def _send_stripped(self, letter: DeadLetter, refusal: BaseException) -> None:
        """Kafka refused the dead letter for what it is (DLQ_TOPIC takes smaller records, say): its headers alone."""
        stripped = strip_dead_letter(letter)
        try:
            await (await self._producer.send(self._settings.dlq_topic, stripped.value, stripped.key, headers=stripped.headers))
        except Exception as exc:
            if not record_refusal(exc):
                raise
            log.error("Kafka refused the dead letter of a purchase even without its value (%s); it is dropped: %s",
                      describe_error(refusal), stripped.headers)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._step(lambda: self._consumer.commit(offsets), "Kafka", "committing offsets")
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member mid-batch: it replays the batch, which the
            # store already holds, so nothing is written twice.
            log.info("offsets not committed, the partitions moved on (%s); their new owner replays the batch", describe_error(exc))


def _purchase_consumer(settings: Settings) -> AIOKafkaConsumer:
    # Left alone, the client expands a compressed batch whole, however far that goes.
    install_decompression_bound()
    return AIOKafkaConsumer(
        settings.purchases_topic,
        **kafka_client_options(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.purchases_group_id,
        client_id="purchase-sink",
        enable_auto_commit=False,
        # A new group starts at the oldest purchase kept: replays cost nothing, a gap would be a loss.
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        # Purchases written in transactions are read once committed, never from an aborted one.
        isolation_level="read_committed",
    )


def _dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="purchase-sink",
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_REQUEST_BYTES,
    )


async def _close(what: str, close: Callable[[], Awaitable[None]]) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await close()
    except TimeoutError:
        log.warning("gave up closing %s after %.0f s", what, CLOSE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - everything in hand is committed; a failed close must not change the exit code
        log.warning("closing %s failed: %s", what, describe_error(exc))


async def _run_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop, settings.shutdown_timeout_s)
    await run_purchase_sink(settings, stop)


def main(argv: list[str] | None = None) -> int:
    catch_stop_signals_early()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-config", action="store_true", help="print the effective settings (password masked) and exit")
    args = parser.parse_args(argv)
    settings = start_program()
    if args.check_config:
        print(describe_settings(settings))
        return 0
    try:
        asyncio.run(_run_until_signalled(settings))
    except SetupError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception as exc:
        code = exit_code(exc)
        if code == SetupError.exit_code:
            # Outages are retried inside, so a MySQL error that reaches here is a setting or a grant.
            log.error("MySQL at %s:%s refused: %s; check the MYSQL_* settings and the account's grants (the loader's)",
                      settings.mysql_host, settings.mysql_port, exc)
            return code
        log.exception("stopped by an unexpected error; purchases not yet committed will be written again on restart")
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
