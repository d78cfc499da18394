import asyncio

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from service.observe.lag import partition_lag


class FakeConsumer:
    def __init__(self, highwater, position):
        self._highwater = highwater
        self._position = position

    def assignment(self):
        return set(self._highwater)

    def highwater(self, tp):
        return self._highwater[tp]

    async def position(self, tp):
        value = self._position[tp]
        if value == "unpositioned":
            await asyncio.sleep(60)
        if value == "revoked":
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return value


async def test_lag_is_highwater_minus_position_and_unknown_partitions_are_left_out():
    """Known partitions get highwater − position; no highwater yet, no position yet, or revoked meanwhile: left out."""
    a, b, c, d = (TopicPartition("in", n) for n in range(4))
    consumer = FakeConsumer({a: 120, b: None, c: 50, d: 9}, {a: 100, b: 0, c: "unpositioned", d: "revoked"})
    assert await partition_lag(consumer) == {("in", 0): 20}
