"""Wires the service together: model, MySQL pool, Kafka clients, then runs the loop until stopped.

A stop request is honoured in every state within SHUTDOWN_TIMEOUT_S: start-up steps give way
to it, the batch in hand may finish while time is left for closing the clients, and each close
is bounded by what remains of the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from config import Settings
from errors import ShutdownRequested
from features.user import FeatureStore
from messaging.kafka_security import principal
from messaging.topics import ensure_topics, pipeline_topics
from offline_store.cache import CachedFeatureStore
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, fetch_all
from runtime.logs import flush_collapsed_logs
from runtime.shutdown import ShutdownClock, stop_on_signals
from service.delivery.at_least_once import AtLeastOnce
from service.delivery.clients import new_consumer, new_producer
from service.delivery.exactly_once import ExactlyOnce
from service.delivery.guarantee import Guarantee
from service.failures import as_setup_error, describe_error
from service.models.setup import open_models, start_watching, stop_watching
from service.models.shadow_outputs import ShadowOutputs
from service.observe.endpoints import serve_endpoints
from service.observe.health import MYSQL_PROBE_TIMEOUT_S, HealthState
from service.observe.model_stats import ModelStats
from service.observe.stats import ServiceStats, log_stats_periodically
from service.pipeline.loop import FinishBatchBeforeRevoke, PredictionLoop
from service.retry import Backoff, retry_until_done, unless_stopped

log = logging.getLogger(__name__)

T = TypeVar("T")
# Closing the clients (leaving the group, flushing the producer) gets this share of the
# shutdown deadline, at most CLOSE_RESERVE_MAX_S; the batch in hand gets the rest.
CLOSE_RESERVE_SHARE = 1 / 3
CLOSE_RESERVE_MAX_S = 5.0
# Bound on each close when the service ends without a stop request (an error).
CLOSE_TIMEOUT_S = 10.0
# Ends the last close a little before the watchdog would.
CLOSE_MARGIN_S = 0.2


async def run_service(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (by default, until SIGINT or SIGTERM)."""
    if stop is None:
        stop = asyncio.Event()
        clock = stop_on_signals(stop, settings.shutdown_timeout_s)
    else:
        clock = ShutdownClock(settings.shutdown_timeout_s)
        asyncio.get_running_loop().create_task(_start_clock_on(stop, clock))
    backoff = Backoff.from_settings(settings)

    def step(action: Callable[[], Awaitable[T]], dependency: str, what: str) -> Awaitable[T]:
        return retry_until_done(
            lambda: unless_stopped(action(), stop, what), dependency=dependency, action=what, stop=stop, backoff=backoff
        )

    stats = ServiceStats()
    model_stats = ModelStats()
    health = HealthState(stats, settings.kafka_max_poll_interval_ms / 1000, models=model_stats)
    # First, so that /healthz answers during start-up and a taken port fails at once.
    endpoint_scope = contextlib.AsyncExitStack()
    endpoints = await endpoint_scope.enter_async_context(serve_endpoints(settings, stats, health))
    try:
        # In worker threads, so that a stop request during the load is heard at once.
        models, watchers = await open_models(settings, model_stats, step)
        health.model_version = models.serving.version
        async with contextlib.AsyncExitStack() as resources:
            await step(
                lambda: ensure_topics(settings, pipeline_topics(settings)),
                "Kafka",
                f"creating topics at {settings.kafka_bootstrap_servers}",
            )
            pool = await step(lambda: create_pool(settings), "MySQL", f"connecting to {settings.mysql_host}:{settings.mysql_port}")
            resources.push_async_callback(_close, "the MySQL pool", lambda: close_pool(pool), clock, 1.0)
            mysql_store = MySQLFeatureStore(pool, settings.mysql_query_timeout_ms)
            await step(mysql_store.check_schema, "MySQL", "checking the offline store")
            health.mysql_reachable = True
            health.mysql_probe = lambda: fetch_all(pool, "SELECT 1", (), MYSQL_PROBE_TIMEOUT_S)
            feature_store: FeatureStore = mysql_store
            cache = _cache(mysql_store, settings)
            if cache is not None:
                await step(cache.start, "MySQL", "loading features into the cache")
                resources.push_async_callback(cache.close)
                log.info("feature cache: %s, %d users", cache.mode, cache.size)
                feature_store = cache
            consumer = new_consumer(settings)
            guarantee: Guarantee
            if settings.processing_guarantee == "exactly_once":
                guarantee = ExactlyOnce(settings, consumer, lambda txn_id: new_producer(settings, txn_id), stats, stop)
            else:
                producer = new_producer(settings)
                resources.push_async_callback(_close, "the Kafka producer", producer.stop, clock, 0.7)
                await step(producer.start, "Kafka", "starting the producer")
                guarantee = AtLeastOnce(settings, consumer, producer, stats, stop)
            shadow_outputs = await _shadow_outputs(settings, model_stats, resources, clock, step)
            # Leaving the group first hands the partitions over at once instead of after a timeout.
            resources.push_async_callback(_close, "the Kafka consumer", consumer.stop, clock, 0.4)
            prediction_loop = PredictionLoop(settings, guarantee, feature_store, models, stop, stats, model_stats, shadow_outputs)
            listener = health.track_group(FinishBatchBeforeRevoke(prediction_loop, settings.revoke_wait_s))
            consumer.subscribe([settings.input_topic], listener=listener)
            await step(consumer.start, "Kafka", "joining the consumer group")
            health.group_joined = True  # start() returns once the first assignment has arrived
            if endpoints is not None:
                endpoints.watch_lag(consumer)
            log.info(
                "consuming %s as group %s; predictions to %s, dead letters to %s; %s; Kafka over %s as %s",
                settings.input_topic, settings.kafka_group_id, settings.output_topic, settings.dlq_topic,
                settings.processing_guarantee.replace("_", " "), settings.kafka_security_protocol, principal(settings),
            )
            ticker = asyncio.create_task(log_stats_periodically(stats, settings.stats_interval_s, _before_summary(stats, cache)))
            watching = start_watching(watchers)
            # Everything alive now (libraries, the model, the cached features) lives as long as the
            # process: kept out of the collector, a full collection stops the loop for a few ms
            # instead of tens of them.
            gc.freeze()
            health.mark_loop_started()
            try:
                await _run_until_stopped(prediction_loop, stop, clock)
            finally:
                ticker.cancel()
                stop_watching(watching)
            log.info(
                "stopped cleanly after %d events: %d predictions, %d dead letters", stats.events, stats.predictions, stats.dead_letters
            )
    except ShutdownRequested as exc:
        log.warning("stopped while still %s; nothing in hand was committed, it will be processed on the next start", exc)
    except Exception as exc:
        # A refused grant or certificate surfaces from aiokafka or aiomysql as their own error;
        # stopped with one message that names what to fix, as any other set-up error.
        refusal = as_setup_error(exc, settings)
        if refusal is None or refusal is exc:
            raise
        raise refusal from exc
    finally:
        await endpoint_scope.aclose()


async def _run_until_stopped(prediction_loop: PredictionLoop, stop: asyncio.Event, clock: ShutdownClock) -> None:
    """Run the loop; once stopped, let it finish and commit the work in hand while time is left to close."""
    running = asyncio.create_task(prediction_loop.run())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            reserve_s = min(CLOSE_RESERVE_MAX_S, clock.timeout_s * CLOSE_RESERVE_SHARE)
            grace_s = clock.remaining_s(clock.timeout_s) - reserve_s
            # run() ends by itself once it has settled and committed; a poll waiting on a rejoin,
            # a dependency that stays down, or a broker that never acknowledges may keep it.
            await asyncio.wait({running}, timeout=max(0.0, grace_s))
            if not running.done():
                await prediction_loop.abandon("the shutdown deadline is near")
    finally:
        stopped.cancel()
        if not running.done():
            running.cancel()
            await asyncio.wait({running}, timeout=1.0)
        # In exactly_once, aborting what is open and stopping a producer per partition.
        await _close("the producers", prediction_loop.close, clock, 0.5)
    if running.done() and not running.cancelled():
        running.result()


async def _start_clock_on(stop: asyncio.Event, clock: ShutdownClock) -> None:
    await stop.wait()
    clock.start()


async def _close(what: str, close: Callable[[], Awaitable[None]], clock: ShutdownClock, share: float) -> None:
    """Close one client within its `share` of what is left of the deadline, so that a close that
    hangs (leaving the group while the broker is away) leaves time for the ones after it."""
    timeout_s = clock.remaining_s(CLOSE_TIMEOUT_S) * share - CLOSE_MARGIN_S
    try:
        async with asyncio.timeout(max(0.1, timeout_s)):
            await close()
    except TimeoutError:
        log.warning("gave up closing %s after %.1f s", what, timeout_s)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        # aiokafka's consumer re-raises the cancellation of its own fetch task from stop().
        log.warning("closing %s was cut short by the client itself", what)
    except Exception as exc:  # noqa: BLE001 - nothing is in hand any more; a failed close must not change the exit code
        log.warning("closing %s failed: %s", what, describe_error(exc))


async def _shadow_outputs(
    settings: Settings, model_stats: ModelStats, resources: contextlib.AsyncExitStack, clock: ShutdownClock,
    step: Callable[[Callable[[], Awaitable[T]], str, str], Awaitable[T]],
) -> ShadowOutputs | None:
    """A producer of its own for SHADOW_OUTPUT_TOPIC, outside the serving path's transactions."""
    if not settings.shadow_output_topic:
        return None
    producer = new_producer(settings)
    resources.push_async_callback(_close, "the shadow producer", producer.stop, clock, 0.5)
    await step(producer.start, "Kafka", "starting the shadow producer")
    outputs = ShadowOutputs(producer, settings.shadow_output_topic, model_stats)
    resources.push_async_callback(outputs.close)
    return outputs


def _cache(store: MySQLFeatureStore, settings: Settings) -> CachedFeatureStore | None:
    if settings.feature_cache_max_users == 0:
        return None
    return CachedFeatureStore(
        store, settings.feature_cache_max_users, settings.feature_cache_ttl_s, settings.feature_cache_version_check_s,
        changes_poll_s=settings.feature_changes_poll_ms / 1000,
    )


def _before_summary(stats: ServiceStats, cache: CachedFeatureStore | None) -> Callable[[], None]:
    def update() -> None:
        flush_collapsed_logs()
        if cache is not None:
            stats.set_cache(cache.counters.hits, cache.counters.misses, cache.size)

    return update
