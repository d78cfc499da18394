import service.batch
from events.schema import InvalidEvent
from service.batch import split_batch
from tests.factories import event_bytes
from tests.fakes import make_record


def test_records_are_split_into_valid_events_and_rejections():
    """Valid records become events; invalid ones keep their record and the reason."""
    good, bad = make_record(event_bytes(event_id="ok")), make_record(b"{not json")
    batch = split_batch([good, bad])
    assert [(record, event.event_id) for record, event in batch.valid] == [(good, "ok")]
    assert [(record, error.kind) for record, error in batch.invalid] == [(bad, "not_json")]


def test_an_unexpected_parser_failure_is_dead_lettered_not_raised(monkeypatch):
    """A parser bug on one record must not stop the service (its record would replay for ever)."""

    def explode(value):
        if value == b"boom":
            raise ZeroDivisionError("parser bug")
        raise InvalidEvent("not_json", "x")

    monkeypatch.setattr(service.batch, "parse_event", explode)
    batch = split_batch([make_record(b"boom")])
    ((_, error),) = batch.invalid
    assert error.kind == "unparseable" and "ZeroDivisionError: parser bug" in error.reason
