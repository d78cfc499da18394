"""Counters the service logs as one summary line per interval, and the dead-letter digest.

One WARNING per record would flood the log when a producer goes bad (1,886 bad records once
made 525 KB of log), so dead letters are summed up per kind per interval, with a few sample
offsets to look at; DEBUG still shows each one.

The same object is what /metrics reads at scrape time (service/observe/metrics.py), so the loop keeps
one set of books: counters, stage and latency histograms, lag, and when the loop last acted.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from aiokafka.structs import TopicPartition

from service.observe.histogram import LATENCY_BUCKETS_S, STAGE_BUCKETS_S, Histogram

log = logging.getLogger(__name__)

SAMPLE_OFFSETS_PER_KIND = 3
# The steps of one batch whose durations are histograms; a fixed set, so the label stays bounded.
STAGES = ("parse", "features", "predict", "publish", "commit")


@dataclass(frozen=True)
class CacheStats:
    """What a feature cache reports about itself: totals since start and entries held now."""

    hits: int
    misses: int
    size: int


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
    fences: int = 0  # exactly_once: partitions whose producer another instance fenced
    position_resets: int = 0  # partitions whose committed position was gone (retention, truncation, recreation)
    committed_partitions: set[TopicPartition] = field(default_factory=set)  # this process committed an offset for them
    retries_by_dependency: Counter[str] = field(default_factory=Counter)
    _interval_started_mono_s: float = field(default_factory=time.monotonic)
    _interval_events: int = 0
    _interval_batch_ms: list[float] = field(default_factory=list)
    _interval_dead_letters: Counter[str] = field(default_factory=Counter)
    _interval_samples: dict[str, list[str]] = field(default_factory=dict)
    # Read by /metrics and /healthz. Monotonic times; `last_active_mono_s` is the last poll, batch,
    # abandoned batch or retry, i.e. the last sign that the loop is not wedged.
    dead_letters_by_kind: Counter[str] = field(default_factory=Counter)
    stage_seconds: dict[str, Histogram] = field(default_factory=lambda: {stage: Histogram(STAGE_BUCKETS_S) for stage in STAGES})
    batch_seconds: Histogram = field(default_factory=lambda: Histogram(STAGE_BUCKETS_S))
    latency_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    partition_lag: dict[tuple[str, int], int] = field(default_factory=dict)
    cache: CacheStats | None = None  # None while the service has no feature cache
    polls: int = 0
    last_active_mono_s: float = field(default_factory=time.monotonic)
    batch_started_mono_s: float | None = None

    def record_batch(self, events: int, predictions: int, dead_letters: int, duration_s: float) -> None:
        self.batches += 1
        self.events += events
        self.predictions += predictions
        self.dead_letters += dead_letters
        self._interval_events += events
        self._interval_batch_ms.append(duration_s * 1000)
        self.batch_seconds.observe(duration_s)
        self.batch_started_mono_s = None
        self.last_active_mono_s = time.monotonic()

    def record_dead_letter(self, kind: str, topic: str, partition: int, offset: int) -> None:
        self.dead_letters_by_kind[kind] += 1
        self._interval_dead_letters[kind] += 1
        samples = self._interval_samples.setdefault(kind, [])
        if len(samples) < SAMPLE_OFFSETS_PER_KIND:
            samples.append(f"{topic}[{partition}]@{offset}")

    def record_retry(self, dependency: str = "") -> None:
        self.retries += 1
        self.retries_by_dependency[dependency] += 1
        self.last_active_mono_s = time.monotonic()

    def record_abandoned(self) -> None:
        self.abandoned_batches += 1
        self.batch_started_mono_s = None
        self.last_active_mono_s = time.monotonic()

    def record_skipped(self, offsets: int) -> None:
        self.skipped_offsets += offsets

    def record_position_reset(self) -> None:
        self.position_resets += 1

    def note_committed(self, partitions: Iterable[TopicPartition]) -> None:
        self.committed_partitions.update(partitions)

    def record_undeliverable(self) -> None:
        self.undeliverable += 1

    def record_fence(self) -> None:
        self.fences += 1

    # For the hot loop: each is called once per poll or per batch, never per event.

    def mark_polled(self) -> None:
        """A poll returned (with records or not): the loop is alive even when no events come."""
        self.polls += 1
        self.last_active_mono_s = time.monotonic()

    def mark_batch_started(self) -> None:
        """A batch is in hand from now until record_batch or record_abandoned."""
        self.batch_started_mono_s = time.monotonic()

    def set_batch_in_hand(self, since_mono_s: float | None) -> None:
        """With several batches in flight: when (time.monotonic()) the oldest was taken; None for none."""
        self.batch_started_mono_s = since_mono_s

    def observe_stage(self, stage: str, seconds: float) -> None:
        """How long one batch spent in `stage`, one of STAGES."""
        histogram = self.stage_seconds.get(stage)
        if histogram is None:
            raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
        histogram.observe(seconds)

    def observe_latency(self, seconds: float) -> None:
        self.latency_seconds.observe(seconds)

    def observe_latencies(self, seconds: Iterable[float] | np.ndarray) -> None:
        """Input record to acknowledged prediction, for a whole batch at once."""
        if isinstance(seconds, np.ndarray):
            self.latency_seconds.observe_array(seconds)
        else:
            self.latency_seconds.observe_many(seconds)

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Records not yet handed to the loop, per (topic, partition) assigned to this instance."""
        self.partition_lag = dict(lag)

    def set_cache(self, hits: int, misses: int, size: int) -> None:
        """The feature cache's totals since start and its current entries."""
        self.cache = CacheStats(hits, misses, size)

    def batch_age_s(self, now: float | None = None) -> float:
        """Seconds the batch in hand has been in hand; 0 with none."""
        if self.batch_started_mono_s is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.batch_started_mono_s)

    def log_summary_if_due(self, interval_s: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        elapsed = now - self._interval_started_mono_s
        if elapsed < interval_s:
            return False
        self._log_throughput(elapsed)
        self._log_dead_letters(elapsed)
        self._interval_started_mono_s = now
        self._interval_events = 0
        self._interval_batch_ms = []
        self._interval_dead_letters = Counter()
        self._interval_samples = {}
        return True

    def _log_throughput(self, elapsed: float) -> None:
        if not self._interval_batch_ms:
            return
        timings = self._interval_batch_ms
        # The same figures as fields, so JSON logs can be graphed without parsing the text.
        numbers = {
            "interval_s": round(elapsed, 3), "events_per_s": round(self._interval_events / elapsed, 1), "batches": len(timings),
            "batch_median_ms": round(statistics.median(timings), 3), "batch_max_ms": round(max(timings), 3),
            "events_total": self.events, "predictions_total": self.predictions, "dead_letters_total": self.dead_letters,
            "retries_total": self.retries, "abandoned_batches_total": self.abandoned_batches,
            "skipped_offsets_total": self.skipped_offsets, "undeliverable_total": self.undeliverable,
            "position_resets_total": self.position_resets,
        }
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
            (self.fences, "fenced partitions"),
            (self.position_resets, "position resets"),
        ):
            if count:
                text += f", {count} {what}"
        if self.cache is not None:
            looked_up = self.cache.hits + self.cache.misses
            ratio = self.cache.hits / looked_up if looked_up else 0.0
            text += f"; feature cache: {self.cache.size} users, hit ratio {ratio:.3f}"
            numbers.update(cache_users=self.cache.size, cache_hit_ratio=round(ratio, 4))
        log.info("%s", text, extra=numbers)

    def _log_dead_letters(self, elapsed: float) -> None:
        if not self._interval_dead_letters:
            return
        kinds = "; ".join(
            f"{kind} {count} (e.g. {', '.join(self._interval_samples[kind])})"
            for kind, count in self._interval_dead_letters.most_common()
        )
        total = sum(self._interval_dead_letters.values())
        log.warning(
            "dead-lettered %d records in the last %.0f s: %s", total, elapsed, kinds,
            extra={"dead_letters": total, "dead_letters_by_kind": dict(self._interval_dead_letters)},
        )


async def log_stats_periodically(stats: ServiceStats, interval_s: float, also: Callable[[], None] = lambda: None) -> None:
    """Log the summary every interval, whether or not events flow (an outage shows as retries)."""
    while True:
        await asyncio.sleep(interval_s)
        also()
        stats.log_summary_if_due(interval_s * 0.99)
