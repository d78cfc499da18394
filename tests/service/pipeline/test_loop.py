"""The loop: each event becomes a prediction or a dead letter, outages are retried, a model's bad output
stops it, and a rebalance finishes or abandons the batch in hand."""

import asyncio
import logging

import numpy as np
import pytest
from aiokafka.structs import TopicPartition

from events.dead_letter import read_dead_letter_headers
from events.invalid_samples import INVALID_SAMPLES
from events.schema import decode_prediction
from service.pipeline.loop import FinishBatchBeforeRevoke
from service.pipeline.predict import ModelOutputError
from tests.factories import event_bytes, small_feature_table
from tests.fakes.kafka import make_record
from tests.fakes.mysql import InMemoryFeatureStore
from tests.service.loops import ALO_SETTINGS as SETTINGS
from tests.service.loops import make_loop


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










async def test_a_model_returning_garbage_is_an_error_not_a_dead_letter(model):
    """A NaN from the model is a bug: the loop raises instead of publishing or committing."""

    class BrokenModel:
        version = "broken"
        scorer = None  # no fast path: predictions go through predict_numbers() in a thread
        contract = model.contract

        def predict_numbers(self, pages, numbers):
            return np.full(len(pages), np.nan)

    loop, source, sink, _, _ = make_loop([[make_record(event_bytes())]], BrokenModel())
    with pytest.raises(ModelOutputError):
        await loop.run()
    assert sink.sent == [] and source.commits == []




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
