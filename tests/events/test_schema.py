import random
from datetime import UTC, datetime

import pytest

from events.invalid_samples import INVALID_SAMPLES, random_invalid
from events.schema import InvalidEvent, Prediction, decode_prediction, encode_prediction, parse_event
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
