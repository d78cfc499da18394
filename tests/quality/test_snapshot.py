"""The snapshot on QUALITY_TOPIC: the shape other programs read, and the checkpoint fields the monitor adds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from quality.snapshot import InvalidSnapshot, ModelQuality, PartitionPosition, QualitySnapshot, decode_snapshot, encode_snapshot

# The shape readers are written against: the figures only, none of the checkpoint's fields.
SHARED_SHAPE: dict[str, Any] = {
    "at": "2026-12-05T17:00:05+00:00", "watermark": None, "pending": 3, "late_purchases": 1, "sampled_out": 0,
    "models": [{"model_version": "v1", "role": "shadow", "training_auc": None, "labelled": 10, "window": 10, "auc": None,
                "log_loss": 0.5, "brier": 0.2, "ece": 0.1, "mean_probability": 0.3, "positive_rate": 0.0}],
}


def test_a_snapshot_goes_through_json_unchanged():
    snapshot = QualitySnapshot(
        at=datetime(2026, 12, 5, 17, 0, 5, 123456, tzinfo=UTC), watermark=datetime(2026, 12, 5, 16, 59, tzinfo=UTC), pending=4,
        late_purchases=2, sampled_out=1, invalid_purchases=3, late_predictions=5, unreadable_predictions=6,
        models=(ModelQuality(model_version="v1", role="serving", training_auc=0.73, labelled=9, window=9, auc=0.7, log_loss=0.4,
                             brier=0.1, ece=0.02, mean_probability=0.2, positive_rate=0.3, labelled_positive=3,
                             window_start=datetime(2026, 12, 5, 16, 50, tzinfo=UTC)),),
        positions=(PartitionPosition("output_topic", 2, 1234),),
    )
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot
    assert json.loads(encode_snapshot(snapshot))["models"][0]["role"] == "serving"


def test_the_shared_shape_decodes_with_the_checkpoint_fields_empty():
    snapshot = decode_snapshot(json.dumps(SHARED_SHAPE).encode())
    assert snapshot.models[0].role == "shadow" and snapshot.models[0].auc is None
    assert snapshot.positions == () and snapshot.models[0].window_start is None and snapshot.invalid_purchases == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "no value"),
        (b"{not json", "not JSON"),
        (json.dumps({**SHARED_SHAPE, "pending": -1}).encode(), "pending"),
        (json.dumps({**SHARED_SHAPE, "models": [{**SHARED_SHAPE["models"][0], "role": "champion"}]}).encode(), "role"),
    ],
)
def test_anything_else_is_refused_saying_why(value, says):
    with pytest.raises(InvalidSnapshot, match=says):
        decode_snapshot(value)
