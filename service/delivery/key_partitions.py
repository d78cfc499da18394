"""Which output partition each user's predictions go to, as Kafka's default partitioner would pick."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

# Users whose key and partition are remembered; murmur2 in Python costs 2 µs a key.
PARTITION_CACHE_KEYS = 100_000


def keyed_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records, as the Java client and aiokafka's send() use."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions



class KeyPartitions:
    """User id → (key, output partition), for the topic's current partition count."""

    def __init__(self) -> None:
        self._partitions = 0
        self._of: dict[int, tuple[bytes, int]] = {}

    def table(self, partitions: int) -> dict[int, tuple[bytes, int]]:
        if partitions != self._partitions:
            self._of = {}  # the topic grew: keys move, as they do for every producer
            self._partitions = partitions
        return self._of

