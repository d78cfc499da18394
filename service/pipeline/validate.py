"""Validating a batch of polled records: each becomes an event, or a dead letter with its reason, counted by kind."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord

from events.schema import Event, InvalidEvent, parse_event
from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)


@dataclass
class ValidatedRecords:
    valid: list[tuple[ConsumerRecord, Event]] = field(default_factory=list)
    invalid: list[tuple[ConsumerRecord, InvalidEvent]] = field(default_factory=list)


def validate_records(records: Sequence[ConsumerRecord], stats: ServiceStats | None = None) -> ValidatedRecords:
    """Validate every record; the bad ones are kept with the reason, never raised, and counted
    as dead letters by kind in `stats`."""
    batch = ValidatedRecords()
    for record in records:
        try:
            batch.valid.append((record, parse_event(record.value)))
        except InvalidEvent as error:
            batch.invalid.append((record, error))
        except Exception as exc:
            # A parser gap, not an outage: if it escaped, its uncommitted record would stop the
            # service on every restart. Dead-letter it so it can be studied, and go on.
            log.exception("unexpected error parsing %s[%d]@%d", record.topic, record.partition, record.offset)
            batch.invalid.append((record, InvalidEvent("unparseable", f"{type(exc).__name__}: {exc}")))
    if stats is not None:
        for record, invalid in batch.invalid:
            stats.record_dead_letter(invalid.kind, record.topic, record.partition, record.offset)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, invalid.kind, invalid.reason)
    return batch
