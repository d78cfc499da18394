"""A monitor restarted from its checkpoint counts what an uninterrupted one counts: nothing twice, nothing lost.

The records are fed through QualityMonitor.take, as the read loop does, with each partition's reading
started where quality/kafka_io.py would seek it: the first record at or after the replay start time,
never past the checkpoint's position.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from aiokafka.structs import TopicPartition

from config import Settings
from quality.event_time import micros
from quality.kafka_io import checkpoint_positions, replay_start_ms
from quality.monitor import QualityMonitor
from quality.records import Incoming
from quality.snapshot import QualitySnapshot, decode_snapshot, encode_snapshot
from tests.quality.builders import prediction, purchase

WINDOW_S, ALLOWANCE_S, QUALITY_WINDOW = 10, 2, 50
SETTINGS = Settings(label_window_s=WINDOW_S, label_late_allowance_s=ALLOWANCE_S, quality_window=QUALITY_WINDOW, quality_max_pending=10_000)
OUTPUT = [TopicPartition(SETTINGS.output_topic, 0), TopicPartition(SETTINGS.output_topic, 1)]
PURCHASES = TopicPartition(SETTINGS.purchases_topic, 0)


@dataclass(frozen=True)
class Record:
    tp: TopicPartition
    incoming: Incoming
    record_time_ms: int  # the Kafka timestamp: when it was appended


def stream(seed: int = 2) -> list[Record]:
    """About 600 s of predictions and purchases in the order they reach Kafka, with repeats, invalid and late purchases."""
    rng = random.Random(seed)
    offsets = {tp: 0 for tp in [*OUTPUT, PURCHASES]}
    arrivals: list[tuple[float, TopicPartition, Incoming]] = []

    def append(arrival_s: float, tp: TopicPartition, **fields) -> None:
        arrivals.append((arrival_s, tp, Incoming(-1, **fields)))

    for i in range(1_200):
        seconds, user = i * 0.5, rng.randrange(30)
        probability = rng.uniform(0.05, 0.6)
        made = prediction(f"e{i:05d}", user, seconds, probability)
        append(seconds + 0.05, OUTPUT[user % 2], prediction=made, role="serving")
        if rng.random() < 0.03:  # at_least_once: published again a little later
            append(seconds + 1.5, OUTPUT[user % 2], prediction=made, role="serving")
        if rng.random() < 0.02:  # or much later, after its label time
            append(seconds + 15, OUTPUT[user % 2], prediction=made, role="serving")
        if rng.random() < probability:
            bought = seconds + rng.uniform(0.2, 12)
            # One purchase in ten reaches Kafka long after it happened: late for the watermark.
            delay = rng.uniform(5, 30) if rng.random() < 0.1 else 0.01
            append(bought + delay, PURCHASES, purchase=purchase(user, bought))
        if rng.random() < 0.02:
            append(seconds + 0.3, PURCHASES, invalid_purchase="not_json: truncated")
    records = []
    for arrival_s, tp, incoming in sorted(arrivals, key=lambda a: a[0]):
        records.append(Record(tp, Incoming(offsets[tp], incoming.prediction, incoming.role, incoming.purchase,
                                           incoming.invalid_purchase), int((micros(prediction("x", 0, arrival_s).timestamp)) // 1000)))
        offsets[tp] += 1
    return records


def new_monitor() -> QualityMonitor:
    return QualityMonitor(SETTINGS)


def counts(snapshot: QualitySnapshot) -> dict:
    return {
        "models": {(m.model_version, m.role): (m.labelled, m.labelled_positive) for m in snapshot.models},
        "late_purchases": snapshot.late_purchases, "late_predictions": snapshot.late_predictions,
        "invalid_purchases": snapshot.invalid_purchases, "sampled_out": snapshot.sampled_out,
    }


def figures(snapshot: QualitySnapshot) -> list:
    return [(m.model_version, m.role, m.window, m.auc, m.log_loss, m.brier, m.ece, m.positive_rate) for m in snapshot.models]


def replay(records: list[Record], checkpoint: QualitySnapshot) -> QualityMonitor:
    """A new monitor resuming from `checkpoint`, reading each partition from where the monitor would seek it."""
    monitor = new_monitor()
    checkpoint = decode_snapshot(encode_snapshot(checkpoint))  # as read back from QUALITY_TOPIC
    monitor.restore(checkpoint)
    start_ms = replay_start_ms(checkpoint, WINDOW_S, ALLOWANCE_S)
    assert start_ms is not None
    boundary = checkpoint_positions(checkpoint)
    starts = {}
    for tp in [*OUTPUT, PURCHASES]:
        found = next((r.incoming.offset for r in records if r.tp == tp and r.record_time_ms >= start_ms), None)
        end = sum(r.tp == tp for r in records)
        starts[tp] = min(end if found is None else found, boundary.get(tp, end))
    monitor.start_reading(starts, boundary)
    for record in records:
        if record.incoming.offset >= starts[record.tp]:
            monitor.take(record.tp, record.incoming)
    return monitor


def test_the_stream_exercises_what_a_restart_could_count_twice():
    monitor = new_monitor()
    for record in stream():
        monitor.take(record.tp, record.incoming)
    snapshot = monitor.snapshot()
    assert snapshot.late_purchases > 5 and snapshot.invalid_purchases > 5 and snapshot.late_predictions > 5
    [(labelled, positive)] = counts(snapshot)["models"].values()
    assert labelled > 1_000 and 0 < positive < labelled


@pytest.mark.parametrize(("checkpoint_at", "killed_at"), [(900, 1_300), (1_500, 1_500), (2_000, 2_100), (40, 700)])
def test_a_restart_from_the_checkpoint_counts_what_an_uninterrupted_run_counts(checkpoint_at, killed_at):
    records = stream()
    uninterrupted = new_monitor()
    for record in records:
        uninterrupted.take(record.tp, record.incoming)

    first = new_monitor()
    for record in records[:checkpoint_at]:
        first.take(record.tp, record.incoming)
    checkpoint = first.snapshot()
    for record in records[checkpoint_at:killed_at]:  # counted, then lost with the process
        first.take(record.tp, record.incoming)

    resumed = replay(records, checkpoint)
    assert counts(resumed.snapshot()) == counts(uninterrupted.snapshot())
    assert figures(resumed.snapshot()) == figures(uninterrupted.snapshot())


def test_the_replay_reads_less_than_everything_and_without_the_checkpoint_the_counts_would_double():
    records = stream()
    first = new_monitor()
    for record in records[:1_500]:
        first.take(record.tp, record.incoming)
    checkpoint = first.snapshot()
    start_ms = replay_start_ms(checkpoint, WINDOW_S, ALLOWANCE_S)
    assert start_ms is not None and records[0].record_time_ms < start_ms < records[1_500].record_time_ms

    forgetful = new_monitor()
    forgetful.tracker.restore(checkpoint)  # the counters, but no boundary: every record read again counts again
    for record in records:
        forgetful.take(record.tp, record.incoming)
    uninterrupted = new_monitor()
    for record in records:
        uninterrupted.take(record.tp, record.incoming)
    twice, once = counts(forgetful.snapshot()), counts(uninterrupted.snapshot())
    assert twice["invalid_purchases"] > once["invalid_purchases"]
    assert twice["late_purchases"] > once["late_purchases"]
    assert twice["models"][("v1", "serving")][0] > once["models"][("v1", "serving")][0]
