"""Where a restarted monitor reads from, how far its checkpoint says it had read, and the records it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import TopicPartition

from config import ConfigError, Settings
from events.purchase import Purchase, encode_purchase
from events.schema import Prediction, encode_prediction
from quality.kafka_io import REPLAY_MARGIN_S, checkpoint_positions, positions_for_checkpoint, replay_start_ms
from quality.monitor import check_topics
from quality.records import decode_prediction_record, decode_purchase_record
from quality.snapshot import ModelQuality, PartitionPosition, QualitySnapshot

W = datetime(2026, 12, 5, 17, 0, tzinfo=UTC)


def checkpoint(watermark: datetime | None, *window_starts: datetime) -> QualitySnapshot:
    models = tuple(
        ModelQuality(model_version=f"v{i}", role="serving", training_auc=None, labelled=1, window=1, auc=None, log_loss=None,
                     brier=None, ece=None, mean_probability=None, positive_rate=None, window_start=start)
        for i, start in enumerate(window_starts)
    )
    return QualitySnapshot(at=W, watermark=watermark, pending=0, late_purchases=0, sampled_out=0, models=models,
                           positions=(PartitionPosition("out", 0, 40), PartitionPosition("out", 1, 7)))


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_without_a_checkpoint_everything_is_read():
    assert replay_start_ms(None, 1800, 60) is None
    assert replay_start_ms(checkpoint(None), 1800, 60) is None


def test_the_replay_starts_before_the_pending_predictions_and_the_windows():
    margin = timedelta(seconds=REPLAY_MARGIN_S)
    pending_from = W - timedelta(seconds=1800 + 60)
    assert replay_start_ms(checkpoint(W), 1800, 60) == ms(pending_from - margin)
    long_window = W - timedelta(hours=5)
    assert replay_start_ms(checkpoint(W, W - timedelta(minutes=1), long_window), 1800, 60) == ms(long_window - margin)


def test_positions_are_the_furthest_of_the_checkpoints_and_this_runs():
    boundary = checkpoint_positions(checkpoint(W))
    assert boundary == {TopicPartition("out", 0): 40, TopicPartition("out", 1): 7}
    processed = {TopicPartition("out", 0): 12, TopicPartition("out", 1): 9, TopicPartition("purchases", 0): 3}
    assert positions_for_checkpoint(processed, boundary) == [
        PartitionPosition("out", 0, 40), PartitionPosition("out", 1, 9), PartitionPosition("purchases", 0, 3),
    ]


def test_the_topics_read_and_written_must_differ():
    with pytest.raises(ConfigError, match="PURCHASES_TOPIC"):
        check_topics(Settings(purchases_topic="output_topic"))
    with pytest.raises(ConfigError, match="QUALITY_TOPIC"):
        check_topics(Settings(quality_topic="purchases"))
    check_topics(Settings())


def test_records_decode_to_what_the_tracker_takes_or_say_why_not():
    at = datetime(2026, 12, 5, 17, 0, 1, 250_000, tzinfo=UTC)
    value = encode_prediction(Prediction("e1", 4, 0.25, "v1", at, at))
    at_us, incoming = decode_prediction_record(8, value, "shadow")
    assert at_us == ms(at) * 1000 and incoming.prediction is not None and incoming.role == "shadow" and incoming.offset == 8
    assert decode_prediction_record(9, b'{"event_id": 1}', "serving")[1].unreadable_prediction
    assert decode_prediction_record(10, None, "serving")[1].unreadable_prediction
    out_of_range = encode_prediction(Prediction("e2", 4, 1.5, "v1", at, at))
    assert "not in [0, 1]" in (decode_prediction_record(11, out_of_range, "serving")[1].unreadable_prediction or "")

    at_us, incoming = decode_purchase_record(3, encode_purchase(Purchase("p1", 4, 9.5, at)))
    assert at_us == ms(at) * 1000 and incoming.purchase is not None
    at_us, incoming = decode_purchase_record(4, b'{"purchase_id": "p2", "user_id": 4, "amount": -1, "timestamp": "2026-12-05T17:00:00Z"}')
    assert at_us is None and (incoming.invalid_purchase or "").startswith("invalid_field: ")
