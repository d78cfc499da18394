"""Record batches per output partition, handed to the producer in order without making the loop wait.

aiokafka sends one request to a broker at a time, a request carries at most one batch per
partition, and `send_batch` returns only once the partition's previous batch has gone out. Here
the loop appends rows to an open batch per partition and moves on; a task per partition seals
that batch and hands it over when the producer can take it, so the rows of every loop turn that
comes meanwhile go out together. Batches grow with the load: few records each when it is light
(low latency), full ones under a backlog (low CPU per record).

Sealing the open batch every loop turn instead queued one batch a turn while the broker was slow
to answer, each needing a round trip of its own, so the loop fell further behind the longer the
broker took; a batch per request catches up with the next answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class RecordBatch(Protocol):
    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes | None, headers: Any = ()) -> Any: ...

    def close(self) -> None: ...


class BatchSink(Protocol):
    def create_batch(self) -> RecordBatch: ...

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int) -> asyncio.Future[Any]: ...


@dataclass
class OpenBatch:
    builder: RecordBatch
    delivered: asyncio.Future[Any]  # Kafka's answer for the whole batch, once it has one
    size: int = 0


@dataclass
class PartitionSender:
    sink: BatchSink
    topic: str
    partition: int
    _open: OpenBatch | None = None
    _sealed: deque[OpenBatch] = field(default_factory=deque)
    _task: asyncio.Task[Any] | None = None

    def append(self, key: bytes | None, value: bytes | None) -> asyncio.Future[Any]:
        """Add one record; returns the future of the batch it went into."""
        batch = self._open
        if batch is None or batch.builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
            if batch is not None:
                self._seal()
            batch = self._open = OpenBatch(self.sink.create_batch(), asyncio.get_running_loop().create_future())
            if batch.builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
                raise ValueError("a record larger than a whole batch")  # predictions are a few hundred bytes
        batch.size += 1
        return batch.delivered

    def append_alone(self, key: bytes | None, value: bytes | None) -> asyncio.Future[Any]:
        """Add one record as a batch of its own, after the rows before it, so that Kafka refusing
        that batch names the record; returns the batch's future."""
        if self._open is not None:
            self._seal()
        builder = self.sink.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
            raise ValueError("a record larger than a whole batch")
        # Closed, as aiokafka's BatchBuilder.close() advises for full control of a batch's
        # contents: a producer.send() to the same partition cannot add to it while it waits.
        builder.close()
        batch = OpenBatch(builder, asyncio.get_running_loop().create_future(), size=1)
        self._sealed.append(batch)
        return batch.delivered

    def flush(self) -> None:
        """Make sure the rows appended so far go out, after the batches before them."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send_sealed())

    def _seal(self) -> None:
        assert self._open is not None
        self._sealed.append(self._open)
        self._open = None

    async def _send_sealed(self) -> None:
        while True:
            if not self._sealed:
                if self._open is None or not self._open.size:
                    return
                self._seal()  # only now: it holds whatever came while the one before waited its turn
            batch = self._sealed.popleft()
            try:
                future = await self.sink.send_batch(batch.builder, self.topic, partition=self.partition)
            except Exception as exc:  # noqa: BLE001 - the loop reads it from the future, like a failed delivery
                _resolve(batch.delivered, exc=exc)
                continue
            future.add_done_callback(_relay_to(batch.delivered))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _relay_to(delivered: asyncio.Future[Any]) -> Callable[[asyncio.Future[Any]], None]:
    def relay(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            delivered.cancel()
        else:
            _resolve(delivered, exc=future.exception())

    return relay


def _resolve(future: asyncio.Future[Any], exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
        return
    future.set_exception(exc)
    # Read once here: work that was abandoned never reads it, and asyncio would log it as lost.
    future.exception()
