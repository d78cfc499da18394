"""The prediction loop over in-memory stand-ins, in either delivery mode, for the service's unit tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition

from config import Settings
from events.schema import decode_prediction
from service.delivery.at_least_once import AtLeastOnce
from service.delivery.exactly_once import ExactlyOnce
from service.models.slots import ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import PredictionLoop
from tests.factories import small_feature_table
from tests.fakes.kafka import InMemorySink, InMemorySource, InMemoryTransactionLog
from tests.fakes.mysql import InMemoryFeatureStore

ALO_SETTINGS = Settings(retry_backoff_initial_ms=1, retry_backoff_max_ms=2)
EOS_SETTINGS = Settings(retry_backoff_initial_ms=1, retry_backoff_max_ms=2, kafka_session_timeout_ms=3000,
                        kafka_heartbeat_interval_ms=1000, kafka_rebalance_timeout_ms=10000, kafka_max_poll_interval_ms=10000)
INPUT = [TopicPartition("input_topic", 0), TopicPartition("input_topic", 1)]
# Empty polls before the stand-in source stops the loop: longer than a transaction stays open
# (COMMIT_INTERVAL_MS), so failures found at its commit are redone while the loop still runs.
IDLE_POLLS = 500


def make_loop(batches, model, *, store=None, sink=None):
    """An at_least_once loop over `batches`; returns it with its stand-ins."""
    stop = asyncio.Event()
    source = InMemorySource(batches, stop)
    sink = sink or InMemorySink()
    store = store or InMemoryFeatureStore(small_feature_table(200))
    return alo_loop(source, sink, store, model, stop), source, sink, store, stop


def alo_loop(source, sink, store, model, stop):
    stats = ServiceStats()
    return PredictionLoop(ALO_SETTINGS, AtLeastOnce(ALO_SETTINGS, source, sink, stats, stop), store, ServingModels.of(model), stop, stats)


async def run_exactly_once(batches, model, **first_sink):
    """Run the loop over `batches` with both input partitions assigned; returns the log and the loop."""
    stop = asyncio.Event()
    source = InMemorySource(batches, stop, idle_polls=IDLE_POLLS)
    consumer_commits: list[dict[Any, Any]] = []

    async def commit(offsets):
        consumer_commits.append(offsets)

    source.commit = commit  # type: ignore[method-assign]  # must stay unused
    log = InMemoryTransactionLog(source, **first_sink)
    stats = ServiceStats()
    guarantee = ExactlyOnce(EOS_SETTINGS, source, log.producer, stats, stop)
    loop = PredictionLoop(EOS_SETTINGS, guarantee, InMemoryFeatureStore(small_feature_table(200)), ServingModels.of(model), stop, stats)
    await guarantee.on_assigned(INPUT)
    await asyncio.wait_for(loop.run(), 10)
    await loop.close()
    assert consumer_commits == [], "offsets go with the transactions, never through the consumer"
    return log, loop


def committed_prediction_ids(log):
    """The event ids of the predictions read_committed readers see, in the order committed."""
    return [decode_prediction(value).event_id for _, value, _, _ in log.to(EOS_SETTINGS.output_topic)]
