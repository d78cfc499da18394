import logging

import pytest

from service.observe.stats import ServiceStats


def test_a_summary_is_logged_once_per_interval_with_rates_and_totals(caplog):
    """Nothing before the interval is up; then one INFO line with the rate, batch times and totals."""
    stats = ServiceStats(_interval_started_mono_s=100.0)
    stats.record_batch(events=40, predictions=38, dead_letters=2, duration_s=0.010)
    stats.record_batch(events=60, predictions=60, dead_letters=0, duration_s=0.030)
    with caplog.at_level(logging.INFO, logger="service.observe.stats"):
        assert not stats.log_summary_if_due(10, now=105.0)
        assert stats.log_summary_if_due(10, now=110.0)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("10 events/s over 10 s (2 batches, batch time median 20.0 ms, max 30.0 ms)")
    assert "totals: 100 events, 98 predictions, 2 dead letters, 0 retries" in message


def test_the_summary_carries_its_numbers_as_fields_for_json_logs(caplog):
    """The throughput line has the rate, batch times and totals as numeric record fields, which JSON lines keep."""
    import json

    from runtime.logs import JsonFormatter

    stats = ServiceStats(_interval_started_mono_s=100.0)
    stats.record_batch(events=40, predictions=38, dead_letters=2, duration_s=0.010)
    stats.record_batch(events=60, predictions=60, dead_letters=0, duration_s=0.030)
    stats.record_retry("MySQL")
    with caplog.at_level(logging.INFO, logger="service.observe.stats"):
        stats.log_summary_if_due(10, now=110.0)
    (record,) = caplog.records
    entry = json.loads(JsonFormatter().format(record))
    assert entry["events_per_s"] == 10.0 and entry["interval_s"] == 10.0 and entry["batches"] == 2
    assert (entry["batch_median_ms"], entry["batch_max_ms"]) == (20.0, 30.0)
    assert (entry["events_total"], entry["predictions_total"], entry["dead_letters_total"], entry["retries_total"]) == (100, 98, 2, 1)


def test_the_dead_letter_digest_carries_counts_by_kind_as_a_field(caplog):
    """The per-interval dead-letter WARNING has the total and a kind → count mapping as fields."""
    stats = ServiceStats(_interval_started_mono_s=0.0)
    for offset, kind in enumerate(["not_json", "not_json", "invalid_field"]):
        stats.record_dead_letter(kind, "in", 0, offset)
    with caplog.at_level(logging.WARNING, logger="service.observe.stats"):
        stats.log_summary_if_due(10, now=10.0)
    (record,) = caplog.records
    assert record.dead_letters == 3
    assert record.dead_letters_by_kind == {"not_json": 2, "invalid_field": 1}


def test_dead_letters_by_kind_are_totals_that_survive_the_interval_reset():
    """The per-kind totals /metrics reads keep counting after a summary empties the interval's counts."""
    stats = ServiceStats(_interval_started_mono_s=0.0)
    stats.record_dead_letter("not_json", "in", 0, 1)
    stats.log_summary_if_due(10, now=10.0)
    stats.record_dead_letter("not_json", "in", 0, 2)
    assert stats.dead_letters_by_kind == {"not_json": 2}


def test_an_unknown_stage_is_refused_so_the_label_stays_bounded():
    """observe_stage takes only the named stages; a typo raises instead of minting a new series."""
    stats = ServiceStats()
    stats.observe_stage("predict", 0.004)
    assert stats.stage_seconds["predict"].count == 1
    with pytest.raises(ValueError, match="unknown stage 'predcit'"):
        stats.observe_stage("predcit", 0.004)


def test_the_batch_in_hand_has_an_age_until_it_is_recorded_or_abandoned():
    """mark_batch_started (or set_batch_in_hand) starts the age; record_batch and record_abandoned end it."""
    stats = ServiceStats()
    assert stats.batch_age_s() == 0.0
    stats.mark_batch_started()
    assert stats.batch_started_mono_s is not None
    assert stats.batch_age_s(now=stats.batch_started_mono_s + 2.5) == 2.5
    stats.record_batch(1, 1, 0, 0.01)
    assert stats.batch_age_s() == 0.0
    stats.mark_batch_started()
    stats.record_abandoned()
    assert stats.batch_age_s() == 0.0
    stats.set_batch_in_hand(since_mono_s=50.0)  # the oldest of several in flight
    assert stats.batch_age_s(now=53.0) == 3.0


def test_polls_batches_and_retries_all_count_as_activity():
    """Each of mark_polled, record_batch and record_retry moves last_active_mono_s forward."""
    stats = ServiceStats()
    for act in (stats.mark_polled, lambda: stats.record_batch(1, 1, 0, 0.01), lambda: stats.record_retry("Kafka")):
        stats.last_active_mono_s = -1.0
        act()
        assert stats.last_active_mono_s > 0
    assert stats.polls == 1
