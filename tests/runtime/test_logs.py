import io
import json
import logging
import sys

import pytest

from config import Settings
from runtime.connection_logs import RETRY_COVER_S, SayConnectionErrorsOnce
from runtime.logs import CollapseRepeats, EscapingFormatter, configure_logging


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
    logging.getLogger("service.pipeline.loop").warning("dead-lettering t[1]@7", extra={"topic": "t", "partition": 1, "offset": 7})
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
    records = [
        logging.makeLogRecord({"name": "aiokafka.conn", "levelno": logging.ERROR, "msg": "Unable connect to %s", "args": ("n1",)})
        for _ in range(101)
    ]
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
    # CollapseRepeats alone: the connection-error filter would hold these back first.
    logging.getLogger().handlers[0].filters[:] = [collapse]
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


HOSTILE = "bad\x1b[2J\nFAKE LOG LINE"


def log_parse_failure(cause: Exception | None = None) -> None:
    """Log an exception whose text quotes an event, as service.pipeline.validate does for an unexpected parse error."""
    try:
        raise ValueError(HOSTILE) from cause
    except ValueError:
        logging.getLogger("service.pipeline.validate").exception("unexpected error parsing %s", "t[0]@7")


def assert_nothing_forged(output: str) -> list[str]:
    lines = output.splitlines()
    assert "\x1b" not in output
    assert not any(line.startswith("FAKE") for line in lines)
    return lines


def test_exception_text_cannot_move_the_cursor_or_forge_a_line(capture):
    """An exception message carrying an escape sequence and a newline shows escaped on its own line of the traceback."""
    configure_logging(Settings(log_format="console"), stream=capture)
    log_parse_failure()
    lines = assert_nothing_forged(capture.getvalue())
    assert lines[0].endswith("service.pipeline.validate: unexpected error parsing t[0]@7")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[2].startswith('  File "') and "in log_parse_failure" in lines[2]
    assert lines[-1] == "ValueError: bad\\x1b[2J\\nFAKE LOG LINE"


def test_causes_and_notes_of_an_exception_are_escaped_too(capture):
    """A hostile message in the exception's cause, and a hostile note, forge nothing either."""
    configure_logging(Settings(log_format="console"), stream=capture)
    cause = KeyError(HOSTILE)
    cause.add_note("note: " + HOSTILE)
    log_parse_failure(cause)
    lines = assert_nothing_forged(capture.getvalue())
    assert "The above exception was the direct cause of the following exception:" in lines
    assert "note: bad\\x1b[2J\\nFAKE LOG LINE" in lines


def test_exception_text_another_formatter_cached_is_escaped_anyway():
    """Raw exception text a plain formatter left on the record is not reused by the console formatter."""
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record = logging.LogRecord("service.pipeline.validate", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert HOSTILE in logging.Formatter().format(record)
    assert_nothing_forged(EscapingFormatter("%(message)s").format(record))


def test_stack_info_keeps_its_lines(capture):
    """stack_info=True still prints one line per frame, not one escaped blob."""
    configure_logging(Settings(log_format="console"), stream=capture)
    logging.getLogger("x").warning("where am I", stack_info=True)
    lines = capture.getvalue().splitlines()
    assert lines[1] == "Stack (most recent call last):"
    assert any(line.startswith('  File "') and "test_stack_info_keeps_its_lines" in line for line in lines)


def test_json_lines_carry_hostile_exception_text_escaped_and_whole(capture):
    """With LOG_FORMAT=json a hostile exception stays on one line, with no raw escape, and decodes to the exact text."""
    configure_logging(Settings(log_format="json"), stream=capture)
    log_parse_failure()
    output = capture.getvalue()
    (line,) = output.splitlines()
    assert "\x1b" not in output
    assert json.loads(line)["exception"].endswith("ValueError: " + HOSTILE)


def clocked_connection_filter(capture):
    """Console logging at INFO whose connection-error filter runs on a clock the test moves."""
    now = [0.0]
    configure_logging(Settings(log_format="console"), stream=capture)
    filters = logging.getLogger().handlers[0].filters
    index = next(i for i, f in enumerate(filters) if isinstance(f, SayConnectionErrorsOnce))
    filters[index] = SayConnectionErrorsOnce(window_s=10, clock=lambda: now[0])
    return now, filters[index]


def our_kafka_retry_line():
    logging.getLogger("service.retry").warning(
        "Kafka unavailable while creating topics (attempt 1): KafkaConnectionError: Unable to bootstrap; next try in 0.2 s",
        extra={"dependency": "Kafka"},
    )


def test_a_connection_error_our_retry_line_reports_is_logged_once_by_us(capture):
    """aiokafka's 'Unable connect' followed by our Kafka retry line shows only ours; later client repeats stay hidden."""
    now, _ = clocked_connection_filter(capture)
    logging.getLogger("aiokafka").error('Unable connect to "%s": %s', "127.0.0.1:1", "[Errno 111] Connect call failed")
    our_kafka_retry_line()
    for second in (5.0, 12.0, 30.0):
        now[0] = second
        logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1 and "Kafka unavailable while creating topics" in lines[0]


def test_a_connection_error_no_step_of_ours_reports_still_shows_once_per_window(capture):
    """With no retry line of ours (an idle consumer polling a dead broker), the client's errors show once per window with a count."""
    now, connection_errors = clocked_connection_filter(capture)
    for tick in range(10):
        now[0] = float(tick)
        logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    assert capture.getvalue() == "", "held while our retry line may still come"
    now[0] = 10.5
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("Unable connect to node with id 1: [Errno 111] (11 client connection errors in the last 10 s)")
    now[0] = 11.0
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    now[0] = 21.5
    connection_errors.flush()
    assert capture.getvalue().splitlines()[-1].endswith("(1 client connection error in the last 10 s)")


def test_our_retry_line_covers_client_errors_only_for_a_while(capture):
    """Client connection errors long after our last Kafka retry line are a new outage, held and shown again."""
    now, connection_errors = clocked_connection_filter(capture)
    our_kafka_retry_line()
    now[0] = RETRY_COVER_S + 1
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    now[0] += 10
    connection_errors.flush()
    assert capture.getvalue().splitlines()[-1].endswith("(1 client connection error in the last 10 s)")


def test_at_debug_every_client_connection_error_shows_at_once(capture):
    """LOG_LEVEL=debug holds nothing back."""
    configure_logging(Settings(log_format="console", log_level="debug"), stream=capture)
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    assert "Unable connect to node with id 1" in capture.getvalue()


def test_other_client_errors_are_not_held(capture):
    """Only connection failures are held back; another aiokafka error shows at once."""
    clocked_connection_filter(capture)
    logging.getLogger("aiokafka.consumer.group_coordinator").error("OffsetCommit failed for group %s due to group error", "g")
    assert "OffsetCommit failed" in capture.getvalue()


def test_the_symptoms_of_one_unreachable_broker_make_one_line_per_window(capture):
    """Failed connects, fetches and sends for want of a connection, from aiokafka's several modules, show as one counted line."""
    now, _ = clocked_connection_filter(capture)
    symptoms = [
        ("aiokafka", "Unable connect to node with id 1: [Errno 111] Connect call failed"),
        (
            "aiokafka.consumer.fetcher",
            "Failed fetch messages from 1: NodeNotReadyError: Attempt to send a request to node which is not ready",
        ),
        ("aiokafka.producer.sender", "Got error produce response: NodeNotReadyError: Attempt to send a request to node which is not ready"),
        ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"),
    ]
    for tick in range(12):
        now[0] = float(tick)
        name, message = symptoms[tick % len(symptoms)]
        logging.getLogger(name).error(message)
    lines = capture.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("(11 client connection errors in the last 10 s)")
