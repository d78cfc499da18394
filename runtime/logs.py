"""Logging set-up for the entry points. Library modules only call `logging.getLogger(__name__)`."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from config import Settings
from runtime.connection_logs import SayConnectionErrorsOnce
from runtime.text import printable, printable_lines, printable_traceback

# Extra record fields worth keeping in a JSON line, when a call site passes them in `extra=`.
CONTEXT_FIELDS = (
    "event_id", "topic", "partition", "offset", "error_kind", "batch_size",
    "dependency", "attempt", "retry_in_s", "dead_letters", "skipped_offsets", "client_errors",
    # The service's summary lines (service/observe/stats.py), as numbers a log shipper can graph.
    "interval_s", "events_per_s", "batches", "batch_median_ms", "batch_max_ms",
    "events_total", "predictions_total", "dead_letters_total", "retries_total",
    "abandoned_batches_total", "skipped_offsets_total", "undeliverable_total", "position_resets_total", "dead_letters_by_kind",
    "cache_users", "cache_hit_ratio",
)
# What logging passes to Formatter.formatException.
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
# aiokafka repeats the same complaint many times a second while a broker is away.
COLLAPSE_WINDOW_S = 10.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; context fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class HideRetriedLeaderChanges(logging.Filter):
    """aiokafka logs partition-leader changes at WARNING or ERROR and then retries them itself.
    They are routine right after a topic is created or a broker restarts, so they are shown only
    at DEBUG; a real outage still shows in our own retry warnings."""

    RETRIED = ("NotLeaderForPartitionError", "LeaderNotAvailableError", "not found in cluster metadata")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or logging.getLogger().level <= logging.DEBUG:
            return True
        message = record.getMessage()
        return not any(fragment in message for fragment in self.RETRIED)


class EscapingFormatter(logging.Formatter):
    """Readable lines for a terminal, with control characters escaped in messages, exception
    text and stack info."""

    def format(self, record: logging.LogRecord) -> str:
        # The base class reuses exception text cached on the record, which another handler's
        # formatter may have left unescaped.
        if record.exc_info:
            record.exc_text = None
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:
        exc_type, exc_value, tb = ei
        if exc_type is None or exc_value is None:
            return super().formatException(ei)
        return printable_traceback(exc_type, exc_value, tb)

    def formatStack(self, stack_info: str) -> str:
        return printable_lines(stack_info)


@dataclass
class _Repeats:
    window_started: float
    suppressed: int = 0
    last_message: str = ""


class CollapseRepeats(logging.Filter):
    """Lets the first of a client library's repeated warnings through per window, and counts the rest.

    During a broker outage aiokafka logs about 75 ERROR lines a second, all alike. The next one
    after the window says how many were held back, and so does `flush` (called once per stats
    interval), so the count is never lost. Repeats are alike when their logger, level and
    message template are.
    """

    def __init__(self, window_s: float = COLLAPSE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Repeats] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        repeats = self._seen.get(key)
        if repeats is None or now - repeats.window_started >= self._window_s:
            self._seen[key] = _Repeats(now)
            if repeats is not None and repeats.suppressed:
                record.msg = f"{record.msg} (and {repeats.suppressed} more like it in the last {now - repeats.window_started:.0f} s)"
            return True
        repeats.suppressed += 1
        repeats.last_message = record.getMessage()
        return False

    def flush(self) -> None:
        """Log the count held back in every window that has ended; called once per stats interval,
        so a count is reported even when no later repeat comes along to carry it."""
        now = self._clock()
        for key, repeats in list(self._seen.items()):
            if now - repeats.window_started < self._window_s:
                continue
            del self._seen[key]
            if repeats.suppressed:
                name, level, _template = key
                logging.getLogger(name).log(
                    level,
                    "%s (repeated %d times in the last %.0f s)",
                    repeats.last_message,
                    repeats.suppressed,
                    now - repeats.window_started,
                )


_collapser: CollapseRepeats | None = None
_connection_errors: SayConnectionErrorsOnce | None = None


def flush_collapsed_logs() -> None:
    if _connection_errors is not None:
        _connection_errors.flush()
    if _collapser is not None:
        _collapser.flush()


def configure_logging(settings: Settings, stream=None) -> None:
    """JSON when LOG_FORMAT=json or, with `auto`, when stderr is not a terminal; readable text otherwise."""
    stream = sys.stderr if stream is None else stream
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(HideRetriedLeaderChanges())
    global _collapser, _connection_errors
    _connection_errors = SayConnectionErrorsOnce()
    handler.addFilter(_connection_errors)
    _collapser = CollapseRepeats()
    handler.addFilter(_collapser)
    # Library warnings become log records, so no raw line breaks the JSON stream.
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiokafka logs every retriable hiccup at WARNING/ERROR; ours already say what happened.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
