import logging

from service.stats import ServiceStats


def test_a_summary_is_logged_once_per_interval_with_rates_and_totals(caplog):
    """Nothing before the interval is up; then one INFO line with the rate, batch times and totals."""
    stats = ServiceStats(_interval_started=100.0)
    stats.record_batch(events=40, predictions=38, dead_letters=2, duration_s=0.010)
    stats.record_batch(events=60, predictions=60, dead_letters=0, duration_s=0.030)
    with caplog.at_level(logging.INFO, logger="service.stats"):
        assert not stats.log_summary_if_due(10, now=105.0)
        assert stats.log_summary_if_due(10, now=110.0)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("10 events/s over 10 s (2 batches, batch time median 20.0 ms, max 30.0 ms)")
    assert "totals: 100 events, 98 predictions, 2 dead letters, 0 retries" in message
