"""Every metric the service exports, by name: the one module that defines them.

Names carry the unit (`_seconds`) or `_total` for counters. Labels take values from small
fixed sets (outcome, dead-letter kind, dependency, stage, readiness check) or from the
partitions this instance owns; never a user or event id. Values are read from ServiceStats
and HealthState when Prometheus scrapes, so the loop keeps one set of books and pays nothing
per scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from service.observe.health import HealthState
from service.observe.histogram import Histogram
from service.observe.model_stats import ModelStats
from service.observe.stats import ServiceStats

PREFIX = "prediction_service"

EVENTS_TOTAL = f"{PREFIX}_events_total"  # outcome: predicted | dead_lettered
DEAD_LETTERS_TOTAL = f"{PREFIX}_dead_letters_total"  # kind: empty, not_utf8, not_json, …
RETRIES_TOTAL = f"{PREFIX}_retries_total"  # dependency: Kafka | MySQL
BATCHES_TOTAL = f"{PREFIX}_batches_total"
ABANDONED_BATCHES_TOTAL = f"{PREFIX}_abandoned_batches_total"
SKIPPED_OFFSETS_TOTAL = f"{PREFIX}_skipped_offsets_total"
UNDELIVERABLE_RECORDS_TOTAL = f"{PREFIX}_undeliverable_records_total"
FENCES_TOTAL = f"{PREFIX}_producer_fences_total"
POSITION_RESETS_TOTAL = f"{PREFIX}_position_resets_total"
STAGE_SECONDS = f"{PREFIX}_stage_duration_seconds"  # stage: parse | features | predict | publish | commit
BATCH_SECONDS = f"{PREFIX}_batch_duration_seconds"
LATENCY_SECONDS = f"{PREFIX}_end_to_end_latency_seconds"
PARTITION_LAG = f"{PREFIX}_partition_lag_records"  # topic, partition
BATCH_AGE_SECONDS = f"{PREFIX}_batch_in_hand_age_seconds"
LAST_ACTIVITY_AGE_SECONDS = f"{PREFIX}_last_activity_age_seconds"
READY = f"{PREFIX}_ready"  # check: model_loaded | group_joined | mysql_reachable
MODEL = f"{PREFIX}_model"  # exported as prediction_service_model_info{version}
SHADOW_MODEL = f"{PREFIX}_shadow_model"  # exported as prediction_service_shadow_model_info{version}
MODEL_SWAPS_TOTAL = f"{PREFIX}_model_swaps_total"  # role: serving | shadow
MODEL_REFUSED_TOTAL = f"{PREFIX}_model_refused_total"  # role, reason
MODEL_SOURCE_ERRORS_TOTAL = f"{PREFIX}_model_source_errors_total"  # role
SHADOW_SCORE = f"{PREFIX}_shadow_score"
SHADOW_EVENTS_TOTAL = f"{PREFIX}_shadow_events_total"
SHADOW_ABS_DIFFERENCE_TOTAL = f"{PREFIX}_shadow_abs_difference_total"
SHADOW_DISAGREEMENTS_TOTAL = f"{PREFIX}_shadow_disagreements_total"
SHADOW_FAILED_BATCHES_TOTAL = f"{PREFIX}_shadow_output_failed_batches_total"
CACHE_HITS_TOTAL = f"{PREFIX}_feature_cache_hits_total"
CACHE_MISSES_TOTAL = f"{PREFIX}_feature_cache_misses_total"
CACHE_ENTRIES = f"{PREFIX}_feature_cache_entries"


def _counter(name: str, doc: str, values: dict[str, int], label: str | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label] if label else None)
    for key, value in sorted(values.items()):
        family.add_metric([key] if label else [], value)
    return family


def _histogram(name: str, doc: str, histograms: dict[str, Histogram], label: str | None = None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for key, histogram in histograms.items():
        buckets = [(floatToGoString(bound), count) for bound, count in histogram.cumulative()]  # type: ignore[no-untyped-call]
        family.add_metric([key] if label else [], buckets, histogram.sum)
    return family


class ServiceCollector:
    """Turns ServiceStats and HealthState into metric families at each scrape."""

    def __init__(self, stats: ServiceStats, health: HealthState | None = None) -> None:
        self._stats = stats
        self._health = health

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        outcomes = {"predicted": stats.predictions, "dead_lettered": stats.dead_letters}
        yield _counter(
            EVENTS_TOTAL,
            "Input records finished with (their prediction or dead letter acknowledged by Kafka), by outcome.",
            outcomes,
            "outcome",
        )
        yield _counter(
            DEAD_LETTERS_TOTAL, "Invalid input records sent to the dead-letter topic, by kind.", dict(stats.dead_letters_by_kind), "kind"
        )
        yield _counter(
            RETRIES_TOTAL,
            "Retries of a step that failed because a dependency was unavailable.",
            dict(stats.retries_by_dependency),
            "dependency",
        )
        yield _counter(BATCHES_TOTAL, "Micro-batches whose outputs Kafka acknowledged.", {"": stats.batches})
        yield _counter(
            ABANDONED_BATCHES_TOTAL, "Batches abandoned uncommitted (rebalance or shutdown deadline).", {"": stats.abandoned_batches}
        )
        yield _counter(SKIPPED_OFFSETS_TOTAL, "Input offsets lost to retention before they could be read.", {"": stats.skipped_offsets})
        yield _counter(UNDELIVERABLE_RECORDS_TOTAL, "Dead letters Kafka refused even in their smallest form.", {"": stats.undeliverable})
        yield _counter(
            FENCES_TOTAL, "exactly_once: partitions left paused because another instance fenced their producer.", {"": stats.fences}
        )
        yield _counter(
            POSITION_RESETS_TOTAL, "Partitions moved to their log's start because their position was gone.", {"": stats.position_resets}
        )
        yield _histogram(STAGE_SECONDS, "Time one batch spent in each stage.", stats.stage_seconds, "stage")
        yield _histogram(BATCH_SECONDS, "Time from a batch's start to Kafka acknowledging its outputs.", {"": stats.batch_seconds})
        yield _histogram(
            LATENCY_SECONDS, "From the input record's Kafka timestamp to its prediction acknowledged by Kafka.", {"": stats.latency_seconds}
        )
        lag = GaugeMetricFamily(
            PARTITION_LAG, "High watermark minus position, per partition this instance owns.", labels=["topic", "partition"]
        )
        for (topic, partition), records in sorted(stats.partition_lag.items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag
        yield GaugeMetricFamily(
            BATCH_AGE_SECONDS, "How long the oldest batch in hand has been in hand; 0 with none.", value=stats.batch_age_s()
        )
        yield from self._cache()
        yield from self._health_families()

    def _cache(self) -> Iterator[Metric]:
        cache = self._stats.cache
        if cache is None:
            return  # no cache yet: no series, rather than zeros that look like a cold cache
        yield CounterMetricFamily(CACHE_HITS_TOTAL, "Feature lookups answered by the cache.", value=cache.hits)
        yield CounterMetricFamily(CACHE_MISSES_TOTAL, "Feature lookups that went to MySQL.", value=cache.misses)
        yield GaugeMetricFamily(CACHE_ENTRIES, "Users whose features the cache holds now.", value=cache.size)

    def _health_families(self) -> Iterator[Metric]:
        health = self._health
        if health is None:
            return
        ready = GaugeMetricFamily(READY, "1 when the readiness check passes, as /readyz would answer.", labels=["check"])
        for check, passed in health.checks().items():
            ready.add_metric([check], 1.0 if passed else 0.0)
        yield ready
        idle_s = health.seconds_since_activity()
        if idle_s is not None:
            yield GaugeMetricFamily(LAST_ACTIVITY_AGE_SECONDS, "Since the loop last polled, finished a batch or retried.", value=idle_s)
        models = health.models
        version = models.serving_version if models is not None else health.model_version
        if version is not None:
            yield InfoMetricFamily(MODEL, "The model this instance serves.", value={"version": version})
        if models is not None:
            yield from _model_families(models)


def _model_families(models: ModelStats) -> Iterator[Metric]:
    if models.shadow_version is not None:
        yield InfoMetricFamily(SHADOW_MODEL, "The shadow model scored beside the serving one.", value={"version": models.shadow_version})
    yield _counter(MODEL_SWAPS_TOTAL, "New model versions put in place between batches, by role.", dict(models.swaps), "role")
    refused = CounterMetricFamily(MODEL_REFUSED_TOTAL, "New model versions refused by a check, by role and reason.",
                                  labels=["role", "reason"])
    for (role, reason), count in sorted(models.refused.items()):
        refused.add_metric([role, reason], count)
    yield refused
    yield _counter(MODEL_SOURCE_ERRORS_TOTAL, "Failed reads of a model source (file, registry, MLflow), by role.",
                   dict(models.source_errors), "role")
    if models.shadow_version is None and not models.shadow_events:
        return
    yield _histogram(SHADOW_SCORE, "The shadow model's scores.", {"": models.shadow_scores})
    yield _counter(SHADOW_EVENTS_TOTAL, "Events scored by both the serving and the shadow model.", {"": models.shadow_events})
    yield CounterMetricFamily(
        SHADOW_ABS_DIFFERENCE_TOTAL,
        "Sum of |shadow - serving| over those events; divided by shadow_events_total, the mean absolute difference.",
        value=models.shadow_abs_difference,
    )
    yield _counter(SHADOW_DISAGREEMENTS_TOTAL, "Events the shadow scores on the other side of 0.5 from the serving model.",
                   {"": models.shadow_disagreements})
    yield _counter(SHADOW_FAILED_BATCHES_TOTAL, "Record batches of shadow outputs Kafka did not take (not retried).",
                   {"": models.shadow_failed_batches})


def build_registry(stats: ServiceStats, health: HealthState | None = None) -> CollectorRegistry:
    """A registry of the service's metrics plus the process's CPU, memory and open files."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(stats, health))
    ProcessCollector(registry=registry)
    return registry
