"""Exactly-once delivery: per input partition, outputs and offsets commit in one Kafka transaction.

Readers with `isolation_level=read_committed` see every event's prediction or dead letter
exactly once: a crash, a rebalance or a stalled former owner (a zombie) can abort a
transaction, never commit one twice. The transactions themselves are in
partition_transaction.py; this is the loop's view of them: which polled records may be
processed, and each batch split by input partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping

from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from events.schema import InvalidEvent, Prediction
from service.delivery.guarantee import Guarantee, Polled, Records, Work
from service.delivery.key_partitions import KeyPartitions
from service.delivery.partition_transaction import PartitionTransaction
from service.delivery.positions import RecordSource
from service.delivery.transactional_producer import ProducerFactory
from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)


class ExactlyOnce(Guarantee):
    def __init__(
        self, settings: Settings, source: RecordSource, new_producer: ProducerFactory, stats: ServiceStats, stop: asyncio.Event
    ) -> None:
        super().__init__(settings, source, stats, stop)
        self._new_producer = new_producer
        self._transactions: dict[TopicPartition, PartitionTransaction] = {}
        self._key_partitions = KeyPartitions()

    def _admit(self, records: Records) -> Polled:
        """Records of partitions whose transactions are ready; the others stay paused and are
        read again once positioned at their last commit."""
        admitted = Polled()
        for tp, partition_records in records.items():
            transaction = self._transactions.get(tp)
            if transaction is None or not transaction.ready:
                continue
            kept = transaction.keep_expected(partition_records)
            if kept:
                admitted.records[tp] = kept
                admitted.generations[tp] = transaction.generation
        return admitted

    @property
    def holds_work(self) -> bool:
        return any(transaction.holds_work for transaction in self._transactions.values())

    async def hand_over(self, work: Work) -> None:
        for tp, share in split_by_partition(work).items():
            transaction = self._transactions.get(tp)
            if transaction is not None:
                await transaction.submit(share, work.generations.get(tp, -1))

    async def between_batches(self, idle: bool) -> None:
        taken = [at for t in self._transactions.values() if (at := t.oldest_polled_mono_s) is not None]
        self._stats.set_batch_in_hand(min(taken) if taken else None)
        for transaction in self._transactions.values():
            if transaction.failure is not None:
                raise transaction.failure

    async def finish(self) -> bool:
        await asyncio.gather(*(t.finish() for t in self._transactions.values()))
        return True

    async def abandon(self) -> None:
        await self._close(list(self._transactions))

    def _on_repositioned(self, positions: Mapping[TopicPartition, int]) -> None:
        for tp, position in positions.items():
            transaction = self._transactions.get(tp)
            if transaction is not None:
                transaction.reposition(position)

    async def on_revoked(self, partitions: Collection[TopicPartition]) -> None:
        await self._close(partitions)

    async def on_assigned(self, partitions: Collection[TopicPartition]) -> None:
        for tp in partitions:
            if tp not in self._transactions:
                self._transactions[tp] = PartitionTransaction(
                    tp, self._settings, self._source, self._new_producer, self._stats, self._stop, self._key_partitions
                )

    async def close(self) -> None:
        await self._close(list(self._transactions))

    async def _close(self, partitions: Collection[TopicPartition]) -> None:
        closing = [self._transactions.pop(tp) for tp in partitions if tp in self._transactions]
        await asyncio.gather(*(transaction.close() for transaction in closing))


def split_by_partition(work: Work) -> dict[TopicPartition, Work]:
    """Each input partition's share of a batch, in input order."""
    if len(work.offsets) == 1:
        return {next(iter(work.offsets)): work}
    predictions: dict[TopicPartition, list[tuple[ConsumerRecord, Prediction]]] = {tp: [] for tp in work.offsets}
    invalid: dict[TopicPartition, list[tuple[ConsumerRecord, InvalidEvent]]] = {tp: [] for tp in work.offsets}
    by_number = {tp.partition: tp for tp in work.offsets}  # one input topic
    for pair in work.predictions:
        predictions[by_number[pair[0].partition]].append(pair)
    for item in work.invalid:
        invalid[by_number[item[0].partition]].append(item)
    return {
        tp: Work(
            {tp: offset}, predictions[tp], invalid[tp], len(predictions[tp]) + len(invalid[tp]),
            work.started_perf_s, work.polled_mono_s, work.enqueued_perf_s, work.generations,
        )
        for tp, offset in work.offsets.items()
    }
