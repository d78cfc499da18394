"""The part of AIOKafkaConsumer the service uses, so tests can stand in for it."""

from __future__ import annotations

from typing import Protocol

from aiokafka.structs import ConsumerRecord, TopicPartition

from service.offsets import Repositionable


class RecordSource(Repositionable, Protocol):
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...
