"""The transactional producer of one input partition: its id, its timeout, and its bounded steps.

Each input partition has its own transactional producer, with a `transactional_id` made of the
group, the topic and the partition. aiokafka cannot send the consumer group's generation with a
transactional offset commit (KIP-447), so the broker could not tell a stalled former owner from
the current one by the group alone. The id can: whoever takes the partition over starts a
producer with the same id, which bumps its epoch, aborts the former owner's open transaction,
and refuses (fences) every later write of the former owner. Only after that does the new owner
read the committed offset, so it resumes exactly where the last committed transaction ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from config import Settings
from service.delivery.outputs import RecordSink
from service.failures import describe_error

log = logging.getLogger(__name__)

# Bound on each step of a transaction (producer start, acknowledgement, offsets, commit): past
# it the broker is taken as gone, and the transaction is dropped and redone.
STEP_TIMEOUT_S = 30.0
# Bound on aborting and closing a producer that is given up.
CLOSE_TIMEOUT_S = 5.0
# The broker aborts a transaction left open this long (its producer died without a successor).
# It must exceed the longest a live transaction can take: COMMIT_INTERVAL_MS plus the steps.
TRANSACTION_TIMEOUT_MARGIN_MS = 10_000


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


async def within(step: Awaitable[Any], what: str) -> Any:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the step's result when a
    # cancellation arrives just as the step completes, and a worker that swallows its cancel
    # leaves close() (a revoke, a shutdown) waiting for it for ever.
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await step
    except TimeoutError:
        raise TimeoutError(f"no answer from Kafka within {STEP_TIMEOUT_S:g} s while {what}") from None


async def stop_producer(producer: TransactionalSink, abort: bool, owner: str) -> None:
    """Stop a producer that is given up, aborting its open transaction first when `abort`."""
    if abort:
        # Readers with read_committed wait behind an open transaction: end it now rather
        # than when the next owner starts or the transaction times out.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.abort_transaction(), CLOSE_TIMEOUT_S)
    try:
        await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - its successor's start aborts whatever it left open
        log.debug("closing the producer of %s failed: %s", owner, describe_error(exc))
