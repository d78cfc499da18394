"""A small model of a Kafka cluster for property tests of the delivery guarantees.

It keeps what the broker keeps: each input partition's log (which can be truncated or have its
start deleted), the group's committed offsets, and which inputs have an acknowledged output
(at least once) or an output in a committed transaction (exactly once). Commits are checked as
they happen: a commit may not pass a record of the log whose output is not delivered yet.

The service runs its real loop and guarantee against it. A crash is modelled the way the broker
sees one: the instance's clients stop answering (their calls never return), and a new instance
starts from the committed offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import numpy as np
from aiokafka.errors import KafkaConnectionError, ProducerFenced
from aiokafka.structs import TopicPartition

from features.contract import FeatureContract
from features.user import UserFeatures
from service.delivery.at_least_once import AtLeastOnce
from service.delivery.exactly_once import ExactlyOnce
from service.delivery.guarantee import Guarantee
from service.models.slots import ServingModels
from service.observe.stats import ServiceStats
from service.pipeline.loop import FinishBatchBeforeRevoke, PredictionLoop
from tests.fakes.kafka import InMemoryBatch
from tests.service.delivery.model_cluster import (
    PARTITIONS,
    SETTINGS,
    Cluster,
    ModelConsumer,
    identity,
    never,
)


class HeldSink:
    """A producer whose acknowledgements the test gives, one batch at a time, oldest first."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.waiting: list[tuple[asyncio.Future, list[str]]] = []

    def create_batch(self) -> InMemoryBatch:
        return InMemoryBatch()

    async def send_batch(self, batch, topic: str, *, partition: int) -> asyncio.Future:
        return self._hold([identity(value) for _, value, _ in batch.records])

    async def send(self, topic, value=None, key=None, *, partition=None, headers=None) -> asyncio.Future:
        return self._hold([identity(value)])

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def _hold(self, names: list[str]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((future, names))
        return future

    def answer_oldest(self, error: BaseException | None, count: int = 1) -> None:
        for _ in range(min(count, len(self.waiting))):
            self._answer(error)

    def _answer(self, error: BaseException | None) -> None:
        future, names = self.waiting.pop(0)
        if error is not None:
            future.set_exception(error)
            return
        self.cluster.delivered.update(names)
        future.set_result(None)


class ModelTransactionalProducer(HeldSink):
    """A transactional producer: outputs count as delivered when their transaction commits, and
    starting a producer with the same id fences the previous one."""

    def __init__(self, cluster: Cluster, transactional_id: str) -> None:
        super().__init__(cluster)
        self.transactional_id = transactional_id
        self.epoch = 0
        self.dead = False
        self._outputs: list[str] = []
        self._offsets: dict[TopicPartition, int] = {}

    async def _alive(self) -> None:
        await asyncio.sleep(0)
        if self.dead:
            await never()
        if self.cluster.epochs.get(self.transactional_id) != self.epoch:
            raise ProducerFenced()

    async def start(self) -> None:
        await asyncio.sleep(0)
        self.epoch = self.cluster.epochs[self.transactional_id] = self.cluster.epochs.get(self.transactional_id, 0) + 1

    async def stop(self) -> None:
        pass

    async def begin_transaction(self) -> None:
        await self._alive()
        self._outputs, self._offsets = [], {}

    def _hold(self, names: list[str]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.cluster.fail_next_send:
            self.cluster.fail_next_send -= 1
            future.set_exception(KafkaConnectionError("the partition leader is away (model)"))
        elif self.cluster.epochs.get(self.transactional_id) != self.epoch:
            future.set_exception(ProducerFenced())
        else:
            self._outputs += names
            future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        await self._alive()
        self._offsets.update(offsets)

    async def commit_transaction(self) -> None:
        await self._alive()
        self.cluster.delivered.update(self._outputs)
        self.cluster.commit(self._offsets)
        self._outputs, self._offsets = [], {}

    async def abort_transaction(self) -> None:
        self._outputs, self._offsets = [], {}


class StubFeatureStore:
    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        return {}


class StubModel:
    version = "model-test"
    scorer = object()  # predicted inline, not in a thread
    contract = FeatureContract()

    def predict_numbers(self, pages, numbers) -> np.ndarray:
        return np.full(len(pages), 0.5)


class Instance:
    """One service process: its consumer, its producers and its loop."""

    def __init__(self, cluster: Cluster, mode: str) -> None:
        self.cluster = cluster
        self.stop = asyncio.Event()
        self.consumer = ModelConsumer(cluster)
        self.producers: list[ModelTransactionalProducer] = []
        self.sink = HeldSink(cluster)
        stats = ServiceStats()
        guarantee: Guarantee
        if mode == "at_least_once":
            guarantee = AtLeastOnce(SETTINGS, self.consumer, self.sink, stats, self.stop)
        else:
            guarantee = ExactlyOnce(SETTINGS, self.consumer, self._producer, stats, self.stop)
        self.loop = PredictionLoop(SETTINGS, guarantee, StubFeatureStore(), ServingModels.of(StubModel()), self.stop, stats)  # type: ignore[arg-type]
        self.listener = FinishBatchBeforeRevoke(self.loop, max_wait_s=0.01)
        self.turning: asyncio.Task | None = None

    def _producer(self, transactional_id: str) -> ModelTransactionalProducer:
        producer = ModelTransactionalProducer(self.cluster, transactional_id)
        self.producers.append(producer)
        return producer

    async def join(self) -> None:
        self.consumer.assign_all()
        await self.listener.on_partitions_assigned(set(PARTITIONS))

    def turn(self) -> None:
        if self.turning is None or self.turning.done():
            if self.turning is not None:
                self.turning.result()  # a turn that raised is a bug the test must show
            self.turning = asyncio.create_task(self.loop.turn())

    async def rebalance(self) -> None:
        """Every partition revoked and assigned again, as an eager rebalance does."""
        await self.listener.on_partitions_revoked(set(PARTITIONS))
        self.cluster.instance_lost()  # its uncommitted position is gone with the old assignment
        await self.join()

    def crash(self) -> None:
        self.consumer.dead = True
        for producer in self.producers:
            producer.dead = True
        self.cluster.instance_lost()


async def quiesce() -> None:
    """Let every task run until each waits on something the test controls."""
    for _ in range(40):
        await asyncio.sleep(0)
