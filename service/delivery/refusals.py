"""Records Kafka refuses for what they are, and how far each refused output has got along the policy
(service/delivery/publisher.py explains the policy)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from errors import PredictionError, SetupError
from service.delivery.outputs import Outgoing
from service.failures import describe_error, kafka_setup_refusal, redo_can_pass

log = logging.getLogger(__name__)


class OutputRefused(SetupError):
    """Kafka refuses to take the service's writes at all: a setting or an ACL to fix."""


def transactions_stopped_by(error: Exception, owner: str, group_id: str) -> BaseException | None:
    """The error a partition's transactions stop the service with, or None for one that a redo by a
    new producer may get past."""
    if kafka_setup_refusal(error):
        return OutputRefused(
            f"Kafka refused the transactions of {owner}: {describe_error(error)}; grant the service WRITE and"
            f" DESCRIBE on transactional ids starting with {group_id}- and READ on group {group_id}"
        )
    # A refused topic, or a bug: better stopped than looping on it.
    return None if redo_can_pass(error) else error


class RecordsRefused(PredictionError):
    """In a transaction: Kafka refused these outputs for what they are; the transaction must be redone."""

    def __init__(self, refused: list[Refused]) -> None:
        super().__init__(f"Kafka refused {sum(len(r.items) for r in refused)} record(s): {describe_error(refused[0].error)}")
        self.refused = refused


# How far a refused record's output has got along the policy, in the order they are tried.
# From ALONE on, the output goes out in a record batch of its own.
AS_IS, ALONE, REJECTED, STRIPPED, UNDELIVERABLE = range(5)


@dataclass
class Refused:
    """Outputs Kafka refused together, and whether their record batch held nothing else."""

    items: list[Outgoing]
    error: BaseException
    alone: bool


class Refusals:
    """Per input record, the form its output takes after Kafka refused the earlier ones."""

    def __init__(self) -> None:
        self._stage: dict[tuple[int, int], tuple[int, str]] = {}  # (partition, offset) → (stage, why)

    def __bool__(self) -> bool:
        return bool(self._stage)

    def stage(self, record: ConsumerRecord) -> tuple[int, str]:
        return self._stage.get((record.partition, record.offset), (AS_IS, ""))

    def escalate(self, refused: Refused) -> None:
        if not refused.alone:
            # Any one of them may be the bad record: the redo sends each on its own first.
            log_sent_again_alone(refused)
            for item in refused.items:
                self._stage.setdefault((item.source.partition, item.source.offset), (ALONE, ""))
            return
        for item in refused.items:
            self._escalate_alone(item, refused.error)

    def _escalate_alone(self, item: Outgoing, error: BaseException) -> None:
        where = f"{item.source.topic}[{item.source.partition}]@{item.source.offset}"
        stage, why = self.stage(item.source)
        if not item.is_dead_letter:
            log.warning("Kafka refused the prediction for %s: %s; dead-lettering the event", where, describe_error(error))
            stage, why = REJECTED, f"prediction refused: {describe_error(error)}"
        else:
            stage = max(stage, REJECTED) + 1
            log.warning("Kafka refused the dead letter for %s: %s; %s", where, describe_error(error),
                        "sending it without its value" if stage == STRIPPED else "skipping it")
        self._stage[(item.source.partition, item.source.offset)] = (stage, why)

    def forget_before(self, partition: int, offset: int) -> None:
        """Committed records are never published again."""
        for key in [key for key in self._stage if key[0] == partition and key[1] < offset]:
            del self._stage[key]



def log_sent_again_alone(refused: Refused) -> None:
    first = refused.items[0].source
    log.info(
        "Kafka refused %d output(s) sent together, from %s[%d]@%d on: %s; each is sent again on its own",
        len(refused.items), first.topic, first.partition, first.offset, describe_error(refused.error),
    )

