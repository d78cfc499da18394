import service.pipeline.validate
from events.schema import InvalidEvent
from service.pipeline.validate import validate_records
from tests.factories import event_bytes
from tests.fakes.kafka import make_record


def test_records_are_split_into_valid_events_and_rejections():
    """Valid records become events; invalid ones keep their record and the reason."""
    good, bad = make_record(event_bytes(event_id="ok")), make_record(b"{not json")
    batch = validate_records([good, bad])
    assert [(record, event.event_id) for record, event in batch.valid] == [(good, "ok")]
    assert [(record, error.kind) for record, error in batch.invalid] == [(bad, "not_json")]


def test_an_unexpected_parser_failure_is_dead_lettered_not_raised(monkeypatch):
    """A parser bug on one record must not stop the service (its record would replay for ever)."""

    def explode(value):
        if value == b"boom":
            raise ZeroDivisionError("parser bug")
        raise InvalidEvent("not_json", "x")

    monkeypatch.setattr(service.pipeline.validate, "parse_event", explode)
    batch = validate_records([make_record(b"boom")])
    ((_, error),) = batch.invalid
    assert error.kind == "unparseable" and "ZeroDivisionError: parser bug" in error.reason
