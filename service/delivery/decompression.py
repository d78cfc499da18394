"""A bound on how far the Kafka client may expand one compressed record batch.

aiokafka 0.14.0 expands a compressed batch whole when the consumer first iterates it
(`DefaultRecordBatch._maybe_uncompress`, `LegacyRecordBatch._decompress`, in the Cython extension
and in the pure-Python fallback alike), through codec functions that its record modules import by
name from `aiokafka.codec`, and then copies the result. A batch of a few kB on the wire can expand
to gigabytes: the process runs out of memory, restarts into the same batch, and never gets past it.

`install_decompression_bound` swaps those names for decoders that stop at `max_bytes`, and the
fetcher's `PartitionRecords` for a subclass that hands on such a batch as one empty stand-in
record per offset, whose value is a `WithheldValue`. The service dead-letters them like any other
invalid event (kind `decompression_bomb`), so every offset is accounted for and the partition
moves on.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import struct
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import aiokafka.codec
import cramjam
from aiokafka.consumer import fetcher
from aiokafka.record import default_records, legacy_records
from aiokafka.structs import TopicPartition

from errors import InputError
from events.schema import WithheldValue

log = logging.getLogger(__name__)

# 64 times the broker's default limit on a batch (message.max.bytes, 1 MB): JSON events compress
# 5 to 20 times, so no honest batch comes near it, while it keeps one expanded batch well inside
# the service's memory budget (docs in the README, "Bounded memory").
MAX_DECOMPRESSED_BATCH_BYTES = 64 * 1024 * 1024
BOMB_KIND = "decompression_bomb"
CODEC_DECODERS = ("gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode")
# cramjam 2.14's message when the output buffer is full (Rust's io::ErrorKind::WriteZero); any
# other DecompressionError is corrupt input and is raised as before. A test pins the text.
_BUFFER_FULL = "failed to write whole buffer"
_XERIAL_HEADER_BYTES = 16


class DecompressionBomb(InputError):
    """A compressed batch would expand beyond the bound; it was not expanded."""

    def __init__(self, compressed_bytes: int, max_bytes: int) -> None:
        super().__init__(f"{compressed_bytes:,} compressed bytes expand beyond {max_bytes:,} bytes")
        self.compressed_bytes = compressed_bytes
        self.max_bytes = max_bytes


class BoundedDecoders:
    """aiokafka's codec decoders, with the output capped at `max_bytes`.

    gzip, lz4 and zstd stream into a scratch mapping of `max_bytes` and stop when it is full. The
    mapping is reused: a fresh one per batch took three times as long as aiokafka's decoder on a
    100 kB batch, its pages faulting in each time. The result is copied out, as aiokafka's own
    decoders copy theirs. Pages are backed only once written, and a bomb's are handed back at once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._scratch: mmap.mmap | None = None
        # One consumer decodes on the event loop; the lock only keeps a second thread from
        # writing into the scratch mapping under the first.
        self._lock = threading.Lock()

    def gzip_decode(self, payload: Any) -> bytes:
        return self._expand(cramjam.gzip.decompress_into, payload)

    def lz4_decode(self, payload: Any) -> bytes:
        return self._expand(cramjam.lz4.decompress_into, payload)

    def zstd_decode(self, payload: Any) -> bytes:
        return self._expand(cramjam.zstd.decompress_into, payload)

    def snappy_decode(self, payload: Any) -> bytes:
        # Snappy blocks state their expanded size up front, so it is checked before expanding.
        if snappy_expanded_bytes(payload) > self.max_bytes:
            raise DecompressionBomb(len(payload), self.max_bytes)
        expanded: bytes = aiokafka.codec.snappy_decode(payload)
        return expanded

    def _expand(self, decompress_into: Callable[[Any, Any], int], payload: Any) -> bytes:
        with self._lock:
            if self._scratch is None:
                self._scratch = mmap.mmap(-1, self.max_bytes)
            try:
                size = decompress_into(payload, self._scratch)
            except cramjam.DecompressionError as exc:
                if _BUFFER_FULL not in str(exc):
                    raise
                self._scratch.madvise(mmap.MADV_DONTNEED)
                raise DecompressionBomb(len(payload), self.max_bytes) from None
            return self._scratch[:size]


def snappy_expanded_bytes(payload: Any) -> int:
    """The expanded size of a Kafka snappy payload: raw, or xerial-framed blocks of raw snappy."""
    view = memoryview(payload)
    # Private, but it is the very test aiokafka's snappy_decode uses, so the two always agree.
    if not aiokafka.codec._detect_xerial_stream(view):
        return int(cramjam.snappy.decompress_raw_len(view))
    total, cursor = 0, _XERIAL_HEADER_BYTES
    while cursor < len(view):
        (block_bytes,) = struct.unpack_from("!i", view, cursor)
        cursor += 4
        total += cramjam.snappy.decompress_raw_len(view[cursor : cursor + block_bytes])
        cursor += block_bytes
    return total


class _WithheldRecord(NamedTuple):
    """Stands in for one record of a batch that was not expanded: what the fetcher reads of a record."""

    offset: int
    timestamp: int | None
    timestamp_type: int | None
    key: bytes | None
    value: WithheldValue
    headers: list[tuple[str, bytes]]
    checksum: int | None


class _BoundedBatch:
    """A record batch that yields stand-ins instead of raising when it expands too far."""

    def __init__(self, batch: Any, tp: TopicPartition) -> None:
        self._batch = batch
        self._tp = tp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __next__(self) -> Any:  # the fetcher reads a control batch's marker with next()
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        try:
            records = iter(self._batch)
            if records is self._batch:
                return records  # type: ignore[no-any-return]  # magic v2 expands in iter(), so it is expanded by now
            first = next(records, None)  # a legacy batch is a generator; it expands on first next()
        except DecompressionBomb as bomb:
            return self._withheld(bomb)
        return iter(()) if first is None else itertools.chain((first,), records)

    def _withheld(self, bomb: DecompressionBomb) -> Iterator[_WithheldRecord]:
        batch = self._batch
        if hasattr(batch, "base_offset"):
            first, last = batch.base_offset, batch.base_offset + batch.last_offset_delta
            timestamp_type = batch.timestamp_type
            timestamp = batch.max_timestamp if timestamp_type == 1 else batch.first_timestamp
        else:
            # A legacy compressed message set is known only by its last offset until expanded.
            first = last = batch.next_offset - 1
            timestamp = timestamp_type = None
        reason = f"the compressed record batch at offsets {first}..{last} was not read: {bomb}"
        log.error(
            "%s[%d]@%d..%d: %s; its records are dead-lettered as %s",
            self._tp.topic, self._tp.partition, first, last, reason, BOMB_KIND,
            extra={"topic": self._tp.topic, "partition": self._tp.partition, "offset": first},
        )
        value = WithheldValue(BOMB_KIND, reason)
        for offset in range(first, last + 1):
            yield _WithheldRecord(offset, timestamp, timestamp_type, None, value, [], None)


class _BoundedRecords:
    """The fetched MemoryRecords of one partition, handing out bounded batches."""

    def __init__(self, records: Any, tp: TopicPartition) -> None:
        self._records = records
        self._tp = tp

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> _BoundedBatch | None:
        batch = self._records.next_batch()
        return None if batch is None else _BoundedBatch(batch, self._tp)


class BoundedPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]  # aiokafka ships no types
    """aiokafka's PartitionRecords reading through bounded batches."""

    def __init__(self, tp: TopicPartition, records: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tp, _BoundedRecords(records, tp), *args, **kwargs)


def record_modules() -> list[ModuleType]:
    """The modules whose record batch classes call the codec decoders by these names."""
    modules = [default_records, legacy_records]
    try:
        from aiokafka.record._crecords import default_records as c_default
        from aiokafka.record._crecords import legacy_records as c_legacy
    except ImportError:  # installed without its C extension
        return modules
    return [*modules, c_default, c_legacy]


def decompression_patches(max_bytes: int) -> list[tuple[ModuleType, str, object]]:
    """What `install_decompression_bound` sets: (module, name, replacement)."""
    decoders = BoundedDecoders(max_bytes)
    patches: list[tuple[ModuleType, str, object]] = [
        (module, name, getattr(decoders, name)) for module in record_modules() for name in CODEC_DECODERS if hasattr(module, name)
    ]
    patches.append((fetcher, "PartitionRecords", BoundedPartitionRecords))
    return patches


def install_decompression_bound(max_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES) -> None:
    """Bound, for every consumer in this process, the expanded size of one record batch."""
    for module, name, replacement in decompression_patches(max_bytes):
        setattr(module, name, replacement)
