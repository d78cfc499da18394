import io
import json
import logging

import pytest

from config import Settings
from runtime.logs import CollapseRepeats, configure_logging


@pytest.fixture
def capture():
    stream = io.StringIO()
    previous = logging.getLogger().handlers[:], logging.getLogger().level
    yield stream
    logging.getLogger().handlers[:], level = previous
    logging.getLogger().setLevel(level)


def test_json_lines_carry_the_record_position(capture):
    """With LOG_FORMAT=json each line is one JSON object with topic, partition and offset as keys."""
    configure_logging(Settings(log_format="json"), stream=capture)
    logging.getLogger("service.loop").warning("dead-lettering t[1]@7", extra={"topic": "t", "partition": 1, "offset": 7})
    entry = json.loads(capture.getvalue())
    assert entry["level"] == "warning" and entry["message"] == "dead-lettering t[1]@7"
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("t", 1, 7)


def test_auto_format_is_json_when_not_a_terminal(capture):
    """LOG_FORMAT=auto writes JSON to a pipe or file, for log shippers."""
    configure_logging(Settings(log_format="auto"), stream=capture)
    logging.getLogger("x").info("hello")
    assert json.loads(capture.getvalue())["message"] == "hello"


def test_retried_leader_changes_are_hidden_unless_debugging(capture):
    """aiokafka's own leader-change noise is dropped at INFO; other aiokafka errors still show."""
    configure_logging(Settings(log_format="console"), stream=capture)
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError: tp")
    logging.getLogger("aiokafka.conn").error("Unable to connect to node 1")
    output = capture.getvalue()
    assert "NotLeaderForPartitionError" not in output
    assert "Unable to connect" in output


def test_repeated_client_errors_collapse_to_one_line_with_a_count():
    """A hundred identical aiokafka errors in one window show once; the next window's first says how many were held back."""
    now = [0.0]
    collapse = CollapseRepeats(window_s=10, clock=lambda: now[0])
    records = [logging.makeLogRecord({"name": "aiokafka.conn", "levelno": logging.ERROR, "msg": "Unable connect to %s", "args": ("n1",)}) for _ in range(101)]
    passed = [collapse.filter(r) for r in records[:100]]
    assert passed.count(True) == 1
    now[0] = 11.0
    assert collapse.filter(records[100])
    assert records[100].getMessage() == "Unable connect to n1 (and 99 more like it in the last 11 s)"


def test_flush_reports_the_repeats_of_an_ended_window(capture):
    """Once a window has ended, the count of held-back repeats is logged even if no repeat follows; not before."""
    now = [0.0]
    collapse = CollapseRepeats(window_s=10, clock=lambda: now[0])
    configure_logging(Settings(log_format="console"), stream=capture)
    logging.getLogger().handlers[0].filters[-1:] = [collapse]
    for _ in range(5):
        logging.getLogger("aiokafka.conn").error("Unable connect to node %s", 1)
    collapse.flush()
    assert len(capture.getvalue().splitlines()) == 1, "the window is still open"
    now[0] = 12.0
    collapse.flush()
    lines = capture.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("Unable connect to node 1 (repeated 4 times in the last 12 s)")


def test_our_own_lines_are_never_collapsed(capture):
    """Only client libraries' repeats are collapsed; the service's lines all show."""
    configure_logging(Settings(log_format="console"), stream=capture)
    for _ in range(3):
        logging.getLogger("service.retry").warning("MySQL unavailable")
    assert capture.getvalue().count("MySQL unavailable") == 3


def test_console_lines_escape_control_characters(capture):
    """A message quoting hostile input cannot move the cursor or forge a line."""
    configure_logging(Settings(log_format="console"), stream=capture)
    logging.getLogger("x").warning("reason: %s", "bad\x1b[2J\nforged")
    (line,) = capture.getvalue().splitlines()
    assert "\\x1b[2J\\nforged" in line
