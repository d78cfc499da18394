from datetime import UTC, datetime, timedelta

from events.dead_letter import dead_letter_headers
from events.schema import InvalidEvent, Prediction
from terminal.prediction_reader import ReaderSummary, render_dead_letter, render_prediction
from tests.fakes.kafka import make_record

EVENT_TIME = datetime(2026, 11, 26, 12, tzinfo=UTC)


def prediction(p: float) -> Prediction:
    return Prediction(event_id="e-7", user_id=42, purchase_probability=p, model_version="v1",
                      timestamp=EVENT_TIME, predicted_at=EVENT_TIME)


def test_a_prediction_line_shows_user_probability_bar_and_age():
    """One line: the user, the probability with a ten-cell bar, the event id and how old the event is."""
    line = render_prediction(prediction(0.731), EVENT_TIME + timedelta(milliseconds=52))
    assert line.startswith("user      42  p=0.731 ███████░░░")
    assert "event e-7" in line and "52 ms after the event" in line and "model v1" in line


def test_a_dead_letter_line_says_where_it_came_from_and_why():
    """The rejected record's source position, kind and reason, then its first bytes."""
    headers = dead_letter_headers(InvalidEvent("not_json", "JSON is malformed"), "input_topic", 2, 40)
    line = render_dead_letter(make_record(b"garbage", headers=headers))
    assert line.startswith("input_topic[2]@40  not_json: JSON is malformed")
    assert "b'garbage'" in line


def test_the_summary_counts_and_averages():
    """The exit summary gives the count, the mean probability and how many were likely buyers."""
    summary = ReaderSummary(records=3, probabilities=[0.2, 0.6, 0.7], seconds=1.5)
    assert summary.render("output_topic") == (
        "received 3 records from output_topic in 1.5 s; mean purchase probability 0.500, 2 of 3 at 0.5 or above"
    )


HOSTILE = "e\x1b[2J\x1b]0;owned\x07\nforged line\r\u202e"


def test_a_prediction_with_control_characters_prints_as_one_harmless_line():
    """Escape sequences, newlines and bidi overrides in an event id are shown escaped, never acted on."""
    p = Prediction(event_id=HOSTILE, user_id=1, purchase_probability=0.5, model_version="v\x1b[31m",
                   timestamp=EVENT_TIME, predicted_at=EVENT_TIME)
    line = render_prediction(p, EVENT_TIME)
    assert line.isprintable()
    assert "\\x1b[2J" in line and "\\n" in line and "\\u202e" in line


def test_a_dead_letter_reason_with_control_characters_is_escaped():
    """A reason or topic carrying terminal controls prints escaped, on one line."""
    headers = dead_letter_headers(InvalidEvent("invalid_field", f"bad value {HOSTILE}"), "input_topic", 0, 1)
    line = render_dead_letter(make_record(b"x", headers=headers))
    assert line.isprintable()
    assert "\\x07" in line


def test_the_summary_ends_with_latency_percentiles_in_milliseconds():
    """With latencies recorded, the summary adds p50, p95, p99 and max after the event, in ms."""
    summary = ReaderSummary(records=4, probabilities=[0.5] * 4, latencies_ms=[12.0, 20.0, 31.0, 400.0], seconds=2.0)
    assert summary.render("output_topic").endswith("; latency after the event p50 20 ms, p95 400 ms, p99 400 ms, max 400 ms")
