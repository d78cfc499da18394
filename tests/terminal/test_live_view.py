import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from events.schema import Prediction
from terminal.live_view import RATE_WINDOW_S, LiveTally, render
from terminal.percentiles import describe_latency, latency_percentiles, percentile

EVENT_TIME = datetime(2026, 11, 26, 12, tzinfo=UTC)


def prediction(p: float, service_ms: float = 10, model: str = "v1") -> Prediction:
    return Prediction(event_id="e", user_id=1, purchase_probability=p, model_version=model,
                      timestamp=EVENT_TIME, predicted_at=EVENT_TIME + timedelta(milliseconds=service_ms))


def test_percentiles_are_nearest_rank():
    """p50 of 1..100 is 50, p95 is 95, p99 is 99, and one value is every percentile."""
    values = [float(n) for n in range(100, 0, -1)]
    assert latency_percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentile([7.0], 0.99) == 7.0
    assert describe_latency([12.4, 30.0]) == "p50 12 ms, p95 30 ms, p99 30 ms, max 30 ms"
    assert describe_latency([]) == ""


def test_probabilities_fall_into_ten_bins_with_one_in_the_top_bin():
    """0.0 and 0.09 share the first bin, 0.5 is in the sixth, and 0.95 and 1.0 both count in the last."""
    tally = LiveTally(started=0.0)
    for p in (0.0, 0.09, 0.5, 0.95, 1.0):
        tally.add_prediction(prediction(p), EVENT_TIME, now=1.0)
    assert tally.probability_bins == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert tally.predictions == 5


def test_counts_by_model_and_dead_letter_kind_and_both_latencies_are_kept():
    """Each prediction counts for its model version; dead letters by kind; service and reader latencies apart."""
    tally = LiveTally(started=0.0)
    tally.add_prediction(prediction(0.2, service_ms=8, model="v1"), EVENT_TIME + timedelta(milliseconds=30), now=1.0)
    tally.add_prediction(prediction(0.4, service_ms=12, model="v2"), EVENT_TIME + timedelta(milliseconds=50), now=1.0)
    tally.add_dead_letter("not_json")
    tally.add_dead_letter("not_json")
    tally.add_dead_letter("invalid_field")
    assert tally.by_model == {"v1": 1, "v2": 1}
    assert tally.dead_letters == {"not_json": 2, "invalid_field": 1}
    assert list(tally.service_ms) == [8.0, 12.0] and list(tally.received_ms) == [30.0, 50.0]
    assert tally.summary(2.0) == "received 2 predictions and 3 dead letters in 2.0 s"


def test_the_rate_counts_only_the_last_window():
    """Predictions older than RATE_WINDOW_S drop out of the rate; early on the rate is over the time so far."""
    tally = LiveTally(started=0.0)
    for second in range(20):
        tally.add_prediction(prediction(0.5), EVENT_TIME, now=float(second))
    assert tally.rate(now=19.5) == 10 / RATE_WINDOW_S
    early = LiveTally(started=0.0)
    for _ in range(4):
        early.add_prediction(prediction(0.5), EVENT_TIME, now=1.0)
    assert early.rate(now=2.0) == 2.0


def test_the_rendered_view_shows_rate_latency_histogram_dead_letters_and_models():
    """The text of the live screen carries the figures of the tally, and hostile kinds are shown inert."""
    tally = LiveTally(started=0.0)
    for n in range(10):
        tally.add_prediction(prediction(n / 10, service_ms=10 + n), EVENT_TIME + timedelta(milliseconds=40), now=5.0)
    tally.add_dead_letter("not_json")
    tally.add_dead_letter("[red]x\x1b[2J")
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render(tally, now=5.0))
    text = console.export_text()
    assert "10 predictions, 2.0/s" in text
    assert "service: predicted_at − event" in text and "reader: received − event" in text
    assert "0.9–1.0" in text and "not_json" in text and "v1" in text
    assert "[red]x\\x1b[2J" in text
