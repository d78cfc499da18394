import random
import tracemalloc
from datetime import UTC, datetime

import msgspec
import pytest

from events import schema
from events.invalid_samples import INVALID_SAMPLES, random_invalid
from events.schema import (
    MAX_PAGE_NAME_CHARS,
    InvalidEvent,
    Prediction,
    WithheldValue,
    decode_prediction,
    encode_prediction,
    parse_event,
)
from tests.factories import event_bytes


def test_a_valid_event_is_parsed_and_cleaned():
    """Page names are stripped and lower-cased; the timestamp becomes UTC."""
    event = parse_event(
        b'{"event_id": "e1", "user_id": 42, "timestamp": "2026-11-26T14:00:00+02:00",'
        b' "last_three_pages_visited": [" Home ", "PRODUCT", "cart"]}'
    )
    assert event.event_id == "e1"
    assert event.user_id == 42
    assert event.timestamp == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert event.pages == ("home", "product", "cart")


def test_the_slash_separated_pages_form_is_accepted():
    """The original write-up's "home/cart/checkout" string means the same three pages."""
    event = parse_event(
        b'{"event_id": "e1", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "home/cart/checkout"}'
    )
    assert event.pages == ("home", "cart", "checkout")


def test_unknown_pages_become_other_and_the_event_stays_valid():
    """A page outside the shop's vocabulary is folded into `other`."""
    event = parse_event(event_bytes(pages=("home", "Wishlist", "checkout")))
    assert event.pages == ("home", "other", "checkout")


def test_unknown_extra_fields_are_ignored():
    """Clients may add fields; they neither fail validation nor reach the model."""
    event = parse_event(
        b'{"event_id": "e1", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z",'
        b' "last_three_pages_visited": ["home", "cart", "checkout"], "browser": "lynx", "user_id_hash": 7}'
    )
    assert event.user_id == 1


def test_a_timestamp_without_offset_is_taken_as_utc():
    """A naive ISO-8601 timestamp is read as UTC, not as the service's local time."""
    event = parse_event(event_bytes(timestamp="2026-11-26T12:00:00"))
    assert event.timestamp == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("kind", sorted(INVALID_SAMPLES))
def test_every_invalid_sample_is_rejected_with_a_reason(kind):
    """Each kind of invalid input raises InvalidEvent with a short kind and a readable reason."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(INVALID_SAMPLES[kind])
    assert caught.value.kind in {"not_utf8", "not_json", "invalid_field", "invalid_pages"}
    assert caught.value.reason


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (None, "empty", "no value"),
        (b'{"event_id": "e", "user_id": true, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "a/b/c"}', "invalid_field", "user_id"),
        (b'{"event_id": "e", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "a/b"}', "invalid_pages", "2 pages"),
        (b'{"event_id": "e", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": [1, 2, 3]}', "invalid_field", "last_three_pages_visited"),
        (b'{"event_id": "  ", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "a/b/c"}', "invalid_field", "event_id"),
        (b'{"event_id": "e", "user_id": 9223372036854775808, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "a/b/c"}', "invalid_field", "user_id"),
        (b'{"event_id": "e", "user_id": 1, "timestamp": "2026-11-26", "last_three_pages_visited": "a/b/c"}', "invalid_field", "timestamp"),
    ],
)
def test_the_reason_says_what_is_wrong(value, kind, fragment):
    """The kind classifies the failure and the reason points at the offending field."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(value)
    assert caught.value.kind == kind
    assert fragment in caught.value.reason


def test_random_invalid_numbers_its_sample():
    """Samples with an event id get the running number, so dead letters are told apart."""
    kinds = {random_invalid(random.Random(seed), 17) for seed in range(200)}
    assert any(b"bad-17" in value for _, value in kinds)
    assert all(b"{n}" not in value for _, value in kinds)


def test_a_prediction_round_trips_through_json():
    """What the service encodes, the consumer decodes to an equal Prediction."""
    prediction = Prediction(
        event_id="e1", user_id=3, purchase_probability=0.25, model_version="v1",
        timestamp=datetime(2026, 11, 26, 12, tzinfo=UTC), predicted_at=datetime(2026, 11, 26, 12, 0, 1, tzinfo=UTC),
    )
    assert decode_prediction(encode_prediction(prediction)) == prediction


@pytest.fixture
def empty_memo(monkeypatch):
    """A fresh page memo, so a test sees only what it adds itself."""
    memo: dict = {}
    monkeypatch.setattr(schema, "_CLEANED", memo)
    return memo


@pytest.mark.parametrize("form", ["list", "string"])
def test_a_page_name_longer_than_the_limit_makes_the_event_invalid(form, empty_memo):
    """A name of 257 characters is rejected as invalid_pages, naming its length and the limit."""
    long_name = "p" * (MAX_PAGE_NAME_CHARS + 1)
    pages = ("home", long_name, "cart") if form == "list" else f"home/{long_name}/cart"
    value = (
        b'{"event_id": "e", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": '
        + msgspec.json.encode(pages) + b"}"
    )
    with pytest.raises(InvalidEvent) as caught:
        parse_event(value)
    assert caught.value.kind == "invalid_pages"
    assert f"{MAX_PAGE_NAME_CHARS + 1} characters, at most {MAX_PAGE_NAME_CHARS}" in caught.value.reason
    assert not empty_memo


def test_a_page_name_at_the_limit_is_accepted_and_not_remembered(empty_memo):
    """256 characters is still a page name (an unknown one, so `other`), but too long to memoise."""
    event = parse_event(event_bytes(pages=("home", "p" * MAX_PAGE_NAME_CHARS, "cart")))
    assert event.pages == ("home", "other", "cart")
    assert not empty_memo


def test_short_page_combinations_are_remembered(empty_memo):
    """The usual names go into the memo, so the next event with them is one lookup."""
    parse_event(event_bytes(pages=(" Home ", "PRODUCT", "cart")))
    assert empty_memo == {(" Home ", "PRODUCT", "cart"): ("home", "product", "cart")}


def test_a_string_of_separators_is_counted_without_splitting_it_all():
    """Half a million slashes are reported as that many pages, from one split of at most four parts."""
    slashes = "/" * 500_000
    value = b'{"event_id": "e", "user_id": 1, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "' + slashes.encode() + b'"}'
    with pytest.raises(InvalidEvent) as caught:
        parse_event(value)
    assert caught.value.kind == "invalid_pages"
    assert "500001 pages" in caught.value.reason


def test_distinct_hostile_page_names_cannot_grow_the_memo_past_its_byte_bound(empty_memo):
    """Longer combinations are not kept at all; distinct ones as long and as wide as the memo takes
    (four-byte characters) fill it to its entry cap and hold under 12 MB."""
    wide = "\U0001f600"
    for n in range(1_000):
        parse_event(event_bytes(pages=(wide * 20, wide * 20, f"{wide * 17}{n:08d}")))
    assert not empty_memo
    tracemalloc.start()
    try:
        for n in range(schema._CLEANED_MAX + 1_000):
            # 20 + 20 + 24 characters: the longest combination the memo keeps.
            parse_event(event_bytes(pages=(wide * 20, wide * 20, f"{wide * 16}{n:08d}")))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(empty_memo) == schema._CLEANED_MAX
    assert held < 12 * 1024 * 1024, f"{held:,} bytes"


def test_a_withheld_value_is_invalid_with_its_own_kind_and_reason():
    """A value the Kafka client did not read is reported with the kind and reason it carries."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(WithheldValue("decompression_bomb", "batch expands beyond 64 MiB"))
    assert (caught.value.kind, caught.value.reason) == ("decompression_bomb", "batch expands beyond 64 MiB")


def test_an_empty_value_that_was_read_is_still_not_json():
    """Only a withheld value gets its own kind; an empty record as sent stays not_json."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(b"")
    assert caught.value.kind == "not_json"
