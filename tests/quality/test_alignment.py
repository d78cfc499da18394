"""The event-time merge of partitions: the order records come out in does not depend on how they were fetched."""

from __future__ import annotations

import random

from quality.alignment import EventTimeAlignment


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def alignment(partitions, clock=None, max_waiting=100, wait_s=2.0) -> EventTimeAlignment:
    return EventTimeAlignment(partitions, max_waiting=max_waiting, wait_s=wait_s, clock=clock or FakeClock())


def test_records_come_out_smallest_event_time_first_however_they_were_fetched():
    rng = random.Random(1)
    logs = {name: sorted(rng.sample(range(1_000), 50)) for name in "abc"}
    orders = []
    for _attempt in range(2):
        merge = alignment("abc")
        read = dict.fromkeys(logs, 0)
        out: list = []
        while any(read[p] < len(logs[p]) for p in logs):
            partition = rng.choice([p for p in logs if read[p] < len(logs[p])])
            chunk = logs[partition][read[partition] : read[partition] + rng.randint(1, 20)]
            read[partition] += len(chunk)
            merge.add(partition, [(t, (partition, t)) for t in chunk])
            for p in logs:
                merge.set_caught_up(p, read[p] == len(logs[p]))
            out.extend(record for _partition, record in merge.release())
        orders.append(out)
    assert orders[0] == orders[1]
    assert [t for _p, t in orders[0]] == sorted(t for times in logs.values() for t in times)


def test_a_partition_with_records_still_to_read_is_waited_for_then_passed_over():
    clock = FakeClock()
    merge = alignment("ab", clock)
    merge.add("a", [(10, "a10"), (20, "a20")])
    merge.set_caught_up("a", True)
    merge.set_caught_up("b", False)
    assert list(merge.release()) == []  # b may hold something earlier than 10
    clock.now = 2.5
    assert [record for _p, record in merge.release()] == ["a10", "a20"]
    merge.add("b", [(5, "b5")])
    merge.add("a", [(30, "a30")])
    assert [record for _p, record in merge.release()] == ["b5"]  # b delivers again: waited for again


def test_a_caught_up_partition_is_not_waited_for():
    merge = alignment("ab")
    merge.add("a", [(10, "a10")])
    merge.set_caught_up("a", True)
    merge.set_caught_up("b", True)
    assert [record for _p, record in merge.release()] == ["a10"]


def test_a_record_without_event_time_keeps_its_place_in_its_partition():
    merge = alignment("ab")
    merge.add("a", [(10, "a10"), (None, "a-bad"), (30, "a30")])
    merge.add("b", [(20, "b20")])
    for p in "ab":
        merge.set_caught_up(p, True)
    assert [record for _p, record in merge.release()] == ["a10", "a-bad", "b20", "a30"]


def test_a_partition_that_is_too_far_ahead_asks_to_pause_until_half_is_taken():
    merge = alignment("ab", max_waiting=4)
    merge.add("a", [(t, t) for t in range(4)])
    merge.set_caught_up("a", False)
    merge.set_caught_up("b", False)
    assert merge.is_full("a") and not merge.has_room("a")
    merge.add("b", [(1, "b1")])
    list(merge.release())  # a0, a1, b1 (b then starves, and holds the rest back)
    assert merge.waiting("a") == 2 and merge.has_room("a")
