from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.observe import metrics
from service.observe.health import HealthState
from service.observe.metrics import build_registry
from service.observe.stats import ServiceStats

# Label names /metrics may use: each takes values from a small set or this instance's partitions.
BOUNDED_LABELS = {"outcome", "kind", "dependency", "stage", "le", "topic", "partition", "check", "version"}


def scrape(stats: ServiceStats, health: HealthState | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of a real text-format scrape, keyed by (sample name, sorted labels)."""
    text = generate_latest(build_registry(stats, health)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def busy_stats() -> ServiceStats:
    stats = ServiceStats()
    for offset, kind in enumerate(["not_json", "not_json", "invalid_field"]):
        stats.record_dead_letter(kind, "in", 0, offset)
    stats.record_batch(events=10, predictions=7, dead_letters=3, duration_s=0.02)
    stats.record_retry("MySQL")
    stats.record_retry("MySQL")
    stats.record_retry("Kafka")
    stats.observe_stage("features", 0.003)
    stats.observe_latencies([0.02, 0.04, 0.2])
    stats.set_lag({("in", 1): 12})
    return stats


def test_counters_follow_the_stats_by_outcome_kind_and_dependency():
    """events_total by outcome, dead_letters_total by kind and retries_total by dependency equal what the stats recorded."""
    samples = scrape(busy_stats())
    assert samples[(metrics.EVENTS_TOTAL, (("outcome", "predicted"),))] == 7
    assert samples[(metrics.EVENTS_TOTAL, (("outcome", "dead_lettered"),))] == 3
    assert samples[(metrics.DEAD_LETTERS_TOTAL, (("kind", "not_json"),))] == 2
    assert samples[(metrics.DEAD_LETTERS_TOTAL, (("kind", "invalid_field"),))] == 1
    assert samples[(metrics.RETRIES_TOTAL, (("dependency", "MySQL"),))] == 2
    assert samples[(metrics.RETRIES_TOTAL, (("dependency", "Kafka"),))] == 1
    assert samples[(metrics.BATCHES_TOTAL, ())] == 1


def test_histograms_expose_cumulative_buckets_count_and_sum():
    """The latency histogram's le buckets are cumulative and its count and sum match the observations."""
    samples = scrape(busy_stats())
    bucket = f"{metrics.LATENCY_SECONDS}_bucket"
    assert samples[(bucket, (("le", "0.025"),))] == 1
    assert samples[(bucket, (("le", "0.05"),))] == 2
    assert samples[(bucket, (("le", "+Inf"),))] == 3
    assert samples[(f"{metrics.LATENCY_SECONDS}_count", ())] == 3
    assert abs(samples[(f"{metrics.LATENCY_SECONDS}_sum", ())] - 0.26) < 1e-9
    assert samples[(f"{metrics.STAGE_SECONDS}_count", (("stage", "features"),))] == 1
    assert samples[(f"{metrics.STAGE_SECONDS}_count", (("stage", "commit"),))] == 0
    assert samples[(f"{metrics.BATCH_SECONDS}_count", ())] == 1


def test_lag_is_a_gauge_per_topic_and_partition():
    """set_lag's numbers come out as one gauge sample per owned partition."""
    samples = scrape(busy_stats())
    assert samples[(metrics.PARTITION_LAG, (("partition", "1"), ("topic", "in")))] == 12


def test_cache_series_appear_only_once_a_cache_reports():
    """Without a cache there are no cache series; after set_cache the hits, misses and size are exported."""
    stats = busy_stats()
    assert not any(name.startswith(f"{metrics.PREFIX}_feature_cache") for name, _ in scrape(stats))
    stats.set_cache(hits=90, misses=10, size=40)
    samples = scrape(stats)
    assert samples[(metrics.CACHE_HITS_TOTAL, ())] == 90
    assert samples[(metrics.CACHE_MISSES_TOTAL, ())] == 10
    assert samples[(metrics.CACHE_ENTRIES, ())] == 40


def test_model_version_and_readiness_come_from_the_health_state():
    """The model is an info metric labelled with its version, and each readiness check a 0/1 gauge."""
    stats = busy_stats()
    health = HealthState(stats, stall_after_s=300, model_version="20261126T174256Z-6b0000d504", group_joined=True)
    samples = scrape(stats, health)
    assert samples[(f"{metrics.MODEL}_info", (("version", "20261126T174256Z-6b0000d504"),))] == 1
    assert samples[(metrics.READY, (("check", "group_joined"),))] == 1
    assert samples[(metrics.READY, (("check", "mysql_reachable"),))] == 0


def test_every_label_is_from_a_bounded_set_and_every_name_has_a_unit_or_total_suffix():
    """No label could carry a user or event id, and counters end in _total, durations in _seconds."""
    stats = busy_stats()
    stats.set_cache(1, 1, 1)
    health = HealthState(stats, stall_after_s=300, model_version="v1")
    health.mark_loop_started()
    text = generate_latest(build_registry(stats, health)).decode()
    ours = [f for f in text_string_to_metric_families(text) if f.name.startswith(metrics.PREFIX)]
    assert len(ours) >= 15
    for family in ours:
        for sample in family.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, sample
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram" or "age" in family.name or "since" in family.name:
            assert family.name.endswith("_seconds"), family.name
