"""Logging set-up for the entry points. Library modules only call `logging.getLogger(__name__)`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from config import Settings

# Extra record fields worth keeping in a JSON line, when a call site passes them in `extra=`.
CONTEXT_FIELDS = ("event_id", "topic", "partition", "offset", "error_kind", "batch_size")


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


def configure_logging(settings: Settings, stream=None) -> None:
    """JSON when LOG_FORMAT=json or, with `auto`, when stderr is not a terminal; readable text otherwise."""
    stream = sys.stderr if stream is None else stream
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(HideRetriedLeaderChanges())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiokafka logs every retriable hiccup at WARNING/ERROR; ours already say what happened.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
