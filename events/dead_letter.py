"""Headers of a dead-lettered record: why it was rejected and exactly where it came from.

The record itself keeps its original key and bytes, so it can be inspected or replayed as is.
"""

from __future__ import annotations

from collections.abc import Sequence

from events.schema import InvalidEvent

ERROR_KIND = "dlq.error.kind"
ERROR_REASON = "dlq.error.reason"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
DLQ_HEADERS = (ERROR_KIND, ERROR_REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET)


def dead_letter_headers(
    error: InvalidEvent, topic: str, partition: int, offset: int, original: Sequence[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    """The original record's headers (minus stale dlq.* ones), then ours."""
    kept = [(key, value) for key, value in original if key not in DLQ_HEADERS]
    return kept + [
        (ERROR_KIND, error.kind.encode()),
        (ERROR_REASON, error.reason.encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in headers if key in DLQ_HEADERS}
