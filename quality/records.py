"""What the monitor reads, decoded: a prediction with its role, a purchase, or a record that is neither."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from events.purchase import Purchase, decode_purchase
from events.schema import InvalidEvent, Prediction, decode_prediction
from quality.event_time import micros


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record read, in its partition at `offset`: exactly one of the other fields is set."""

    offset: int
    prediction: Prediction | None = None
    role: str = ""
    purchase: Purchase | None = None
    # Why the record is no valid purchase (kind: reason), or no prediction.
    invalid_purchase: str | None = None
    unreadable_prediction: str | None = None


def decode_purchase_record(offset: int, value: bytes | None) -> tuple[int | None, Incoming]:
    """(event time in µs or None, the decoded record) of a record on PURCHASES_TOPIC."""
    try:
        purchase = decode_purchase(value)
        return micros(purchase.timestamp), Incoming(offset, purchase=purchase)
    except InvalidEvent as exc:
        return None, Incoming(offset, invalid_purchase=f"{exc.kind}: {exc.reason}")
    except OverflowError:
        return None, Incoming(offset, invalid_purchase="invalid_field: timestamp is out of range")


def decode_prediction_record(offset: int, value: bytes | None, role: str) -> tuple[int | None, Incoming]:
    """(event time in µs or None, the decoded record) of a record on OUTPUT_TOPIC or SHADOW_OUTPUT_TOPIC."""
    try:
        prediction = decode_prediction(value or b"")
        at_us = micros(prediction.timestamp)
    except (msgspec.MsgspecError, OverflowError) as exc:
        return None, Incoming(offset, unreadable_prediction=str(exc))
    probability = prediction.purchase_probability
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        return None, Incoming(offset, unreadable_prediction=f"purchase_probability {probability!r} is not in [0, 1]")
    return at_us, Incoming(offset, prediction=prediction, role=role)
