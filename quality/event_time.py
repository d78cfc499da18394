"""Event times as whole microseconds since the epoch.

Whole numbers compare exactly: a purchase at exactly event time + LABEL_WINDOW_S must fall inside the
window, and seconds held as floats would round one side of that comparison or the other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SECOND_US = 1_000_000


def micros(moment: datetime) -> int:
    """Microseconds since the epoch; a timestamp without an offset is taken as UTC, as events are."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MICROSECOND


def from_micros(at_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=at_us)
