"""An output on its way to Kafka: what is handed to the producer, and the answers still to come."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord

from events.dead_letter import dead_letter_headers, fit_dead_letter
from events.schema import InvalidEvent
from service.delivery.record_batches import BatchSink

# The producer's limit on one request, and so on one record (aiokafka's default, explicit here
# because dead letters are cut to fit it).
MAX_REQUEST_BYTES = 1_048_576
# A compressed batch of incompressible bytes is slightly larger than its input, and the broker
# checks the compressed size; keep room for the worst codec's growth.
DEAD_LETTER_MAX_BYTES = MAX_REQUEST_BYTES * 95 // 100
MAX_BATCH_BYTES = 256 * 1024
NO_HEADERS: list[tuple[str, bytes]] = []


class RecordSink(BatchSink, Protocol):
    """The part of AIOKafkaProducer the loop uses."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
        partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    source: ConsumerRecord
    is_dead_letter: bool


# (key, value, headers, source record): one output as handed to the producer.
Row = tuple[bytes | None, bytes | None, list[tuple[str, bytes]], ConsumerRecord]


@dataclass
class Dispatch:
    """Outputs handed to the producer in one record batch, and the future of Kafka's answer for it."""

    future: asyncio.Future[Any]
    topic: str
    rows: list[Row]
    dead_letters: bool
    alone: bool = False  # in a record batch of its own, so a refusal names its record

    def outgoing(self) -> list[Outgoing]:
        return [Outgoing(self.topic, key, value, headers, source, self.dead_letters) for key, value, headers, source in self.rows]


@dataclass
class Pending:
    """Outputs handed to the producer and not yet acknowledged: one dispatch per record batch."""

    dispatches: list[Dispatch] = field(default_factory=list)

    def futures(self) -> list[asyncio.Future[Any]]:
        return [dispatch.future for dispatch in self.dispatches]

    def acknowledged(self) -> bool:
        """True once Kafka has answered for every dispatch (success or not)."""
        return all(dispatch.future.done() for dispatch in self.dispatches)

    def discard(self) -> None:
        """Work given up: its outcomes are read whenever they come, so none is reported as lost."""
        for dispatch in self.dispatches:
            dispatch.future.add_done_callback(outcome)


def outcome(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


def dead_letter_for(record: ConsumerRecord, error: InvalidEvent, dlq_topic: str) -> Outgoing:
    headers = dead_letter_headers(error, record.topic, record.partition, record.offset, record.headers)
    letter = fit_dead_letter(record.key, record.value, headers, DEAD_LETTER_MAX_BYTES)
    return Outgoing(dlq_topic, letter.key, letter.value, letter.headers, record, is_dead_letter=True)



def failed(error: BaseException) -> asyncio.Future[Any]:
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(error)
    return failed

