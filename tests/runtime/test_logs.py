import io
import json
import logging

import pytest

from config import Settings
from runtime.logs import configure_logging


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
