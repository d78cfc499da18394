import hashlib

from events.dead_letter import (
    ERROR_KIND,
    ERROR_REASON,
    HEADERS_DROPPED,
    KEY_DROPPED,
    SOURCE_OFFSET,
    VALUE_ORIGINAL_BYTES,
    VALUE_SHA256,
    VALUE_TRUNCATED,
    dead_letter_headers,
    fit_dead_letter,
    read_dead_letter_headers,
    record_size,
    strip_dead_letter,
)
from events.schema import InvalidEvent


def test_headers_name_the_error_and_the_source_position():
    """Dead-letter headers carry the kind, the reason, and topic, partition and offset of the original."""
    headers = dead_letter_headers(InvalidEvent("not_json", "JSON is malformed"), "input_topic", 3, 1234)
    assert read_dead_letter_headers(headers) == {
        "dlq.error.kind": "not_json",
        "dlq.error.reason": "JSON is malformed",
        "dlq.source.topic": "input_topic",
        "dlq.source.partition": "3",
        "dlq.source.offset": "1234",
    }


def test_original_headers_are_kept_and_stale_dlq_headers_replaced():
    """A replayed dead letter does not carry two conflicting reasons."""
    original = [("trace-id", b"abc"), (ERROR_KIND, b"old"), (SOURCE_OFFSET, b"1")]
    headers = dead_letter_headers(InvalidEvent("invalid_field", "bad user_id"), "t", 0, 9, original)
    assert ("trace-id", b"abc") in headers
    assert [value for key, value in headers if key == ERROR_KIND] == [b"invalid_field"]
    assert [value for key, value in headers if key == SOURCE_OFFSET] == [b"9"]
    assert dict(headers)[ERROR_REASON] == b"bad user_id"


LIMIT = 1_048_576 * 95 // 100


def _letter(value: bytes, key: bytes | None = b"k", original=()):
    headers = dead_letter_headers(InvalidEvent("not_json", "JSON is malformed"), "input_topic", 0, 5, original)
    return fit_dead_letter(key, value, headers, LIMIT)


def test_a_dead_letter_that_fits_is_kept_byte_for_byte():
    """Below the limit nothing is cut and nothing is marked."""
    letter = _letter(b"x" * 1000)
    assert letter.value == b"x" * 1000 and letter.key == b"k"
    assert VALUE_TRUNCATED not in dict(letter.headers)


def test_a_record_near_one_megabyte_is_cut_to_fit_and_says_so():
    """A 1,048,500-byte value (as the broker accepts) becomes a dead letter within the limit, with its size and digest."""
    value = bytes(range(256)) * 4096
    value = value[:1_048_500]
    letter = _letter(value)
    assert record_size(letter.key, letter.value, letter.headers) <= LIMIT
    why = dict(letter.headers)
    assert why[VALUE_TRUNCATED] == b"true"
    assert why[VALUE_ORIGINAL_BYTES] == b"1048500"
    assert why[VALUE_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert value.startswith(letter.value) and len(letter.value) > LIMIT - 2_000, "as much of the value as fits is kept"
    assert read_dead_letter_headers(letter.headers)[ERROR_KIND] == "not_json"


def test_huge_original_headers_and_key_are_dropped_when_nothing_else_helps():
    """Our headers always survive; the original headers and then an oversized key go, counted."""
    original = [(f"h{n}", b"v" * 100_000) for n in range(11)]
    letter = _letter(b"small", key=b"K" * 2_000_000, original=original)
    why = dict(letter.headers)
    assert record_size(letter.key, letter.value, letter.headers) <= LIMIT
    assert why[HEADERS_DROPPED] == b"11" and why[KEY_DROPPED] == b"2000000"
    assert letter.key is None
    assert read_dead_letter_headers(letter.headers)["dlq.source.offset"] == "5"


def test_the_smallest_form_keeps_only_our_headers_and_the_digest():
    """Stripping leaves no value, no original headers, and the original size and SHA-256."""
    letter = _letter(b"payload", original=[("trace-id", b"abc")])
    smallest = strip_dead_letter(letter)
    why = dict(smallest.headers)
    assert smallest.value == b"" and "trace-id" not in why
    assert why[VALUE_ORIGINAL_BYTES] == b"7" and why[VALUE_SHA256] == hashlib.sha256(b"payload").hexdigest().encode()
    assert why[HEADERS_DROPPED] == b"1"


def test_a_long_reason_is_bounded():
    """A parser message quoting a huge input does not make the headers huge."""
    headers = dead_letter_headers(InvalidEvent("invalid_field", "x" * 100_000), "t", 0, 1)
    assert len(dict(headers)[ERROR_REASON]) <= 1_010
