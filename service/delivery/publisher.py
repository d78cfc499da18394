"""Publishing a batch's predictions and dead letters, so that no single record can wedge the loop.

Predictions go out as one record batch per output partition (`send_batch`), not one awaited
`send` per record: about 1.7 µs a record instead of 10. A user's predictions always land on
the partition Kafka's default partitioner picks for their key, in input order. Publishing is
split in two, so the loop can fetch and process the next batch while Kafka acknowledges this
one: `enqueue` hands everything to the producer, `settle` waits for the acknowledgements.

The policy for a record Kafka refuses because of that record alone (too large, a bad timestamp):
- every record of the refused batch is sent once more in a batch of its own, since a whole
  producer batch fails with one bad record in it; only a record refused alone goes on;
- a refused prediction becomes a dead letter of its input event, kind `rejected_by_kafka`;
- a refused dead letter is sent in its smallest form (no value, our headers only);
- a dead letter refused even then is logged at ERROR with where it came from, and counted.
Refusals that are about the set-up rather than the record (a missing ACL, say) stop the
service with a message; outages propagate to the caller, which rewinds and retries.

In a transaction (exactly_once) a refused record cannot be sent again in the same one: the
idempotent producer's sequence numbers no longer match the broker's. There the publisher
raises `RecordsRefused`, the transaction is redone by a new producer, and `Refusals` remembers
how far each refused record has got along the same policy, so the redo publishes its next
form: first each record of the refused batch on its own, then the next form of the one that
was refused alone. Outside a redo, dead letters share the producer's record batches, as in
at_least_once: a batch of their own each cost a produce round trip each, and 20% invalid input
halved exactly_once's throughput (python -m tools.bench.invalid_flood).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from aiokafka.structs import ConsumerRecord

from events.dead_letter import DeadLetter, strip_dead_letter
from events.schema import InvalidEvent, Prediction, encode_key, encode_prediction
from service.delivery.key_partitions import PARTITION_CACHE_KEYS, KeyPartitions, keyed_partition
from service.delivery.outputs import NO_HEADERS, Dispatch, Outgoing, Pending, RecordSink, Row, dead_letter_for, failed, outcome
from service.delivery.record_batches import PartitionSender
from service.delivery.refusals import ALONE, STRIPPED, UNDELIVERABLE, OutputRefused, RecordsRefused, Refusals, Refused, log_sent_again_alone
from service.failures import describe_error, kafka_setup_refusal, record_refusal
from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self, sink: RecordSink, output_topic: str, dlq_topic: str, stats: ServiceStats, refusals: Refusals | None = None,
        key_partitions: KeyPartitions | None = None,
    ) -> None:
        """`refusals`: publish into transactions, with the refusal policy carried by `refusals`.
        `key_partitions`: shared by the publishers of one process, so each user's is computed once."""
        self._sink = sink
        self._refusals = refusals
        self._output_topic = output_topic
        self._dlq_topic = dlq_topic
        self._stats = stats
        self._key_partitions = KeyPartitions() if key_partitions is None else key_partitions
        self._senders: dict[int, PartitionSender] = {}

    async def enqueue(
        self,
        predictions: Sequence[tuple[ConsumerRecord, Prediction]],
        invalid: Sequence[tuple[ConsumerRecord, InvalidEvent]],
    ) -> Pending:
        """Hand every prediction and dead letter to the producer; nothing is awaited but buffer space."""
        pending = Pending()
        if self._refusals:
            predictions, invalid = self._apply_refusals(predictions, invalid)
        if predictions:
            await self._enqueue_predictions(predictions, pending)
        refusals = self._refusals
        for record, error in invalid:
            item = dead_letter_for(record, error, self._dlq_topic)
            alone = refusals is not None and refusals.stage(record)[0] >= ALONE
            if alone:
                item = self._next_form(item)
                future = await self._send_in_own_record_batch(item)
            else:
                future = await self._send(item)
            pending.dispatches.append(Dispatch(future, item.topic, [(item.key, item.value, item.headers, record)], True, alone))
        return pending

    def _apply_refusals(
        self,
        predictions: Sequence[tuple[ConsumerRecord, Prediction]],
        invalid: Sequence[tuple[ConsumerRecord, InvalidEvent]],
    ) -> tuple[list[tuple[ConsumerRecord, Prediction]], list[tuple[ConsumerRecord, InvalidEvent]]]:
        """Predictions Kafka refused before become dead letters; undeliverable records are skipped."""
        assert self._refusals is not None
        kept, letters = [], []
        for record, prediction in predictions:
            stage, why = self._refusals.stage(record)
            if stage <= ALONE:
                kept.append((record, prediction))
            elif stage == UNDELIVERABLE:
                self._skip_undeliverable(record, "refused even in its smallest form")
            else:
                letters.append((record, InvalidEvent("rejected_by_kafka", why)))
        for record, error in invalid:
            if self._refusals.stage(record)[0] == UNDELIVERABLE:
                self._skip_undeliverable(record, "refused even in its smallest form")
            else:
                letters.append((record, error))
        return kept, letters

    def _next_form(self, item: Outgoing) -> Outgoing:
        assert self._refusals is not None
        if self._refusals.stage(item.source)[0] != STRIPPED:
            return item
        smallest = strip_dead_letter(DeadLetter(item.key, item.value, item.headers))
        return Outgoing(item.topic, smallest.key, smallest.value, smallest.headers, item.source, True)

    async def _send_in_own_record_batch(self, item: Outgoing) -> asyncio.Future[Any]:
        batch = self._sink.create_batch()
        if batch.append(timestamp=None, key=item.key, value=item.value, headers=item.headers) is None:
            return await self._send(item)  # larger than a batch: send() makes a batch of it alone
        batch.close()  # so that no producer.send() to the same partition joins it (see PartitionSender.append_alone)
        partitions = len(await self._sink.partitions_for(item.topic))
        partition = keyed_partition(item.key, partitions) if item.key is not None else random.randrange(partitions)
        try:
            return await self._sink.send_batch(batch, item.topic, partition=partition)
        except Exception as error:  # noqa: BLE001 - handed on through the future, like any failed delivery
            return failed(error)

    async def publish(
        self,
        predictions: Sequence[tuple[ConsumerRecord, Prediction]],
        invalid: Sequence[tuple[ConsumerRecord, InvalidEvent]],
    ) -> None:
        """Enqueue and settle in one go."""
        await self.settle(await self.enqueue(predictions, invalid))

    async def settle(self, pending: Pending) -> None:
        """Wait until Kafka acknowledged everything in `pending`, and deal with refusals."""
        if not pending.dispatches:
            return
        # asyncio.wait, not gather: a caller's timeout must not cancel the producer's futures.
        await asyncio.wait(pending.futures())
        # Every outcome read first: one raised below would otherwise leave the others unread,
        # and asyncio logs an unread failure as an error.
        outcomes = [(dispatch, outcome(dispatch.future)) for dispatch in pending.dispatches]
        refused: list[Refused] = []
        for dispatch, error in outcomes:
            if error is None:
                continue
            if kafka_setup_refusal(error):
                raise OutputRefused(
                    f"Kafka refused writes to {dispatch.topic}: {describe_error(error)}; grant the service WRITE on that topic"
                ) from error
            if not record_refusal(error):
                raise error  # an outage or a bug: the caller decides
            refused.append(Refused(dispatch.outgoing(), error, dispatch.alone))
        if refused and self._refusals is not None:
            raise RecordsRefused(refused)
        for batch in refused:
            log_sent_again_alone(batch)
            for item in batch.items:
                await self._resend_refused(item, batch.error)

    async def _enqueue_predictions(self, predictions: Sequence[tuple[ConsumerRecord, Prediction]], pending: Pending) -> None:
        topic = self._output_topic
        partitions = len(await self._sink.partitions_for(topic))
        partition_of = self._key_partitions.table(partitions)
        encode = encode_prediction
        by_partition: dict[int, list[Row]] = {}
        for record, prediction in predictions:
            known = partition_of.get(prediction.user_id)
            if known is None:
                if len(partition_of) >= PARTITION_CACHE_KEYS:
                    partition_of.clear()
                key = encode_key(prediction.user_id)
                known = partition_of[prediction.user_id] = (key, keyed_partition(key, partitions))
            key, partition = known
            rows = by_partition.get(partition)
            if rows is None:
                rows = by_partition[partition] = []
            rows.append((key, encode(prediction), NO_HEADERS, record))
        senders = self._senders
        redo = bool(self._refusals)  # once per call: the loop below runs for every prediction
        for partition, rows in by_partition.items():
            sender = senders.get(partition)
            if sender is None:
                sender = senders[partition] = PartitionSender(self._sink, topic, partition)
            by_future: dict[asyncio.Future[Any], list[Row]] = {}
            for row in rows:
                if redo and self._alone(row[3]):
                    pending.dispatches.append(Dispatch(sender.append_alone(row[0], row[1]), topic, [row], False, alone=True))
                    continue
                by_future.setdefault(sender.append(row[0], row[1]), []).append(row)
            sender.flush()
            pending.dispatches.extend(Dispatch(future, topic, batch_rows, False) for future, batch_rows in by_future.items())

    def _alone(self, record: ConsumerRecord) -> bool:
        return self._refusals is not None and self._refusals.stage(record)[0] == ALONE

    async def close(self) -> None:
        for sender in self._senders.values():
            await sender.close()

    async def _send(self, item: Outgoing) -> asyncio.Future[Any]:
        """The delivery future; an error raised at once (a record over the request size, no
        metadata in time) becomes one too, so that every delivery already under way is awaited."""
        try:
            return await self._sink.send(item.topic, item.value, item.key, headers=item.headers or None)
        except Exception as error:  # noqa: BLE001 - handed on through the future, like any failed delivery
            return failed(error)

    async def _send_alone(self, item: Outgoing) -> BaseException | None:
        future = await self._send_in_own_record_batch(item)
        await asyncio.wait([future])
        error = future.exception()
        if error is not None and not record_refusal(error):
            raise error
        return error

    async def _resend_refused(self, item: Outgoing, error: BaseException) -> None:
        where = f"{item.source.topic}[{item.source.partition}]@{item.source.offset}"
        # Alone, in case it was refused for a neighbour's sake.
        if await self._send_alone(item) is None:
            return
        if not item.is_dead_letter:
            log.warning("Kafka refused the prediction for %s: %s; dead-lettering the event", where, describe_error(error))
            rejected = InvalidEvent("rejected_by_kafka", f"prediction refused: {describe_error(error)}")
            item = dead_letter_for(item.source, rejected, self._dlq_topic)
            if await self._send_alone(item) is None:
                return
        smallest = strip_dead_letter(DeadLetter(item.key, item.value, item.headers))
        log.warning("Kafka refused the dead letter for %s: %s; sending it without its value", where, describe_error(error))
        final = await self._send_alone(Outgoing(item.topic, smallest.key, smallest.value, smallest.headers, item.source, True))
        if final is not None:
            self._skip_undeliverable(item.source, describe_error(final))

    def _skip_undeliverable(self, source: ConsumerRecord, why: str) -> None:
        self._stats.record_undeliverable()
        log.error(
            "Kafka refused even the smallest dead letter for %s[%d]@%d (%s); it is skipped so the partition can go on",
            source.topic, source.partition, source.offset, why,
            extra={"topic": source.topic, "partition": source.partition, "offset": source.offset},
        )

