"""Publishing a batch's predictions and dead letters, so that no single record can wedge the loop.

The policy for a record Kafka refuses because of that record alone (too large, a bad timestamp):
- it is sent once more on its own, since a whole producer batch fails with one bad record in it;
- a refused prediction becomes a dead letter of its input event, kind `rejected_by_kafka`;
- a refused dead letter is sent in its smallest form (no value, our headers only);
- a dead letter refused even then is logged at ERROR with where it came from, and counted.
Refusals that are about the set-up rather than the record (a missing ACL, say) stop the
service with a message; outages propagate to the caller, which retries the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import ConsumerRecord

from events.dead_letter import DeadLetter, dead_letter_headers, fit_dead_letter, strip_dead_letter
from events.schema import InvalidEvent, Prediction, encode_key, encode_prediction
from service.retry import describe_error
from service.stats import ServiceStats

log = logging.getLogger(__name__)

# The producer's limit on one request, and so on one record (aiokafka's default, explicit here
# because dead letters are cut to fit it).
MAX_REQUEST_BYTES = 1_048_576
# A compressed batch of incompressible bytes is slightly larger than its input, and the broker
# checks the compressed size; keep room for the worst codec's growth.
DEAD_LETTER_MAX_BYTES = MAX_REQUEST_BYTES * 95 // 100

RECORD_REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTimestampError)
SETUP_REFUSALS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError)


class OutputRefused(RuntimeError):
    """Kafka refuses to take the service's writes at all: a setting or an ACL to fix."""


class RecordSink(Protocol):
    """The part of AIOKafkaProducer the loop uses."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future: ...


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    source: ConsumerRecord
    is_dead_letter: bool


def dead_letter_for(record: ConsumerRecord, error: InvalidEvent, dlq_topic: str) -> Outgoing:
    headers = dead_letter_headers(error, record.topic, record.partition, record.offset, record.headers)
    letter = fit_dead_letter(record.key, record.value, headers, DEAD_LETTER_MAX_BYTES)
    return Outgoing(dlq_topic, letter.key, letter.value, letter.headers, record, is_dead_letter=True)


class Publisher:
    def __init__(self, sink: RecordSink, output_topic: str, dlq_topic: str, stats: ServiceStats) -> None:
        self._sink = sink
        self._output_topic = output_topic
        self._dlq_topic = dlq_topic
        self._stats = stats

    async def publish(
        self,
        predictions: Sequence[tuple[ConsumerRecord, Prediction]],
        invalid: Sequence[tuple[ConsumerRecord, InvalidEvent]],
    ) -> None:
        """Send everything, wait until Kafka acknowledged all of it, and deal with refusals."""
        outgoing = [
            Outgoing(self._output_topic, encode_key(p.user_id), encode_prediction(p), [], record, is_dead_letter=False)
            for record, p in predictions
        ]
        outgoing += [dead_letter_for(record, error, self._dlq_topic) for record, error in invalid]
        errors = await self._send_all(outgoing)
        refused = []
        for item, error in zip(outgoing, errors):
            if error is None:
                continue
            if isinstance(error, SETUP_REFUSALS):
                raise OutputRefused(
                    f"Kafka refused writes to {item.topic}: {describe_error(error)}; grant the service WRITE on that topic"
                ) from error
            if not isinstance(error, RECORD_REFUSALS):
                raise error  # an outage or a bug: the caller decides
            refused.append((item, error))
        for item, error in refused:
            await self._resend_refused(item, error)

    async def _send_all(self, outgoing: Sequence[Outgoing]) -> list[BaseException | None]:
        deliveries: list[asyncio.Future] = []
        for item in outgoing:
            deliveries.append(await self._send(item))
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        return [result if isinstance(result, BaseException) else None for result in results]

    async def _send(self, item: Outgoing) -> asyncio.Future:
        """The delivery future; an error raised at once (a record over the request size, no
        metadata in time) becomes one too, so that every delivery already under way is awaited."""
        try:
            return await self._sink.send(item.topic, item.value, item.key, headers=item.headers or None)
        except Exception as error:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

    async def _send_alone(self, item: Outgoing) -> BaseException | None:
        (error,) = await self._send_all([item])
        if error is not None and not isinstance(error, RECORD_REFUSALS):
            raise error
        return error

    async def _resend_refused(self, item: Outgoing, error: BaseException) -> None:
        where = f"{item.source.topic}[{item.source.partition}]@{item.source.offset}"
        # Alone, in case it was refused for a neighbour's sake.
        if await self._send_alone(item) is None:
            return
        if not item.is_dead_letter:
            log.warning("Kafka refused the prediction for %s: %s; dead-lettering the event", where, describe_error(error))
            item = dead_letter_for(item.source, InvalidEvent("rejected_by_kafka", f"prediction refused: {describe_error(error)}"), self._dlq_topic)
            if await self._send_alone(item) is None:
                return
        smallest = strip_dead_letter(DeadLetter(item.key, item.value, item.headers))
        log.warning("Kafka refused the dead letter for %s: %s; sending it without its value", where, describe_error(error))
        final = await self._send_alone(Outgoing(item.topic, smallest.key, smallest.value, smallest.headers, item.source, True))
        if final is not None:
            self._stats.record_undeliverable()
            log.error(
                "Kafka refused even the smallest dead letter for %s (%s); it is skipped so the partition can go on",
                where, describe_error(final),
                extra={"topic": item.source.topic, "partition": item.source.partition, "offset": item.source.offset},
            )
