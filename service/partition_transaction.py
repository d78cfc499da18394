"""One input partition's Kafka transactions: its outputs and its offset, committed together.

Each input partition has its own transactional producer, with a `transactional_id` made of the
group, the topic and the partition. aiokafka cannot send the consumer group's generation with a
transactional offset commit (KIP-447), so the broker could not tell a stalled former owner from
the current one by the group alone. The id can: whoever takes the partition over starts a
producer with the same id, which bumps its epoch, aborts the former owner's open transaction,
and refuses (fences) every later write of the former owner. Only after that does the new owner
read the committed offset, so it resumes exactly where the last committed transaction ended.

A worker task runs the transactions. The loop queues each batch's share of this partition and
moves on; the worker opens a transaction when work arrives, hands each share's outputs to the
producer as it comes (so they reach Kafka within milliseconds), and commits the offset with
them COMMIT_INTERVAL_MS after it opened, when BATCH_MAX_RECORDS are in it, or at once when a
rebalance or a shutdown waits for it. Committing whenever the queue ran empty was measured
too: at 1,000 events/s it meant hundreds of tiny transactions a second, whose markers and
round trips slowed the broker and held every next event back (p50 22 ms to Kafka, against a
few ms now). Any failure drops the producer and everything uncommitted, and the partition is
read again from its last commit by a new producer, whose start aborts what the old one left
open. A fence is the exception: the partition belongs to another instance then, and waits,
paused and without a producer, until the group moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    IllegalOperation,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from service.guarantee import Work, account_delivered
from service.offsets import name, start_at_beginning
from service.publish import KeyPartitions, OutputRefused, Pending, Publisher, RecordSink, RecordsRefused, Refusals
from service.retry import Backoff, describe_error, log_retry, pause_unless_stopped
from service.source import RecordSource
from service.stats import ServiceStats

log = logging.getLogger(__name__)

# Bound on each step of a transaction (producer start, acknowledgement, offsets, commit): past
# it the broker is taken as gone, and the transaction is dropped and redone.
STEP_TIMEOUT_S = 30.0
# Bound on aborting and closing a producer that is given up.
CLOSE_TIMEOUT_S = 5.0
# The broker aborts a transaction left open this long (its producer died without a successor).
# It must exceed the longest a live transaction can take: COMMIT_INTERVAL_MS plus the steps.
TRANSACTION_TIMEOUT_MARGIN_MS = 10_000
# Batch shares queued for the worker before the loop waits for it.
QUEUED_BATCHES_MAX = 4
SETUP_REFUSALS = (TransactionalIdAuthorizationFailed, GroupAuthorizationFailedError)


class TransactionalSink(RecordSink, Protocol):
    """The part of a transactional AIOKafkaProducer the worker uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def begin_transaction(self) -> None: ...

    async def commit_transaction(self) -> None: ...

    async def abort_transaction(self) -> None: ...

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None: ...


ProducerFactory = Callable[[str], TransactionalSink]


def transactional_id(settings: Settings, tp: TopicPartition) -> str:
    return f"{settings.kafka_group_id}-{tp.topic}-{tp.partition}"


def transaction_timeout_ms(settings: Settings) -> int:
    steps_ms = int(3 * STEP_TIMEOUT_S * 1000)  # acknowledgement, offsets and commit
    return settings.commit_interval_ms + steps_ms + TRANSACTION_TIMEOUT_MARGIN_MS


class PartitionTransaction:
    def __init__(
        self,
        tp: TopicPartition,
        settings: Settings,
        source: RecordSource,
        new_producer: ProducerFactory,
        stats: ServiceStats,
        stop: asyncio.Event,
        key_partitions: KeyPartitions,
    ) -> None:
        self.tp = tp
        self._key_partitions = key_partitions
        self._settings = settings
        self._source = source
        self._new_producer = new_producer
        self._stats = stats
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        # Bumped whenever the uncommitted work is dropped: batches polled before are stale.
        self.generation = 0
        self.ready = False  # started, fenced off the former owner, positioned at the last commit
        self.failure: BaseException | None = None  # a set-up error that stops the service
        self._next_offset: int | None = None  # the next record expected; None: any
        self._queue: deque[Work] = deque()
        self._queued = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()  # nothing queued and no transaction open
        self._idle.set()
        self._hurry = asyncio.Event()  # someone waits for the commit: no waiting for more work
        self._producer: TransactionalSink | None = None
        self._publisher: Publisher | None = None
        self._in_transaction = False
        self._open_since: float | None = None  # taken_at of the open transaction's first work
        self._open_shares: list[Work] = []  # the work in the open transaction
        self._stopping: asyncio.Task | None = None
        self._refusals = Refusals()
        source.pause(tp)  # until positioned at the last commit
        self._task = asyncio.create_task(self._run(), name=f"transactions of {name(tp)}")

    # --- the loop's side ---

    def admit(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """Drop records before the next expected one (read before a rewind took effect)."""
        expected = self._next_offset
        if expected is not None and records[0].offset < expected:
            records = [record for record in records if record.offset >= expected]
        if records:
            self._next_offset = records[-1].offset + 1
        return records

    def reposition(self, position: int) -> None:
        """Reading resumes at `position` after the log was truncated or recreated under the
        partition: expect records from there, and let no work read before commit past it."""
        self._next_offset = position
        for share in itertools.chain(self._queue, self._open_shares):
            share.cap_offset(self.tp, position)

    async def submit(self, share: Work, generation: int) -> None:
        """Queue this partition's share of a batch, unless the partition was rewound since it was polled."""
        while len(self._queue) >= QUEUED_BATCHES_MAX and generation == self.generation:
            self._space.clear()
            await self._space.wait()
        if generation != self.generation:
            return
        self._queue.append(share)
        self._idle.clear()
        self._queued.set()

    @property
    def holds_work(self) -> bool:
        return bool(self._queue) or self._in_transaction

    @property
    def oldest_taken_at(self) -> float | None:
        """When (monotonic) the oldest uncommitted work was polled: in the open transaction, or queued."""
        if self._open_since is not None:
            return self._open_since
        return self._queue[0].taken_at if self._queue else None

    async def finish(self) -> None:
        """Commit the open transaction now, and wait until everything queued is committed (or
        dropped by a failure, to be read again)."""
        self._hurry.set()
        self._queued.set()  # wakes the worker if it waits for more work
        try:
            await self._idle.wait()
        finally:
            self._hurry.clear()

    async def close(self) -> None:
        """Stop the worker; a transaction still open is aborted, never left hanging."""
        self._lose_work()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._stopping is not None:
            await asyncio.wait({self._stopping})
        await self._discard_producer()

    # --- the worker ---

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._open()
                while True:
                    await self._work_queued()
                    await self._commit_one()
                    failures = 0
            except asyncio.CancelledError:
                raise
            except RecordsRefused as exc:
                # Not an outage: the redo, by a new producer, publishes each refused record's next form.
                for refused in exc.refused:
                    self._refusals.escalate(refused)
                self._lose_work()
                await self._discard_producer()
            except Exception as exc:  # noqa: BLE001 - sorted below: set-up errors and bugs stop the service
                fatal = self._fatal(exc)
                if fatal is not None:
                    self.failure = fatal
                    self._lose_work()
                    return
                failures += 1
                self._lose_work()
                await self._discard_producer()
                if isinstance(exc, ProducerFenced):
                    self._stand_down()
                    return
                wait_s = self._backoff.delay(failures)
                log_retry("Kafka", f"in a transaction of {name(self.tp)} (its uncommitted work is read again from"
                          " its last commit)", failures, exc, wait_s)
                self._stats.record_retry("Kafka")
                if await pause_unless_stopped(self._stop, wait_s):
                    return

    def _stand_down(self) -> None:
        """Another producer started with this partition's transactional id: the group gave the
        partition to another instance, and this one hears so at its next heartbeat. Starting a
        producer again would fence that owner back, and when the revoke is slow (a batch stuck
        in MySQL retries, a group coordinator out of reach) the two would fence each other in
        turns, each round aborting a transaction and holding back read_committed readers. So the
        worker ends here and the partition stays paused, with no producer, until the group
        revokes it (close) or assigns it afresh (a new PartitionTransaction)."""
        self._stats.record_fence()
        log.warning(
            "%s was taken over by another instance (this producer was fenced); it stays paused until the group"
            " moves it, its uncommitted work left to the new owner", name(self.tp),
            extra={"topic": self.tp.topic, "partition": self.tp.partition},
        )

    def _fatal(self, exc: Exception) -> BaseException | None:
        """The error to stop the service with, or None for one a new producer may get past."""
        if isinstance(exc, SETUP_REFUSALS):
            return OutputRefused(
                f"Kafka refused the transactions of {name(self.tp)}: {describe_error(exc)}; grant the service WRITE and"
                f" DESCRIBE on transactional ids starting with {self._settings.kafka_group_id}- and READ on group"
                f" {self._settings.kafka_group_id}"
            )
        if isinstance(exc, OutputRefused) or not isinstance(exc, (KafkaError, IllegalOperation, OSError)):
            return exc  # a refused topic, or a bug: better stopped than looping on it
        return None

    async def _open(self) -> None:
        """Start a producer (fencing the former owner), then resume at the last committed offset."""
        producer = self._new_producer(transactional_id(self._settings, self.tp))
        self._producer = producer
        await _within(producer.start(), "starting the transactional producer")
        self._publisher = Publisher(
            producer, self._settings.output_topic, self._settings.dlq_topic, self._stats, self._refusals, self._key_partitions
        )
        committed = await _within(self._source.committed(self.tp), "reading the committed offset")
        if committed is None:
            await start_at_beginning(self._source, self.tp, self._stats)
        else:
            self._source.seek(self.tp, committed)
        self._next_offset = committed
        self.ready = True
        self._source.resume(self.tp)
        log.info("%s: transactions ready, resuming at %s", name(self.tp), "its beginning" if committed is None else committed)

    async def _work_queued(self) -> None:
        while not self._queue:
            self._idle.set()
            self._queued.clear()
            await self._queued.wait()

    async def _commit_one(self) -> None:
        producer, publisher = self._producer, self._publisher
        assert producer is not None and publisher is not None
        await producer.begin_transaction()
        self._in_transaction = True
        deadline = time.monotonic() + self._settings.commit_interval_ms / 1000
        taken: list[tuple[Work, Pending]] = []
        self._open_shares = []
        try:
            await self._publish_queued(publisher, taken, deadline)
            offset = taken[-1][0].offsets[self.tp]
            committing = time.perf_counter()
            await _within(producer.send_offsets_to_transaction({self.tp: offset}, self._settings.kafka_group_id),
                          "adding the offset to the transaction")
            await _within(producer.commit_transaction(), "committing the transaction")
        except BaseException:
            for _, pending in taken:
                pending.discard()
            raise
        finally:
            self._open_since = None
            self._open_shares = []
        self._in_transaction = False
        self._refusals.forget_before(self.tp.partition, offset)
        self._stats.observe_stage("commit", time.perf_counter() - committing)
        self._stats.note_committed((self.tp,))
        for share, _ in taken:
            account_delivered(self._stats, share)

    async def _publish_queued(self, publisher: Publisher, taken: list[tuple[Work, Pending]], deadline: float) -> None:
        """Hand queued work to the producer as it comes, until the transaction's time is up, it
        is full, or someone waits for it (a rebalance, a shutdown); then wait for the
        acknowledgement of all of it. The outputs reach Kafka at once; the commit only makes
        them visible to read_committed readers."""
        records = 0
        while records < self._settings.batch_max_records:
            while self._queue and records < self._settings.batch_max_records:
                share = self._queue.popleft()
                self._space.set()
                if not taken:
                    self._open_since = share.taken_at
                self._open_shares.append(share)
                taken.append((share, await publisher.enqueue(share.predictions, share.invalid)))
                records += share.events
            left_s = deadline - time.monotonic()
            if left_s <= 0 or self._hurry.is_set() or records >= self._settings.batch_max_records:
                break
            self._queued.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left_s):
                    await self._queued.wait()  # more work, or finish() in a hurry
        for _, pending in taken:
            await _within(publisher.settle(pending), "waiting for the acknowledgement of outputs")

    def _lose_work(self) -> None:
        """Forget everything uncommitted; the partition stays paused until it is positioned again."""
        self.generation += 1
        if self.ready:
            self.ready = False
            with contextlib.suppress(Exception):  # revoked meanwhile: no longer ours to pause
                self._source.pause(self.tp)
        self._queue.clear()
        self._space.set()
        self._idle.set()

    async def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        if producer is None:
            return
        # A task of its own, so that cancelling the worker (a revoke, a shutdown) does not cut
        # the producer's stop short and leave its connections open; close() waits for it.
        self._stopping = asyncio.create_task(self._stop_producer(producer, abort=self._in_transaction))
        self._in_transaction = False
        await asyncio.shield(self._stopping)

    async def _stop_producer(self, producer: TransactionalSink, abort: bool) -> None:
        if abort:
            # Readers with read_committed wait behind an open transaction: end it now rather
            # than when the next owner starts or the transaction times out.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), CLOSE_TIMEOUT_S)
        try:
            await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - its successor's start aborts whatever it left open
            log.debug("closing the producer of %s failed: %s", name(self.tp), describe_error(exc))


async def _within(step: Awaitable[Any], what: str) -> Any:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the step's result when a
    # cancellation arrives just as the step completes, and a worker that swallows its cancel
    # leaves close() (a revoke, a shutdown) waiting for it for ever.
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await step
    except TimeoutError:
        raise TimeoutError(f"no answer from Kafka within {STEP_TIMEOUT_S:g} s while {what}") from None
