"""Purchase records: the outcome the model predicts, as they travel on PURCHASES_TOPIC.

Decoded and validated with msgspec like events (events/schema.py), and refused with the same
`InvalidEvent(kind, reason)`, so an invalid purchase is dead-lettered the same way.

    {"purchase_id": "p-81", "user_id": 42, "amount": 19.9, "timestamp": "2026-12-05T17:00:00Z"}
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import msgspec

from events.schema import MAX_EVENT_ID_LENGTH, MAX_USER_ID, InvalidEvent, as_utc

# DECIMAL(12,2) in the offline store.
MAX_AMOUNT = 9_999_999_999.99


class PurchaseRecord(msgspec.Struct, frozen=True):
    """A purchase as sent. Unknown extra fields are ignored."""

    purchase_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
    user_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_USER_ID)]
    amount: Annotated[float, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
    timestamp: datetime


class Purchase(msgspec.Struct, frozen=True):
    """A validated purchase; `timestamp` is always timezone-aware, UTC."""

    purchase_id: str
    user_id: int
    amount: float
    timestamp: datetime


_decoder = msgspec.json.Decoder(PurchaseRecord)
_encoder = msgspec.json.Encoder()


def decode_purchase(data: bytes | None) -> Purchase:
    """Decode and validate one purchase record, or raise `InvalidEvent` saying why."""
    if data is None:
        raise InvalidEvent("empty", "record has no value")
    try:
        raw = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidEvent("invalid_field", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("not_json", str(exc)) from None
    except RecursionError:
        raise InvalidEvent("not_json", "JSON is nested too deeply") from None
    if not raw.purchase_id.strip():
        raise InvalidEvent("invalid_field", "purchase_id is blank - at `$.purchase_id`")
    if not math.isfinite(raw.amount):
        raise InvalidEvent("invalid_field", "amount is not a finite number - at `$.amount`")
    return Purchase(raw.purchase_id, raw.user_id, raw.amount, as_utc(raw.timestamp))


def encode_purchase(purchase: Purchase | PurchaseRecord) -> bytes:
    return _encoder.encode(purchase)
