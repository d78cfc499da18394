"""Exactly-once delivery against an in-memory transaction log: outputs are visible only once
their transaction commits, with the offsets, and a producer started later with the same
transactional id fences the earlier one. The real broker is in the integration tests and the
fault harness (python -m tools.chaos)."""

import asyncio
from typing import cast

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from events.dead_letter import read_dead_letter_headers
from events.schema import InvalidEvent, Prediction
from service.delivery.exactly_once import ExactlyOnce, split_by_partition
from service.delivery.guarantee import Work
from service.models.slots import ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import PredictionLoop
from tests.factories import event_bytes, small_feature_table
from tests.fakes.kafka import InMemorySource, InMemoryTransactionLog, make_record
from tests.fakes.mysql import InMemoryFeatureStore
from tests.service.loops import EOS_SETTINGS as SETTINGS
from tests.service.loops import IDLE_POLLS, INPUT, run_exactly_once
from tests.service.loops import committed_prediction_ids as predicted_ids


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
    loop = PredictionLoop(SETTINGS, guarantee, InMemoryFeatureStore(small_feature_table(200)), ServingModels.of(model), stop, stats)
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


