"""Exactly-once delivery against an in-memory transaction log: outputs are visible only once
their transaction commits, with the offsets, and a producer started later with the same
transactional id fences the earlier one. The real broker is in the integration tests and the
fault harness (scripts/chaos.py)."""

import asyncio
import logging
from typing import cast

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import TopicPartition

from config import Settings
from events.dead_letter import read_dead_letter_headers
from events.schema import InvalidEvent, Prediction, decode_prediction
from service.exactly_once import ExactlyOnce, split_by_partition
from service.guarantee import Work
from service.loop import FinishBatchBeforeRevoke, PredictionLoop
from service.partition_transaction import transactional_id
from service.stats import ServiceStats
from tests.factories import event_bytes, small_feature_table, trained_model
from tests.fakes import InMemoryFeatureStore, InMemorySource, InMemoryTransactionLog, make_record

SETTINGS = Settings(retry_backoff_initial_ms=1, retry_backoff_max_ms=2, kafka_session_timeout_ms=3000,
                    kafka_heartbeat_interval_ms=1000, kafka_rebalance_timeout_ms=10000, kafka_max_poll_interval_ms=10000)
INPUT = [TopicPartition("input_topic", 0), TopicPartition("input_topic", 1)]
# Empty polls before the stand-in source stops the loop: longer than a transaction stays open
# (COMMIT_INTERVAL_MS), so failures found at its commit are redone while the loop still runs.
IDLE_POLLS = 500


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200), num_users=200)


async def run_exactly_once(batches, model, **first_sink):
    """Run the loop over `batches` with both input partitions assigned; returns the log and the loop."""
    stop = asyncio.Event()
    source = InMemorySource(batches, stop, idle_polls=IDLE_POLLS)
    consumer_commits: list[dict] = []

    async def commit(offsets):
        consumer_commits.append(offsets)

    source.commit = commit  # type: ignore[method-assign]  # must stay unused
    log = InMemoryTransactionLog(source, **first_sink)
    stats = ServiceStats()
    guarantee = ExactlyOnce(SETTINGS, source, log.producer, stats, stop)
    loop = PredictionLoop(SETTINGS, source, guarantee, InMemoryFeatureStore(small_feature_table(200)), model, stop, stats)
    await guarantee.on_assigned(INPUT)
    await asyncio.wait_for(loop.run(), 10)
    await loop.close()
    assert consumer_commits == [], "offsets go with the transactions, never through the consumer"
    return log, loop


def predicted_ids(log):
    return [decode_prediction(value).event_id for _, value, _, _ in log.to(SETTINGS.output_topic)]


async def test_outputs_and_offsets_commit_together_once_per_event(model):
    """Each valid event has one visible prediction and each invalid one a dead letter; every
    transaction carries its own partition's next offset."""
    records = [make_record(event_bytes(user_id=u, event_id=f"e{u}"), partition=u % 2, offset=u // 2) for u in range(8)]
    records.append(make_record(b"{", partition=1, offset=4))
    log, _ = await run_exactly_once([records], model)
    assert sorted(predicted_ids(log)) == sorted(f"e{u}" for u in range(8))
    assert len(log.to(SETTINGS.dlq_topic)) == 1
    assert all(len(commit) == 1 for commit in log.source.commits), "one input partition per transaction"
    final = {tp: offset for commit in log.source.commits for tp, offset in commit.items()}
    assert final == {INPUT[0]: 4, INPUT[1]: 5}


async def test_a_failed_delivery_aborts_and_the_partition_is_read_again_from_its_last_commit(model):
    """A broker timeout inside a transaction aborts it; a new producer redoes the work from the
    last commit, and each event is still visible exactly once."""
    records = [make_record(event_bytes(event_id=f"e{n}"), offset=n) for n in range(5)]
    log, loop = await run_exactly_once([records], model, failures_before_success=1, error=KafkaTimeoutError())
    assert sorted(predicted_ids(log)) == [f"e{n}" for n in range(5)]
    assert log.aborted >= 1 and len(log.producers) >= 3, "the failed producer was replaced"
    assert loop.stats.retries >= 1
    assert log.source.commits[-1] == {INPUT[0]: 5}


async def test_a_refused_dead_letter_is_redone_in_its_smallest_form_and_a_refused_prediction_dead_lettered(model):
    """A record Kafka refuses cannot be resent in the same transaction; the redo publishes its next form instead."""
    big = b"\xff" * 5_000

    def refuse(topic, value):
        return (topic == SETTINGS.dlq_topic and value is not None and len(value) > 1_000) or (
            topic == SETTINGS.output_topic and b'"refused"' in (value or b"")
        )

    records = [
        make_record(big, offset=0),
        make_record(event_bytes(event_id="refused"), offset=1),
        make_record(event_bytes(event_id="fine"), offset=2, partition=1),
    ]
    stop = asyncio.Event()
    source = InMemorySource([records], stop, idle_polls=IDLE_POLLS)
    log = InMemoryTransactionLog(source)
    original = log.producer

    def refusing_producer(txn_id):
        sink = original(txn_id)
        sink.refuse, sink.refusal = refuse, MessageSizeTooLargeError()
        return sink

    stats = ServiceStats()
    guarantee = ExactlyOnce(SETTINGS, source, refusing_producer, stats, stop)
    loop = PredictionLoop(SETTINGS, source, guarantee, InMemoryFeatureStore(small_feature_table(200)), model, stop, stats)
    await guarantee.on_assigned(INPUT)
    await asyncio.wait_for(loop.run(), 10)
    await loop.close()

    assert predicted_ids(log) == ["fine"]
    letters = {read_dead_letter_headers(headers)["dlq.source.offset"]: (value, read_dead_letter_headers(headers))
               for _, value, _, headers in log.to(SETTINGS.dlq_topic)}
    assert sorted(letters) == ["0", "1"], "one dead letter each, none twice"
    value, why = letters["0"]
    assert value == b"" and why["dlq.value.truncated"] == "true" and why["dlq.value.original.bytes"] == str(len(big))
    assert letters["1"][1]["dlq.error.kind"] == "rejected_by_kafka"


async def test_a_fenced_former_owner_publishes_nothing(model, caplog):
    """Once another producer started with the partition's transactional id, the former owner's
    transactions fail: none of its outputs or offsets become visible."""
    stop = asyncio.Event()
    records = [make_record(event_bytes(event_id=f"z{n}"), offset=n) for n in range(3)]
    source = InMemorySource([[], records], stop)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(SETTINGS, source, log.producer, stats, stop)
    loop = PredictionLoop(SETTINGS, source, guarantee, InMemoryFeatureStore(small_feature_table(200)), model, stop, stats)
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
    loop = PredictionLoop(settings, source, guarantee, InMemoryFeatureStore(small_feature_table(200)), model, stop, stats)
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


def test_a_batch_splits_by_input_partition_in_input_order():
    records = [make_record(event_bytes(event_id=f"e{n}"), partition=n % 2, offset=n) for n in range(6)]
    prediction = cast(Prediction, None)  # not looked at
    predictions = [(r, prediction) for r in records if r.offset != 3]
    work = Work({INPUT[0]: 5, INPUT[1]: 6}, predictions, [(records[3], InvalidEvent("not_json", "{"))], 6, 0.0, 0.0, 0.0)
    shares = split_by_partition(work)
    assert [r.offset for r, _ in shares[INPUT[0]].predictions] == [0, 2, 4]
    assert [r.offset for r, _ in shares[INPUT[1]].predictions] == [1, 5]
    assert [r.offset for r, _ in shares[INPUT[1]].invalid] == [3]
    assert shares[INPUT[0]].offsets == {INPUT[0]: 5} and shares[INPUT[1]].events == 3


async def test_a_transaction_stays_open_for_the_commit_interval_unless_a_drain_waits_for_it(model):
    """Outputs reach Kafka at once but commit only after COMMIT_INTERVAL_MS; a drain (a rebalance, a
    shutdown) commits the open transaction without waiting that long."""
    settings = Settings(commit_interval_ms=60_000, retry_backoff_initial_ms=1, retry_backoff_max_ms=2)
    stop = asyncio.Event()
    source = InMemorySource([[make_record(event_bytes(event_id="slow"), offset=0)]], stop, idle_polls=10**9)
    log = InMemoryTransactionLog(source)
    stats = ServiceStats()
    guarantee = ExactlyOnce(settings, source, log.producer, stats, stop)
    loop = PredictionLoop(settings, source, guarantee, InMemoryFeatureStore(small_feature_table(200)), model, stop, stats)
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
