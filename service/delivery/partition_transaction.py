"""One input partition's Kafka transactions: its outputs and its offset, committed together.

A worker task runs the transactions, each by the partition's own transactional producer
(transactional_producer.py). The loop queues each batch's share of this partition and
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
from typing import Any

from aiokafka.errors import ProducerFenced
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from service.delivery.guarantee import Work, account_delivered
from service.delivery.key_partitions import KeyPartitions
from service.delivery.outputs import Pending
from service.delivery.positions import RecordSource, name, start_at_beginning
from service.delivery.publisher import Publisher
from service.delivery.refusals import RecordsRefused, Refusals, transactions_stopped_by
from service.delivery.transactional_producer import ProducerFactory, TransactionalSink, stop_producer, transactional_id, within
from service.observe.stats import ServiceStats
from service.retry import Backoff, log_retry, pause_unless_stopped

log = logging.getLogger(__name__)

# Batch shares queued for the worker before the loop waits for it.
QUEUED_BATCHES_MAX = 4


class PartitionTransaction:
    def __init__(
        self, tp: TopicPartition, settings: Settings, source: RecordSource, new_producer: ProducerFactory, stats: ServiceStats,
        stop: asyncio.Event, key_partitions: KeyPartitions,
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
        self._open_since_mono_s: float | None = None  # polled_mono_s of the open transaction's first work
        self._open_shares: list[Work] = []  # the work in the open transaction
        self._stopping: asyncio.Task[Any] | None = None
        self._refusals = Refusals()
        source.pause(tp)  # until positioned at the last commit
        self._task = asyncio.create_task(self._run(), name=f"transactions of {name(tp)}")

    # --- the loop's side ---

    def keep_expected(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
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
    def oldest_polled_mono_s(self) -> float | None:
        """When (monotonic) the oldest uncommitted work was polled: in the open transaction, or queued."""
        if self._open_since_mono_s is not None:
            return self._open_since_mono_s
        return self._queue[0].polled_mono_s if self._queue else None

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
                fatal = transactions_stopped_by(exc, name(self.tp), self._settings.kafka_group_id)
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
        """Another producer took this partition's transactional id: the group gave the partition to
        another instance. Starting a producer again would fence that owner back, and during a slow
        revoke the two would fence each other in turns, aborting a transaction each round. So the
        partition stays paused, with no producer, until the group revokes or assigns it afresh."""
        self._stats.record_fence()
        log.warning(
            "%s was taken over by another instance (this producer was fenced); it stays paused until the group"
            " moves it, its uncommitted work left to the new owner", name(self.tp),
            extra={"topic": self.tp.topic, "partition": self.tp.partition},
        )

    async def _open(self) -> None:
        """Start a producer (fencing the former owner), then resume at the last committed offset."""
        producer = self._new_producer(transactional_id(self._settings, self.tp))
        self._producer = producer
        await within(producer.start(), "starting the transactional producer")
        self._publisher = Publisher(
            producer, self._settings.output_topic, self._settings.dlq_topic, self._stats, self._refusals, self._key_partitions
        )
        committed = await within(self._source.committed(self.tp), "reading the committed offset")
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
            await within(producer.send_offsets_to_transaction({self.tp: offset}, self._settings.kafka_group_id),
                          "adding the offset to the transaction")
            await within(producer.commit_transaction(), "committing the transaction")
        except BaseException:
            for _, pending in taken:
                pending.discard()
            raise
        finally:
            self._open_since_mono_s = None
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
                    self._open_since_mono_s = share.polled_mono_s
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
            await within(publisher.settle(pending), "waiting for the acknowledgement of outputs")

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
        self._stopping = asyncio.create_task(stop_producer(producer, self._in_transaction, name(self.tp)))
        self._in_transaction = False
        await asyncio.shield(self._stopping)
