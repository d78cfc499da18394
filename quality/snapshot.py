"""The quality snapshot the monitor publishes on QUALITY_TOPIC (key b"quality") every few seconds.

It is what `consumer.py --live` shows, and it is also the monitor's checkpoint: the counters, the
watermark they were taken at, where each model's window starts and how far each partition was read,
so a restarted monitor resumes its counts instead of starting them over (docs/model-quality.md).

    {"at": "2026-12-05T17:00:05Z", "watermark": "2026-12-05T16:59:01Z", "pending": 812, "late_purchases": 0,
     "sampled_out": 0, "models": [{"model_version": "20261205T101500Z-0a1b2c3d4e", "role": "serving",
     "training_auc": 0.7305, "labelled": 4211, "window": 4211, "auc": 0.7288, "log_loss": 0.4401,
     "brier": 0.1392, "ece": 0.0081, "mean_probability": 0.2113, "positive_rate": 0.2087, ...}], ...}

Fields after those of the first line of each struct are the checkpoint's; readers that only show
figures can ignore them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

SNAPSHOT_KEY = b"quality"
Count = Annotated[int, msgspec.Meta(ge=0)]
Role = Literal["serving", "shadow"]


class InvalidSnapshot(ValueError):
    """A record on QUALITY_TOPIC that is not a quality snapshot."""


class ModelQuality(msgspec.Struct, frozen=True, kw_only=True):
    """One model version in one role: its counts and its quality over the window of recent labels."""

    model_version: str
    role: Role
    training_auc: float | None  # the held-out ROC AUC recorded when the version was trained; None: unknown
    labelled: Count  # every prediction labelled so far (a counter)
    window: Count  # labelled predictions the figures below are computed over, at most QUALITY_WINDOW
    auc: float | None  # None while the window holds only one class
    log_loss: float | None
    brier: float | None
    ece: float | None
    mean_probability: float | None
    positive_rate: float | None
    # The checkpoint: of `labelled`, how many were positive; the event time of the window's oldest prediction.
    labelled_positive: Count = 0
    window_start: datetime | None = None


class PartitionPosition(msgspec.Struct, frozen=True):
    """The next offset the monitor had not yet taken into account, in one partition it reads."""

    topic: str
    partition: Count
    offset: Count


class QualitySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime  # wall clock, when the snapshot was taken
    watermark: datetime | None  # event time up to which predictions are labelled; None before any record
    pending: Count  # predictions waiting for their label
    late_purchases: Count
    sampled_out: Count
    models: tuple[ModelQuality, ...]
    # Counters beyond the figures above: purchases that failed validation, predictions that came after
    # their own label time (not labelled), records on the prediction topics that are no prediction.
    invalid_purchases: Count = 0
    late_predictions: Count = 0
    unreadable_predictions: Count = 0
    positions: tuple[PartitionPosition, ...] = ()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(QualitySnapshot)


def encode_snapshot(snapshot: QualitySnapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes | None) -> QualitySnapshot:
    """Decode and validate one snapshot, or raise InvalidSnapshot saying why."""
    if data is None:
        raise InvalidSnapshot("the record has no value")
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidSnapshot(f"not a quality snapshot: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidSnapshot(f"not JSON: {exc}") from None
