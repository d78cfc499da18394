from events.dead_letter import ERROR_KIND, ERROR_REASON, SOURCE_OFFSET, dead_letter_headers, read_dead_letter_headers
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
