import random

from events.schema import InvalidEvent, parse_event
from terminal.event_producer import ProducerReport, TrafficPlan, _next_record


def plan(**overrides) -> TrafficPlan:
    return TrafficPlan(**{"count": 0, "rate_per_s": 0, "seed": 1, "invalid_ratio": 0.0, "users": 100,
                          "unknown_user_ratio": 0.0, **overrides})


def test_valid_records_are_keyed_by_their_user_and_parse():
    """Every generated valid record parses, and its key is its user id."""
    rng, report = random.Random(1), ProducerReport()
    for n in range(200):
        key, value = _next_record(rng, plan(), n, report)
        event = parse_event(value)
        assert key == str(event.user_id).encode() and 0 <= event.user_id < 100
    assert report.valid == 200 and report.invalid == 0


def test_the_invalid_ratio_is_honoured_and_every_invalid_record_is_rejected():
    """About the requested share is invalid, and the service would reject each of them."""
    rng, report = random.Random(2), ProducerReport()
    for n in range(2000):
        key, value = _next_record(rng, plan(invalid_ratio=0.25), n, report)
        if key == b"invalid":
            try:
                parse_event(value)
            except InvalidEvent:
                continue
            raise AssertionError(f"invalid record accepted: {value!r}")
    assert 0.2 < report.invalid / report.sent < 0.3


def test_unknown_users_are_outside_the_store():
    """With --unknown-user-ratio 1 every user id is beyond the loaded range (a cold-start user)."""
    rng, report = random.Random(3), ProducerReport()
    ids = [parse_event(_next_record(rng, plan(unknown_user_ratio=1.0), n, report)[1]).user_id for n in range(50)]
    assert all(user_id >= 100 for user_id in ids)


def test_the_report_lists_invalid_kinds():
    """The summary line gives totals, the rate and a count per invalid kind."""
    report = ProducerReport(valid=8, seconds=2.0)
    report.invalid_by_kind.update({"not_json": 1, "two_pages": 1})
    assert report.summary("in") == "sent 10 events to in in 2.0 s (5/s): 8 valid, 2 invalid (not_json 1, two_pages 1)"
