"""One input partition's transactions: a fenced former owner publishes nothing, a fenced partition
waits for the group, and a transaction stays open for the commit interval."""

import asyncio
import logging

from config import Settings
from service.delivery.exactly_once import ExactlyOnce
from service.delivery.transactional_producer import transactional_id
from service.models.slots import ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import FinishBatchBeforeRevoke, PredictionLoop
from tests.factories import event_bytes, small_feature_table
from tests.fakes.kafka import InMemorySource, InMemoryTransactionLog, make_record
from tests.fakes.mysql import InMemoryFeatureStore
from tests.service.loops import EOS_SETTINGS as SETTINGS
from tests.service.loops import INPUT
from tests.service.loops import committed_prediction_ids as predicted_ids


async def test_a_fenced_former_owner_publishes_nothing(model, caplog):
    """Once another producer started with the partition's transactional id, the former owner's
    transactions fail: none of its outputs or offsets become visible."""
    stop = asyncio.Event()
    records = [make_record(event_bytes(event_id=f"z{n}"), offset=n) for n in range(3)]
    source = InMemorySource([[], records], stop)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(SETTINGS, source, log.producer, stats, stop)
    loop = PredictionLoop(SETTINGS, guarantee, InMemoryFeatureStore(small_feature_table(200)), ServingModels.of(model), stop, stats)
    await guarantee.on_assigned([INPUT[0]])
    await asyncio.sleep(0.01)  # the former owner is ready
    await log.producer(transactional_id(SETTINGS, INPUT[0])).start()  # the new owner takes over
    with caplog.at_level(logging.WARNING):
        running = asyncio.create_task(loop.run())
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(running, 5)
    await loop.close()
    assert log.visible == [] and log.source.commits == []
    assert any("taken over by another instance" in r.getMessage() for r in caplog.records)


async def test_a_fenced_partition_waits_paused_with_no_new_producer_until_the_group_moves_it(model, caplog):
    """A fenced former owner whose revoke is held back past the session timeout never starts
    another producer for the partition (which would fence the new owner back); once the group
    moves the partition, it is processed from its last commit, each event once."""
    settings = Settings(retry_backoff_initial_ms=1, retry_backoff_max_ms=2, kafka_session_timeout_ms=1000,
                        kafka_heartbeat_interval_ms=300, kafka_rebalance_timeout_ms=10000, kafka_max_poll_interval_ms=10000)
    stop = asyncio.Event()
    records = [make_record(event_bytes(event_id=f"f{n}"), offset=n) for n in range(3)]
    source = InMemorySource([[], records], stop, idle_polls=10**9)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(settings, source, log.producer, stats, stop)
    loop = PredictionLoop(settings, guarantee, InMemoryFeatureStore(small_feature_table(200)), ServingModels.of(model), stop, stats)
    group = FinishBatchBeforeRevoke(loop, max_wait_s=5)
    await group.on_partitions_assigned([INPUT[0]])
    await asyncio.sleep(0.01)  # the former owner is ready
    owner = log.producer(transactional_id(settings, INPUT[0]))
    await owner.start()  # another instance took the partition over; the group has not told this one yet
    with caplog.at_level(logging.WARNING):
        running = asyncio.create_task(loop.run())
        await asyncio.sleep(2 * settings.kafka_session_timeout_ms / 1000)
        assert len(log.producers) == 2, "no producer started after the fence"
        assert log.epochs[owner.transactional_id] == owner.epoch, "the owner was not fenced back"
        assert INPUT[0] in source.paused and log.visible == []
        fenced = [r for r in caplog.records if "taken over by another instance" in r.getMessage()]
        assert [r.levelno for r in fenced] == [logging.WARNING] and stats.fences == 1

        await group.on_partitions_revoked([INPUT[0]])
        await group.on_partitions_assigned([INPUT[0]])  # the group moves it, here back to this instance
        async with asyncio.timeout(5):
            while len(predicted_ids(log)) < 3:
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, 5)
    await loop.close()
    assert sorted(predicted_ids(log)) == ["f0", "f1", "f2"] and stats.fences == 1


async def test_a_transaction_stays_open_for_the_commit_interval_unless_a_drain_waits_for_it(model):
    """Outputs reach Kafka at once but commit only after COMMIT_INTERVAL_MS; a drain (a rebalance, a
    shutdown) commits the open transaction without waiting that long."""
    settings = Settings(commit_interval_ms=60_000, retry_backoff_initial_ms=1, retry_backoff_max_ms=2)
    stop = asyncio.Event()
    source = InMemorySource([[make_record(event_bytes(event_id="slow"), offset=0)]], stop, idle_polls=10**9)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(settings, source, log.producer, stats, stop)
    loop = PredictionLoop(settings, guarantee, InMemoryFeatureStore(small_feature_table(200)), ServingModels.of(model), stop, stats)
    await guarantee.on_assigned([INPUT[0]])
    running = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)
    assert [p for p in log.producers if p.sent], "the prediction went out at once"
    assert log.visible == [] and source.commits == [], "not committed before the interval"
    assert await asyncio.wait_for(loop.drain(timeout_s=5), 5)
    assert predicted_ids(log) == ["slow"] and source.commits == [{INPUT[0]: 1}]
    stop.set()
    await asyncio.wait_for(running, 5)
    await loop.close()
