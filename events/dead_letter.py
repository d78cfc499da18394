"""Dead letters: the rejected record, why it was rejected and exactly where it came from.

The record keeps its original key, bytes and headers, so it can be inspected or replayed as
is, unless that would not fit in one Kafka record: then the value (and if need be the original
headers and key) is cut to fit, and headers say so, with the original size and SHA-256.
A dead letter that cannot be written would stop its partition for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from events.schema import InvalidEvent

ERROR_KIND = "dlq.error.kind"
ERROR_REASON = "dlq.error.reason"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
VALUE_TRUNCATED = "dlq.value.truncated"
VALUE_ORIGINAL_BYTES = "dlq.value.original.bytes"
VALUE_SHA256 = "dlq.value.sha256"
HEADERS_DROPPED = "dlq.headers.dropped"
KEY_DROPPED = "dlq.key.dropped"
DLQ_HEADERS = (
    ERROR_KIND, ERROR_REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET,
    VALUE_TRUNCATED, VALUE_ORIGINAL_BYTES, VALUE_SHA256, HEADERS_DROPPED, KEY_DROPPED,
)

# A reason quotes parser messages, which can quote the input; a bound keeps headers small.
MAX_REASON_CHARS = 1_000
# A key longer than this is dropped, not cut, when the record must shrink: half a key would
# route the record to an arbitrary partition anyway.
MAX_KEPT_KEY_BYTES = 1_024

Headers = list[tuple[str, bytes]]


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: Headers


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Upper bound of the record's size in a batch, as the producer checks it."""
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)


def dead_letter_headers(
    error: InvalidEvent, topic: str, partition: int, offset: int, original: Sequence[tuple[str, bytes]] = ()
) -> Headers:
    """The original record's headers (minus stale dlq.* ones), then ours."""
    kept = [(key, value) for key, value in original if key not in DLQ_HEADERS]
    reason = error.reason if len(error.reason) <= MAX_REASON_CHARS else error.reason[:MAX_REASON_CHARS] + "…"
    return [
        *kept,
        (ERROR_KIND, error.kind.encode()),
        (ERROR_REASON, reason.encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]


def fit_dead_letter(key: bytes | None, value: bytes | None, headers: Headers, max_bytes: int) -> DeadLetter:
    """The dead letter as is when it fits in `max_bytes`; otherwise cut to fit, and marked so.

    The value goes first, then the original headers, then the key; ours always stay.
    """
    if record_size(key, value, headers) <= max_bytes:
        return DeadLetter(key, value, headers)
    original = value or b""
    marks: Headers = [
        (VALUE_TRUNCATED, b"true"),
        (VALUE_ORIGINAL_BYTES, str(len(original)).encode()),
        (VALUE_SHA256, hashlib.sha256(original).hexdigest().encode()),
    ]
    ours = [(k, v) for k, v in headers if k in DLQ_HEADERS]
    theirs = [(k, v) for k, v in headers if k not in DLQ_HEADERS]
    if record_size(key, b"", theirs + ours + marks) > max_bytes and theirs:
        marks.append((HEADERS_DROPPED, str(len(theirs)).encode()))
        theirs = []
    if record_size(key, b"", theirs + ours + marks) > max_bytes and key is not None and len(key) > MAX_KEPT_KEY_BYTES:
        marks.append((KEY_DROPPED, str(len(key)).encode()))
        key = None
    headers = theirs + ours + marks
    room = max_bytes - record_size(key, b"", headers)
    # The size of a varint grows with the value's length, so shave a few bytes for it.
    return DeadLetter(key, original[: max(0, room - 8)], headers)


def strip_dead_letter(letter: DeadLetter) -> DeadLetter:
    """The smallest form of a dead letter: no value and no original headers, only ours.

    For a dead letter that Kafka refused as it was (a topic with a lower size limit, say).
    """
    original = letter.value or b""
    replaced = (VALUE_TRUNCATED, VALUE_ORIGINAL_BYTES, VALUE_SHA256, HEADERS_DROPPED)
    ours = [(k, v) for k, v in letter.headers if k in DLQ_HEADERS and k not in replaced]
    already = dict(letter.headers)
    dropped = sum(k not in DLQ_HEADERS for k, _ in letter.headers) + int(already.get(HEADERS_DROPPED, b"0"))
    marks = [
        (VALUE_TRUNCATED, b"true"),
        (VALUE_ORIGINAL_BYTES, already.get(VALUE_ORIGINAL_BYTES, str(len(original)).encode())),
        (VALUE_SHA256, already.get(VALUE_SHA256, hashlib.sha256(original).hexdigest().encode())),
    ]
    if dropped:
        marks.append((HEADERS_DROPPED, str(dropped).encode()))
    key = letter.key if letter.key is None or len(letter.key) <= MAX_KEPT_KEY_BYTES else None
    return DeadLetter(key, b"", ours + marks)


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in headers if key in DLQ_HEADERS}
