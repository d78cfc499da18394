from datetime import UTC, datetime

import pytest

from events.purchase import MAX_AMOUNT, Purchase, PurchaseRecord, decode_purchase, encode_purchase
from events.schema import MAX_EVENT_ID_LENGTH, InvalidEvent


def test_a_valid_purchase_is_decoded_with_its_timestamp_in_utc():
    """The fields come through as sent; an offset timestamp becomes the same instant in UTC."""
    purchase = decode_purchase(b'{"purchase_id": "p-81", "user_id": 42, "amount": 19.9, "timestamp": "2026-12-05T19:00:00+02:00"}')
    assert purchase == Purchase("p-81", 42, 19.9, datetime(2026, 12, 5, 17, 0, tzinfo=UTC))
    assert purchase.timestamp.tzinfo is UTC


def test_a_timestamp_without_offset_is_taken_as_utc_and_unknown_fields_are_ignored():
    """As for events: a naive timestamp is UTC, and extra fields neither fail nor travel on."""
    purchase = decode_purchase(
        b'{"purchase_id": "p", "user_id": 0, "amount": 5, "timestamp": "2026-12-05T17:00:00", "currency": "EUR"}'
    )
    assert purchase.timestamp == datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    assert purchase.amount == 5.0 and isinstance(purchase.amount, float)


def test_encoding_and_decoding_give_back_the_purchase():
    """encode_purchase writes what decode_purchase reads back unchanged, to the microsecond."""
    purchase = Purchase("0f3c", 7, 123.45, datetime(2026, 12, 5, 17, 0, 1, 250_001, tzinfo=UTC))
    assert decode_purchase(encode_purchase(purchase)) == purchase
    record = PurchaseRecord("r", 8, 1.5, datetime(2026, 1, 1, tzinfo=UTC))
    assert decode_purchase(encode_purchase(record)) == Purchase("r", 8, 1.5, datetime(2026, 1, 1, tzinfo=UTC))


VALID = {"purchase_id": '"p-1"', "user_id": "3", "amount": "9.5", "timestamp": '"2026-12-05T17:00:00Z"'}


def record(**fields: str | None) -> bytes:
    """A purchase record with some fields replaced (raw JSON text) or left out (None)."""
    merged = {**VALID, **fields}
    return ("{" + ", ".join(f'"{name}": {value}' for name, value in merged.items() if value is not None) + "}").encode()


@pytest.mark.parametrize(
    ("raw", "kind", "names"),
    [
        (None, "empty", "no value"),
        (b"not json", "not_json", ""),
        (b'{"extra": ' + b"[" * 100_000, "not_json", ""),
        (b"[]", "invalid_field", "object"),
        (record(purchase_id=None), "invalid_field", "purchase_id"),
        (record(purchase_id='""'), "invalid_field", "purchase_id"),
        (record(purchase_id='"   "'), "invalid_field", "blank"),
        (record(purchase_id='"' + "x" * (MAX_EVENT_ID_LENGTH + 1) + '"'), "invalid_field", "purchase_id"),
        (record(user_id="-1"), "invalid_field", "user_id"),
        (record(user_id="true"), "invalid_field", "user_id"),
        (record(user_id='"3"'), "invalid_field", "user_id"),
        (record(amount="0"), "invalid_field", "amount"),
        (record(amount="-2.5"), "invalid_field", "amount"),
        (record(amount="1e999"), "invalid_field", "amount"),
        (record(amount=str(MAX_AMOUNT * 10)), "invalid_field", "amount"),
        (record(amount='"9.5"'), "invalid_field", "amount"),
        (record(timestamp='"yesterday"'), "invalid_field", "timestamp"),
        (record(timestamp=None), "invalid_field", "timestamp"),
    ],
)
def test_invalid_purchases_are_refused_with_the_kind_and_the_field(raw, kind, names):
    """Each malformed record raises InvalidEvent with a stable kind and a reason naming what is wrong."""
    with pytest.raises(InvalidEvent) as refused:
        decode_purchase(raw)
    assert refused.value.kind == kind
    assert names in refused.value.reason


def test_the_largest_amount_the_store_holds_is_accepted():
    """DECIMAL(12,2)'s largest value is a valid amount; the refusals above are not about size alone."""
    assert decode_purchase(record(amount=f"{MAX_AMOUNT:.2f}")).amount == MAX_AMOUNT
