import asyncio
import logging

import numpy as np
import pytest
from aiokafka.errors import CommitFailedError, KafkaTimeoutError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition

from config import Settings
from events.dead_letter import read_dead_letter_headers
from events.invalid_samples import INVALID_SAMPLES
from events.schema import decode_prediction
from service.at_least_once import AtLeastOnce
from service.batch import ModelOutputError
from service.loop import FinishBatchBeforeRevoke, PredictionLoop
from service.offsets import next_offsets
from service.stats import ServiceStats
from tests.factories import event_bytes, small_feature_table, trained_model
from tests.fakes import InMemoryFeatureStore, InMemorySink, InMemorySource, make_record

SETTINGS = Settings(retry_backoff_initial_ms=1, retry_backoff_max_ms=2)


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(200), num_users=200)


def make_loop(batches, model, *, store=None, sink=None):
    stop = asyncio.Event()
    source = InMemorySource(batches, stop)
    sink = sink or InMemorySink()
    store = store or InMemoryFeatureStore(small_feature_table(200))
    return alo_loop(source, sink, store, model, stop), source, sink, store, stop


def alo_loop(source, sink, store, model, stop):
    stats = ServiceStats()
    return PredictionLoop(SETTINGS, source, AtLeastOnce(SETTINGS, source, sink, stats, stop), store, model, stop, stats)


async def test_each_valid_event_gets_one_prediction_and_offsets_are_committed(model):
    """A batch of valid events yields one prediction each, keyed by user, then one commit past the last offset."""
    records = [make_record(event_bytes(user_id=u, event_id=f"e{u}"), partition=u % 2, offset=10 + u) for u in range(6)]
    loop, source, sink, store, _ = make_loop([records], model)
    await loop.run()
    outputs = sink.to(SETTINGS.output_topic)
    predictions = {decode_prediction(value).event_id: (key, decode_prediction(value)) for _, value, key, _ in outputs}
    assert len(outputs) == 6
    assert set(predictions) == {f"e{u}" for u in range(6)}
    assert all(key == str(p.user_id).encode() for key, p in predictions.values())
    assert all(0.0 <= decode_prediction(value).purchase_probability <= 1.0 for _, value, _, _ in outputs)
    assert source.commits == [{TopicPartition("input_topic", 0): 15, TopicPartition("input_topic", 1): 16}]
    assert len(store.lookups) == 1, "one feature lookup per batch, not per event"


async def test_invalid_events_are_dead_lettered_with_original_bytes_and_reason(model):
    """Every invalid sample lands on the DLQ unchanged, with headers naming why and where; valid ones still predict."""
    invalid = [make_record(value, key=b"k", partition=1, offset=100 + n) for n, value in enumerate(INVALID_SAMPLES.values())]
    valid = [make_record(event_bytes(event_id="ok"), partition=0, offset=5)]
    loop, source, sink, _, _ = make_loop([invalid + valid], model)
    await loop.run()
    dead = sink.to(SETTINGS.dlq_topic)
    assert [value for _, value, _, _ in dead] == list(INVALID_SAMPLES.values())
    for n, (_, _, key, headers) in enumerate(dead):
        why = read_dead_letter_headers(headers)
        assert key == b"k"
        assert why["dlq.source.offset"] == str(100 + n) and why["dlq.source.partition"] == "1"
        assert why["dlq.error.kind"] and why["dlq.error.reason"]
    assert [decode_prediction(v).event_id for _, v, _, _ in sink.to(SETTINGS.output_topic)] == ["ok"]
    assert source.commits[-1][TopicPartition("input_topic", 1)] == 100 + len(INVALID_SAMPLES)


async def test_a_database_outage_is_retried_and_nothing_is_dead_lettered(model):
    """MySQL failing twice delays the batch; it is then predicted, committed once, and never dead-lettered."""
    store = InMemoryFeatureStore(small_feature_table(200), failures_before_success=2)
    loop, source, sink, _, _ = make_loop([[make_record(event_bytes())]], model, store=store)
    await loop.run()
    assert len(store.lookups) == 3
    assert loop.stats.retries == 2
    assert len(sink.to(SETTINGS.output_topic)) == 1 and sink.to(SETTINGS.dlq_topic) == []
    assert len(source.commits) == 1


async def test_stopping_during_an_outage_commits_nothing(model):
    """If MySQL never comes back and a stop is requested, the batch is abandoned uncommitted for a replay."""
    store = InMemoryFeatureStore(failures_before_success=10**9)
    loop, source, sink, _, stop = make_loop([[make_record(event_bytes())]], model, store=store)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await loop.run()
    assert store.lookups, "the batch was in hand when the stop came"
    assert source.commits == []
    assert sink.sent == []


async def test_a_failed_delivery_rewinds_to_the_last_commit_and_is_processed_again(model):
    """A broker timeout on publish drops the work in flight, rewinds, and the batch is predicted and committed after all."""
    sink = InMemorySink(failures_before_success=1, error=KafkaTimeoutError())
    records = [make_record(event_bytes(event_id="a"), offset=0), make_record(event_bytes(event_id="b"), offset=1)]
    loop, source, sink, _, _ = make_loop([records], model, sink=sink)
    await loop.run()
    assert loop.stats.retries == 1
    assert (TopicPartition("input_topic", 0), "beginning") in source.seeks, "nothing was committed yet: back to the start"
    # Whatever was delivered before the failure is delivered again: at least once.
    assert {decode_prediction(v).event_id for _, v, _, _ in sink.to(SETTINGS.output_topic)} == {"a", "b"}
    assert source.commits == [{TopicPartition("input_topic", 0): 2}]


async def test_offsets_are_committed_only_for_delivered_outputs(model):
    """Every commit covers only records whose predictions Kafka had already acknowledged."""
    delivered_ids: set[str] = set()

    class RecordingSink(InMemorySink):
        def _deliver(self, topic, records):
            delivery = super()._deliver(topic, records)
            delivered_ids.update(decode_prediction(value).event_id for _, value, _ in records)
            return delivery

    batches = [[make_record(event_bytes(event_id=f"e{n}"), offset=n)] for n in range(6)]
    by_offset = {n: f"e{n}" for n in range(6)}
    loop, source, _, _, _ = make_loop(batches, model, sink=RecordingSink())
    original_commit = source.commit

    async def commit(offsets):
        for offset in range(offsets[TopicPartition("input_topic", 0)]):
            assert by_offset[offset] in delivered_ids, f"offset {offset} committed before its prediction was delivered"
        await original_commit(offsets)

    source.commit = commit
    await loop.run()
    assert source.commits and source.commits[-1] == {TopicPartition("input_topic", 0): 6}


async def test_predictions_go_out_as_one_batch_per_partition_in_input_order(model):
    """A batch's predictions are sent as record batches per output partition, and each user's stay in order."""
    records = [make_record(event_bytes(user_id=n % 7, event_id=f"e{n:03d}"), offset=n) for n in range(120)]
    loop, _, sink, _, _ = make_loop([records], model)
    await loop.run()
    assert len(sink.batches) < 20, "batches, not one send per record"
    per_user: dict[bytes, list[str]] = {}
    for _, value, key, _ in sink.to(SETTINGS.output_topic):
        per_user.setdefault(key, []).append(decode_prediction(value).event_id)
    assert all(ids == sorted(ids) for ids in per_user.values())
    assert sum(len(ids) for ids in per_user.values()) == 120


async def test_a_commit_lost_to_a_rebalance_does_not_stop_the_loop(model):
    """CommitFailedError means another instance replays the batch; the loop goes on with the next one."""
    loop, source, sink, _, _ = make_loop([[make_record(event_bytes(event_id="a"))], [make_record(event_bytes(event_id="b"))]], model)

    async def failing_commit(offsets):
        raise CommitFailedError("rebalanced")

    source.commit = failing_commit
    await loop.run()
    assert {decode_prediction(v).event_id for _, v, _, _ in sink.to(SETTINGS.output_topic)} == {"a", "b"}


async def test_a_model_returning_garbage_is_an_error_not_a_dead_letter(model):
    """A NaN from the model is a bug: the loop raises instead of publishing or committing."""

    class BrokenModel:
        version = "broken"
        scorer = None  # no fast path: predictions go through predict()

        def predict(self, pages, users):
            return np.full(len(pages), np.nan)

    loop, source, sink, _, _ = make_loop([[make_record(event_bytes())]], BrokenModel())
    with pytest.raises(ModelOutputError):
        await loop.run()
    assert sink.sent == [] and source.commits == []


def test_next_offsets_is_one_past_the_last_offset_per_partition():
    """Commit positions are per partition and point at the next record to read."""
    by_partition = {
        TopicPartition("input_topic", 0): [make_record(b"x", partition=0, offset=3), make_record(b"x", partition=0, offset=7)],
        TopicPartition("input_topic", 2): [make_record(b"x", partition=2, offset=0)],
    }
    assert next_offsets(by_partition) == {TopicPartition("input_topic", 0): 8, TopicPartition("input_topic", 2): 1}


class HangingFeatureStore(InMemoryFeatureStore):
    """A MySQL that never answers, until the caller gives up."""

    def __init__(self):
        super().__init__()
        self.entered = asyncio.Event()

    async def get_features(self, user_ids):
        self.entered.set()
        await asyncio.Event().wait()


async def test_a_rebalance_that_cannot_wait_abandons_the_batch_without_a_commit(model):
    """Past the revoke wait the batch in hand is cancelled: nothing is published or committed, and the loop goes on."""
    store = HangingFeatureStore()
    loop, source, sink, _, _stop = make_loop([[make_record(event_bytes())]], model, store=store)
    running = asyncio.create_task(loop.run())
    await store.entered.wait()
    await FinishBatchBeforeRevoke(loop, max_wait_s=0.05).on_partitions_revoked({TopicPartition("input_topic", 0)})
    await asyncio.wait_for(running, 5)
    assert loop.stats.abandoned_batches == 1
    assert source.commits == [] and sink.sent == []


async def test_a_rebalance_waits_for_a_batch_that_finishes_in_time(model):
    """A batch that ends within the revoke wait is committed before the partitions move."""
    loop, source, _, _, _ = make_loop([[make_record(event_bytes())]], model)
    await loop.run()
    await FinishBatchBeforeRevoke(loop, max_wait_s=0.05).on_partitions_revoked(set())
    assert len(source.commits) == 1 and loop.stats.abandoned_batches == 0


async def test_a_partition_without_a_committed_offset_starts_at_its_beginning(model):
    """A new group reads each partition from its oldest record, as auto_offset_reset=earliest would."""
    tp = TopicPartition("input_topic", 3)
    loop, source, _, _, _ = make_loop([NoOffsetForPartitionError(tp)], model)
    await loop.run()
    assert source.seeks == [(tp, "beginning")]
    assert loop.stats.skipped_offsets == 0


async def test_offsets_deleted_by_retention_are_reported_and_counted(model, caplog):
    """A committed offset below the log start is a loss: an ERROR names the partition and the count, and the loop resumes at the start."""
    tp = TopicPartition("input_topic", 2)
    stop = asyncio.Event()
    source = InMemorySource([OffsetOutOfRangeError({tp: 40})], stop, log_start={tp: 100}, log_end={tp: 250})
    loop = alo_loop(source, InMemorySink(), InMemoryFeatureStore(), model, stop)
    await loop.run()
    assert source.seeks == [(tp, 100)]
    assert loop.stats.skipped_offsets == 60
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "input_topic[2]" in error.getMessage() and "60 offsets were skipped" in error.getMessage()


async def test_dead_letters_are_summarised_per_kind_with_sample_offsets(model, caplog):
    """One WARNING per interval counts dead letters by kind and names a few offsets; per-record lines are DEBUG."""
    invalid = [make_record(b"{", partition=1, offset=n) for n in range(5)] + [make_record(None, partition=0, offset=7)]
    loop, _, _, _, _ = make_loop([invalid], model)
    with caplog.at_level(logging.INFO):
        await loop.run()
        loop.stats.log_summary_if_due(0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("dead-lettered 6 records in the last")
    assert "not_json 5 (e.g. input_topic[1]@0, input_topic[1]@1, input_topic[1]@2); empty 1 (e.g. input_topic[0]@7)" in warnings[0]
