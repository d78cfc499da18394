"""The policy for records Kafka refuses because of the record itself: none may wedge the loop."""

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from events.dead_letter import read_dead_letter_headers
from events.schema import InvalidEvent, decode_prediction, parse_event
from service.batch import predict_events
from service.publish import OutputRefused, Publisher
from service.stats import ServiceStats
from tests.factories import event_bytes, small_feature_table, trained_model
from tests.fakes import InMemoryFeatureStore, InMemorySink, make_record

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
    predictions = await predict_events([parse_event(r.value) for r in records], InMemoryFeatureStore(), model)
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
