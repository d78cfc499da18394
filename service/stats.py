"""Counters the service logs as one summary line per interval, and the dead-letter digest.

One WARNING per record would flood the log when a producer goes bad (1,886 bad records once
made 525 KB of log), so dead letters are summed up per kind per interval, with a few sample
offsets to look at; DEBUG still shows each one.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SAMPLE_OFFSETS_PER_KIND = 3


@dataclass
class ServiceStats:
    """Totals since start, and what happened in the interval being summarised."""

    events: int = 0
    predictions: int = 0
    dead_letters: int = 0
    retries: int = 0
    batches: int = 0
    abandoned_batches: int = 0
    skipped_offsets: int = 0  # records lost to retention before they could be read
    undeliverable: int = 0  # records Kafka refused even in their smallest form
    retries_by_dependency: Counter = field(default_factory=Counter)
    _interval_started: float = field(default_factory=time.monotonic)
    _interval_events: int = 0
    _interval_batch_ms: list[float] = field(default_factory=list)
    _interval_dead_letters: Counter = field(default_factory=Counter)
    _interval_samples: dict[str, list[str]] = field(default_factory=dict)

    def record_batch(self, events: int, predictions: int, dead_letters: int, duration_s: float) -> None:
        self.batches += 1
        self.events += events
        self.predictions += predictions
        self.dead_letters += dead_letters
        self._interval_events += events
        self._interval_batch_ms.append(duration_s * 1000)

    def record_dead_letter(self, kind: str, topic: str, partition: int, offset: int) -> None:
        self._interval_dead_letters[kind] += 1
        samples = self._interval_samples.setdefault(kind, [])
        if len(samples) < SAMPLE_OFFSETS_PER_KIND:
            samples.append(f"{topic}[{partition}]@{offset}")

    def record_retry(self, dependency: str = "") -> None:
        self.retries += 1
        self.retries_by_dependency[dependency] += 1

    def record_abandoned(self) -> None:
        self.abandoned_batches += 1

    def record_skipped(self, offsets: int) -> None:
        self.skipped_offsets += offsets

    def record_undeliverable(self) -> None:
        self.undeliverable += 1

    def log_summary_if_due(self, interval_s: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        elapsed = now - self._interval_started
        if elapsed < interval_s:
            return False
        self._log_throughput(elapsed)
        self._log_dead_letters(elapsed)
        self._interval_started = now
        self._interval_events = 0
        self._interval_batch_ms = []
        self._interval_dead_letters = Counter()
        self._interval_samples = {}
        return True

    def _log_throughput(self, elapsed: float) -> None:
        if not self._interval_batch_ms:
            return
        timings = self._interval_batch_ms
        text = (
            f"{self._interval_events / elapsed:.0f} events/s over {elapsed:.0f} s ({len(timings)} batches,"
            f" batch time median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms);"
            f" totals: {self.events} events, {self.predictions} predictions, {self.dead_letters} dead letters,"
            f" {self.retries} retries"
        )
        for count, what in (
            (self.abandoned_batches, "abandoned batches"),
            (self.skipped_offsets, "offsets skipped"),
            (self.undeliverable, "undeliverable records"),
        ):
            if count:
                text += f", {count} {what}"
        log.info("%s", text)

    def _log_dead_letters(self, elapsed: float) -> None:
        if not self._interval_dead_letters:
            return
        kinds = "; ".join(
            f"{kind} {count} (e.g. {', '.join(self._interval_samples[kind])})"
            for kind, count in self._interval_dead_letters.most_common()
        )
        total = sum(self._interval_dead_letters.values())
        log.warning("dead-lettered %d records in the last %.0f s: %s", total, elapsed, kinds, extra={"dead_letters": total})


async def log_stats_periodically(stats: ServiceStats, interval_s: float, also: Callable[[], None] = lambda: None) -> None:
    """Log the summary every interval, whether or not events flow (an outage shows as retries)."""
    while True:
        await asyncio.sleep(interval_s)
        stats.log_summary_if_due(interval_s * 0.99)
        also()
