"""In-memory stand-ins for the Kafka consumer and producers, behind the same interfaces, for unit tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

from aiokafka.structs import ConsumerRecord, TopicPartition

_offsets = itertools.count()


def make_record(value: bytes | None, *, topic: str = "input_topic", partition: int = 0, offset: int | None = None,
                key: bytes | None = b"1", headers: Iterable[tuple[str, bytes]] = ()) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, offset=next(_offsets) if offset is None else offset,
        timestamp=0, timestamp_type=0, key=key, value=value, checksum=None,
        serialized_key_size=len(key or b""), serialized_value_size=len(value or b""), headers=tuple(headers),
    )


class InMemorySource:
    """Hands out queued batches like AIOKafkaConsumer.getmany and records commits and seeks.

    A queued exception instead of a batch is raised by getmany, as aiokafka raises fetch errors.
    """

    def __init__(self, batches: Iterable[list[ConsumerRecord] | Exception], stop: asyncio.Event,
                 log_start: dict[TopicPartition, int] | None = None, log_end: dict[TopicPartition, int] | None = None,
                 idle_polls: int = 3) -> None:
        """`idle_polls`: empty polls in a row after which the source sets `stop`."""
        self._batches = list(batches)
        self._stop = stop
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int | str]] = []
        self.delivered: list[ConsumerRecord] = []
        self._empty_polls = 0
        self._idle_polls = idle_polls
        self._log_start = log_start or {}
        self._log_end = log_end or {}
        self.paused: set[TopicPartition] = set()

        self._held: list[ConsumerRecord] = []  # records of paused partitions, handed out once resumed

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)
        released = [r for r in self._held if TopicPartition(r.topic, r.partition) in partitions]
        if released:
            self._held = [r for r in self._held if r not in released]
            self._batches.insert(0, released)

    async def getmany(self, *partitions, timeout_ms: int, max_records: int | None = None):
        await asyncio.sleep(0.001)  # a real poll gives other tasks a turn
        if not self._batches:
            self._empty_polls += 1
            if self._empty_polls >= self._idle_polls and not self._held:
                self._stop.set()  # drained, and nothing came back after a rewind: let the loop finish
            return {}
        self._empty_polls = 0
        batch = self._batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        if self.paused:
            self._held += [r for r in batch if TopicPartition(r.topic, r.partition) in self.paused]
            batch = [r for r in batch if TopicPartition(r.topic, r.partition) not in self.paused]
        self.delivered.extend(batch)
        grouped: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in batch:
            grouped.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return grouped

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self._read_again(partition, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool:
        self.seeks.extend((tp, "beginning") for tp in partitions)
        for tp in partitions:
            self._read_again(tp, 0)
        return True

    def _read_again(self, partition: TopicPartition, offset: int) -> None:
        """Records already handed out at or past `offset` come again, first, as after a real seek."""
        again = [r for r in self.delivered if (r.topic, r.partition) == partition and r.offset >= offset]
        if again:
            self.delivered = [r for r in self.delivered if r not in again]
            self._batches.insert(0, again)

    def assignment(self) -> set[TopicPartition]:
        return {tp for commit in self.commits for tp in commit} | set(self._log_start) | {TopicPartition("input_topic", 0)}

    async def committed(self, partition: TopicPartition) -> int | None:
        for commit in reversed(self.commits):
            if partition in commit:
                return commit[partition]
        return None

    async def beginning_offsets(self, partitions):
        return {tp: self._log_start.get(tp, 0) for tp in partitions}

    async def end_offsets(self, partitions):
        return {tp: self._log_end.get(tp, 0) for tp in partitions}


class InMemoryBatch:
    """A producer record batch; holds up to `capacity` records, like one bounded by bytes."""

    def __init__(self, capacity: int = 100) -> None:
        self.records: list[tuple[bytes | None, bytes | None, list]] = []
        self.capacity = capacity

    def append(self, *, timestamp, key, value, headers=()):
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, list(headers)))
        return object()

    def close(self) -> None:
        """No more records; the stand-in holds what it has."""
        self.capacity = len(self.records)


class InMemorySink:
    """Acknowledges sends like AIOKafkaProducer.send; can fail the first N deliveries, or refuse
    every record that `refuse(topic, value)` picks, with `refusal`."""

    def __init__(self, failures_before_success: int = 0, error: Exception | None = None,
                 refuse=lambda topic, value: False, refusal: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.failures_left = failures_before_success
        self.error = error
        self.refuse = refuse
        self.refusal = refusal
        self.refused = 0
        self.batches: list[tuple[str, int, int]] = []

    async def send(self, topic, value=None, key=None, *, partition=None, headers=None) -> asyncio.Future:
        return self._deliver(topic, [(key, value, list(headers or []))])

    def create_batch(self) -> InMemoryBatch:
        return InMemoryBatch()

    # `batch` is unannotated so that the sink matches the service's RecordSink protocol; it is
    # always an InMemoryBatch from create_batch.
    async def send_batch(self, batch, topic: str, *, partition: int) -> asyncio.Future:
        """One future for the whole batch, which is written whole or not at all, as Kafka does."""
        delivery = self._deliver(topic, batch.records)
        if delivery.exception() is None:
            self.batches.append((topic, partition, len(batch.records)))
        return delivery

    def _deliver(self, topic: str, records: list[tuple]) -> asyncio.Future:
        delivery = asyncio.get_running_loop().create_future()
        if any(self.refuse(topic, value) for _, value, _ in records):
            self.refused += 1
            assert self.refusal is not None, "refuse= needs a refusal= to raise"
            delivery.set_exception(self.refusal)
        elif self.failures_left:
            self.failures_left -= 1
            assert self.error is not None, "failures_before_success= needs an error= to raise"
            delivery.set_exception(self.error)
        else:
            self.sent.extend((topic, value, key, headers) for key, value, headers in records)
            delivery.set_result(None)
        return delivery

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(4))

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        return [message for message in self.sent if message[0] == topic]


class InMemoryTransactionLog:
    """The broker's side of transactions: outputs are visible once their transaction commits,
    committed offsets land in the source's commits, and starting a producer fences the previous
    one with the same transactional id. `first_sink` options apply to the first producer made."""

    def __init__(self, source: InMemorySource, **first_sink) -> None:
        self.source = source
        self.visible: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.epochs: dict[str, int] = {}
        self.aborted = 0
        self.producers: list[InMemoryTransactionalSink] = []
        self._first_sink = first_sink

    def producer(self, transactional_id: str) -> InMemoryTransactionalSink:
        options, self._first_sink = self._first_sink, {}
        sink = InMemoryTransactionalSink(self, transactional_id, **options)
        self.producers.append(sink)
        return sink

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        return [message for message in self.visible if message[0] == topic]


class InMemoryTransactionalSink(InMemorySink):
    def __init__(self, log: InMemoryTransactionLog, transactional_id: str, **options) -> None:
        super().__init__(**options)
        self.log = log
        self.transactional_id = transactional_id
        self.epoch = 0
        self._mark: int | None = None  # where the open transaction's records start in `sent`
        self._offsets: dict[TopicPartition, int] = {}

    def _check_not_fenced(self) -> None:
        from aiokafka.errors import ProducerFenced

        if self.log.epochs.get(self.transactional_id) != self.epoch:
            raise ProducerFenced()

    async def start(self) -> None:
        self.epoch = self.log.epochs[self.transactional_id] = self.log.epochs.get(self.transactional_id, 0) + 1

    async def stop(self) -> None:
        pass

    async def begin_transaction(self) -> None:
        self._check_not_fenced()
        self._mark, self._offsets = len(self.sent), {}

    def _deliver(self, topic: str, records: list[tuple]) -> asyncio.Future:
        try:
            self._check_not_fenced()
        except Exception as exc:  # noqa: BLE001 - a fenced producer's sends fail, as the broker refuses them
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return super()._deliver(topic, records)

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self._check_not_fenced()
        self._offsets.update(offsets)

    async def commit_transaction(self) -> None:
        self._check_not_fenced()
        assert self._mark is not None, "commit outside a transaction"
        self.log.visible.extend(self.sent[self._mark:])
        self.log.source.commits.append(dict(self._offsets))
        self._mark = None

    async def abort_transaction(self) -> None:
        if self._mark is not None:
            del self.sent[self._mark:]
            self._mark = None
        self.log.aborted += 1
