"""PartitionSender: a partition's rows go out in order, and the rows of the loop turns that come
while Kafka still has the previous batch go out together rather than one batch a turn."""

import asyncio

from service.delivery.record_batches import PartitionSender
from tests.fakes.kafka import InMemoryBatch


class OneAtATimeSink:
    """Like aiokafka: `send_batch` returns once the partition's previous batch has gone out in a
    request; here that happens when the test calls `let_one_out`."""

    def __init__(self) -> None:
        self.handed: list[list[bytes | None]] = []
        self._gone_out = asyncio.Semaphore(0)

    def create_batch(self) -> InMemoryBatch:
        return InMemoryBatch(capacity=3)

    async def send_batch(self, batch, topic: str, *, partition: int) -> asyncio.Future:
        if self.handed:
            await self._gone_out.acquire()
        self.handed.append([value for _, value, _ in batch.records])
        acknowledged = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged

    def let_one_out(self) -> None:
        self._gone_out.release()


async def turn(sender: PartitionSender, *values: bytes) -> list[asyncio.Future]:
    """One loop turn: append its rows, flush, and give the event loop a moment."""
    futures = [sender.append(b"key", value) for value in values]
    sender.flush()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return futures


async def test_rows_that_come_while_the_previous_batch_waits_join_one_batch():
    sink = OneAtATimeSink()
    sender = PartitionSender(sink, "out", 0)
    first = await turn(sender, b"1")
    second = await turn(sender, b"2")  # handed over, waits for the first to go out
    later = await turn(sender, b"3") + await turn(sender, b"4")
    assert sink.handed == [[b"1"]]
    sink.let_one_out()
    await asyncio.sleep(0.01)
    sink.let_one_out()
    await asyncio.sleep(0.01)
    assert sink.handed == [[b"1"], [b"2"], [b"3", b"4"]]
    await asyncio.wait_for(asyncio.gather(*first, *second, *later), 1)


async def test_a_full_batch_is_sealed_and_the_order_kept():
    sink = OneAtATimeSink()
    sender = PartitionSender(sink, "out", 0)
    await turn(sender, b"1")
    rest = await turn(sender, *(str(n).encode() for n in range(2, 9)))  # more than one batch holds
    for _ in range(3):
        sink.let_one_out()
        await asyncio.sleep(0.01)
    assert sink.handed == [[b"1"], [b"2", b"3", b"4"], [b"5", b"6", b"7"], [b"8"]]
    await asyncio.wait_for(asyncio.gather(*rest), 1)
    await sender.close()
