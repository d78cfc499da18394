"""The whole service as a real process, against the real broker and database."""

from __future__ import annotations

import asyncio
import time

import pytest

from events.dead_letter import read_dead_letter_headers
from events.invalid_samples import INVALID_SAMPLES
from events.schema import decode_prediction, encode_event, encode_key, parse_event
from model.artifact import load_model
from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import read_topic, send_records

pytestmark = pytest.mark.integration


def as_records(events):
    return [(encode_key(event.user_id), encode_event(event)) for event in events]


def predictions_by_event(records):
    return {decode_prediction(record.value).event_id: decode_prediction(record.value) for record in records}


def read_predictions(settings, event_ids, timeout_s=60):
    wanted = set(event_ids)
    records = asyncio.run(
        read_topic(settings, settings.output_topic, lambda rs: wanted <= set(predictions_by_event(rs)), timeout_s)
    )
    return records


def test_every_valid_event_gets_exactly_one_prediction_equal_to_the_offline_model(
    pipeline_settings, start_service, store_database, model_path
):
    """N events in, N predictions out with matching ids, each equal to the model's on the same features at the event's time (1e-9)."""
    _db, known = store_database
    events = random_events(200, user_ids=list(range(STORE_USERS)), seed=1)
    service = start_service()
    asyncio.run(send_records(pipeline_settings, as_records(events)))

    records = read_predictions(pipeline_settings, [e.event_id for e in events])
    predictions = predictions_by_event(records)
    assert len(records) == len(events), "exactly one prediction per event"
    assert set(predictions) == {e.event_id for e in events}

    model = load_model(model_path)
    cleaned = [parse_event(encode_event(e)) for e in events]
    expected = model.predict(
        [e.pages for e in cleaned], [known.get(e.user_id) for e in cleaned], [e.timestamp.timestamp() for e in cleaned]
    )
    for event, probability in zip(cleaned, expected, strict=True):
        prediction = predictions[event.event_id]
        assert prediction.user_id == event.user_id
        assert prediction.model_version == model.version
        assert prediction.timestamp == event.timestamp
        assert abs(prediction.purchase_probability - probability) <= 1e-9
    assert all(record.key == encode_key(decode_prediction(record.value).user_id) for record in records)
    assert service.stop() == 0


def test_unknown_and_cold_start_users_get_predictions(pipeline_settings, start_service, store_database, model_path):
    """A user never seen and a loaded user without purchases both get the cold-start prediction."""
    _db, known = store_database
    no_history = next(user_id for user_id in range(STORE_USERS) if user_id not in known)
    unknown = STORE_USERS + 12345
    events = random_events(20, user_ids=[no_history, unknown], seed=2)
    start_service()
    asyncio.run(send_records(pipeline_settings, as_records(events)))

    predictions = predictions_by_event(read_predictions(pipeline_settings, [e.event_id for e in events]))
    model = load_model(model_path)
    for event in events:
        cleaned = parse_event(encode_event(event))
        (expected,) = model.predict([cleaned.pages], [None], [cleaned.timestamp.timestamp()])
        assert abs(predictions[event.event_id].purchase_probability - expected) <= 1e-9


def test_invalid_events_are_dead_lettered_and_the_service_keeps_running(pipeline_settings, start_service):
    """Each invalid kind lands on the DLQ with its bytes and headers; a valid event after them is still predicted."""
    service = start_service()
    invalid = [(f"bad-{kind}".encode(), value) for kind, value in INVALID_SAMPLES.items()]
    (after,) = random_events(1, user_ids=[1], seed=3)
    asyncio.run(send_records(pipeline_settings, invalid + as_records([after])))

    dead = asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: len(rs) >= len(invalid), 60))
    assert sorted((r.key, r.value) for r in dead) == sorted(invalid)
    for record in dead:
        why = read_dead_letter_headers(record.headers)
        assert why["dlq.source.topic"] == pipeline_settings.input_topic
        assert int(why["dlq.source.partition"]) >= 0 and int(why["dlq.source.offset"]) >= 0
        assert why["dlq.error.kind"] in {"not_utf8", "not_json", "invalid_field", "invalid_pages"}
        assert why["dlq.error.reason"]
    assert after.event_id in predictions_by_event(read_predictions(pipeline_settings, [after.event_id]))
    assert service.alive
    # One summary line per interval (STATS_INTERVAL_S=1 here), not one line per record.
    deadline = time.monotonic() + 15
    while _dead_letters_summarised(service) < len(invalid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _dead_letters_summarised(service) == len(invalid)
    assert not any(m.startswith("dead-lettering ") for m in service.messages()), "per-record lines are DEBUG only"
    assert service.stop() == 0


def test_a_killed_service_loses_nothing_after_restart(pipeline_settings, start_service):
    """SIGKILL in the middle of a stream, then a restart: every valid event still gets a prediction."""
    events = random_events(600, user_ids=list(range(STORE_USERS)), seed=4)
    first = start_service(BATCH_MAX_RECORDS="20")
    first.wait_for_message("partitions assigned")

    async def kill_while_producing() -> int:
        async def produce_slowly():
            for start in range(0, len(events), 30):
                await send_records(pipeline_settings, as_records(events[start : start + 30]))
                await asyncio.sleep(0.1)

        producing = asyncio.create_task(produce_slowly())
        await read_topic(pipeline_settings, pipeline_settings.output_topic, lambda rs: len(rs) >= 50, 60)
        first.kill()
        await producing
        return len(await read_topic(pipeline_settings, pipeline_settings.output_topic, lambda rs: False, 2))

    predicted_before_restart = asyncio.run(kill_while_producing())
    assert predicted_before_restart < len(events), "the kill must land mid-stream for this test to mean anything"

    start_service(BATCH_MAX_RECORDS="20")
    predictions = predictions_by_event(read_predictions(pipeline_settings, [e.event_id for e in events], timeout_s=90))
    assert {e.event_id for e in events} <= set(predictions)


def test_two_instances_in_one_group_split_the_partitions(pipeline_settings, start_service):
    """Two instances share the four partitions between them, and every event is predicted once the work is split."""
    first = start_service()
    first.wait_for_message("partitions assigned")
    second = start_service()
    second.wait_for_message("partitions assigned")
    # The first instance gets a second assignment once the group rebalances to include the other.
    first.wait_for_message("partitions assigned", count=2)

    events = random_events(400, user_ids=list(range(STORE_USERS)), seed=5)
    asyncio.run(send_records(pipeline_settings, as_records(events)))
    predictions = predictions_by_event(read_predictions(pipeline_settings, [e.event_id for e in events]))
    assert {e.event_id for e in events} <= set(predictions)

    assert first.stop() == 0 and second.stop() == 0
    handled = [_events_handled(service) for service in (first, second)]
    assert all(count > 0 for count in handled), f"both instances did work: {handled}"
    assert sum(handled) >= len(events)


def _dead_letters_summarised(service) -> int:
    return sum(int(m.split()[1]) for m in service.messages() if m.startswith("dead-lettered "))


def _events_handled(service) -> int:
    (final,) = [m for m in service.messages() if m.startswith("stopped cleanly after")]
    return int(final.split()[3])


def test_a_bad_setting_stops_start_up_with_a_message_naming_it(start_service):
    """TOPIC_PARTITIONS=many: the service exits at once, code 2, naming the variable."""
    service = start_service(TOPIC_PARTITIONS="many")
    assert service.process.wait(timeout=30) == 2
    assert "TOPIC_PARTITIONS" in service.tail()
    assert "must be a whole number" in service.tail()


def test_a_missing_model_stops_start_up_with_a_message(start_service, tmp_path):
    """No artifact at MODEL_URI: exit code 2 and the hint to train one."""
    service = start_service(MODEL_URI=str(tmp_path / "nothing.joblib"))
    assert service.process.wait(timeout=30) == 2
    assert "make train" in service.tail()
