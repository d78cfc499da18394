"""The policy for records Kafka refuses because of the record itself: none may wedge the loop."""

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError
from aiokafka.structs import TopicPartition

from config import Settings
from events.dead_letter import read_dead_letter_headers
from events.schema import InvalidEvent, decode_prediction, parse_event
from service.delivery.at_least_once import AtLeastOnce
from service.delivery.exactly_once import ExactlyOnce
from service.delivery.guarantee import Guarantee
from service.delivery.publisher import Publisher
from service.delivery.refusals import OutputRefused
from service.models.slots import ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import PredictionLoop
from service.pipeline.predict import predict_events
from tests.factories import event_bytes, small_feature_table, trained_model
from tests.fakes.kafka import InMemorySink, InMemorySource, InMemoryTransactionLog, make_record
from tests.fakes.mysql import InMemoryFeatureStore

OUT, DLQ = "output_topic", "dead_letter_topic"


@pytest.fixture(scope="module")
def model():
    return trained_model(small_feature_table(50), num_users=50)


def predicted_ids(sink: InMemorySink) -> list[str]:
    """The event ids of the predictions on the output topic, in the order sent."""
    ids = []
    for _, value, _, _ in sink.to(OUT):
        assert value is not None, "a prediction always has a value"
        ids.append(decode_prediction(value).event_id)
    return ids


async def publish(sink, model, *, valid=(), invalid=()):
    stats = ServiceStats()
    records = [make_record(event_bytes(event_id=event_id), offset=n) for n, event_id in enumerate(valid)]
    predictions = (await predict_events([parse_event(r.value) for r in records], InMemoryFeatureStore(), model)).predictions
    await Publisher(sink, OUT, DLQ, stats).publish(list(zip(records, predictions, strict=True)), list(invalid))
    return stats


async def test_a_refused_prediction_becomes_a_dead_letter_of_its_event(model):
    """Kafka refusing one prediction, even alone, dead-letters that event as rejected_by_kafka; the others go out."""
    sink = InMemorySink(refuse=lambda topic, value: topic == OUT and b'"bad"' in value, refusal=MessageSizeTooLargeError())
    await publish(sink, model, valid=["ok-1", "bad", "ok-2"])
    assert sorted(predicted_ids(sink)) == ["ok-1", "ok-2"]
    ((_, value, _, headers),) = sink.to(DLQ)
    why = read_dead_letter_headers(headers)
    assert why["dlq.error.kind"] == "rejected_by_kafka" and "MessageSizeTooLargeError" in why["dlq.error.reason"]
    assert parse_event(value).event_id == "bad", "the dead letter carries the original event"


async def test_a_refused_dead_letter_is_sent_in_its_smallest_form(model):
    """A dead letter the DLQ topic will not take whole goes out without its value, marked truncated."""
    sink = InMemorySink(refuse=lambda topic, value: topic == DLQ and len(value or b"") > 0, refusal=MessageSizeTooLargeError())
    record = make_record(b"not json at all", offset=9)
    await publish(sink, model, invalid=[(record, InvalidEvent("not_json", "JSON is malformed"))])
    ((_, value, _, headers),) = sink.to(DLQ)
    assert value == b""
    assert dict(headers)["dlq.value.truncated"] == b"true" and dict(headers)["dlq.value.original.bytes"] == b"15"
    assert read_dead_letter_headers(headers)["dlq.source.offset"] == "9"


async def test_a_record_refused_in_every_form_is_counted_and_skipped(model):
    """When Kafka refuses even the smallest dead letter, publishing still completes and the loss is counted."""
    sink = InMemorySink(refuse=lambda topic, value: topic == DLQ, refusal=MessageSizeTooLargeError())
    stats = await publish(sink, model, valid=["ok"], invalid=[(make_record(b"{"), InvalidEvent("not_json", "x"))])
    assert stats.undeliverable == 1
    assert predicted_ids(sink) == ["ok"]


async def test_a_missing_write_permission_stops_with_a_clear_message(model):
    """A topic ACL problem is a set-up error, not a record's fault: it stops the service, naming the topic."""
    sink = InMemorySink(refuse=lambda topic, value: True, refusal=TopicAuthorizationFailedError())
    with pytest.raises(OutputRefused, match=r"output_topic.*WRITE"):
        await publish(sink, model, valid=["ok"])


async def test_an_outage_is_left_to_the_caller_to_retry(model):
    """A delivery timeout is neither a refusal nor dead-lettered: it propagates for the batch to be retried."""
    sink = InMemorySink(failures_before_success=1, error=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await publish(sink, model, valid=["a", "b"])
    assert sink.to(DLQ) == []


async def run_loop(mode: str, records, model, refuse) -> tuple[list, list, ServiceStats]:
    """Run the whole loop over `records` in `mode`, every producer refusing what `refuse` picks;
    returns what a reader sees on the output and dead-letter topics, and the stats."""
    settings = Settings(output_topic=OUT, dlq_topic=DLQ, retry_backoff_initial_ms=1, retry_backoff_max_ms=2)
    stop = asyncio.Event()
    # Polls after the last batch before the source stops the loop: time for the redos.
    source = InMemorySource([records], stop, idle_polls=500)
    stats = ServiceStats()
    guarantee: Guarantee
    if mode == "at_least_once":
        sink = InMemorySink(refuse=refuse, refusal=MessageSizeTooLargeError())
        guarantee = AtLeastOnce(settings, source, sink, stats, stop)
        seen = sink.to
    else:
        log = InMemoryTransactionLog(source)

        def refusing_producer(transactional_id):
            producer = log.producer(transactional_id)
            producer.refuse, producer.refusal = refuse, MessageSizeTooLargeError()
            return producer

        guarantee = ExactlyOnce(settings, source, refusing_producer, stats, stop)
        await guarantee.on_assigned({TopicPartition(record.topic, record.partition) for record in records})
        seen = log.to
    loop = PredictionLoop(settings, guarantee, InMemoryFeatureStore(small_feature_table(50)), ServingModels.of(model), stop, stats)
    await asyncio.wait_for(loop.run(), 10)
    await loop.close()
    return seen(OUT), seen(DLQ), stats


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
async def test_one_refused_prediction_in_a_batch_dead_letters_that_event_alone_in_either_mode(model, mode):
    """Kafka refusing one prediction fails its whole record batch; every other prediction of the
    batch still goes out, in input order, and only the refused one's event is dead-lettered."""
    # One user, so the ten predictions share an output partition and a record batch.
    records = [make_record(event_bytes(user_id=7, event_id=f"e{n}"), offset=n) for n in range(10)]
    predictions, dead, stats = await run_loop(mode, records, model, lambda topic, value: topic == OUT and b'"e3"' in value)
    assert [decode_prediction(value).event_id for _, value, _, _ in predictions] == [f"e{n}" for n in range(10) if n != 3]
    ((_, value, _, headers),) = dead
    assert parse_event(value).event_id == "e3"
    assert read_dead_letter_headers(headers)["dlq.error.kind"] == "rejected_by_kafka"
    assert stats.undeliverable == 0
