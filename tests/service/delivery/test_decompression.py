import hashlib
import inspect
import struct

import aiokafka
import aiokafka.codec
import cramjam
import pytest
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from aiokafka.record.default_records import DefaultRecordBatchBuilder, _DefaultRecordBatchPy
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder, _LegacyRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from events.schema import InvalidEvent, WithheldValue, parse_event
from service.delivery import decompression as bounded_decompression
from service.delivery.decompression import (
    BOMB_KIND,
    CODEC_DECODERS,
    BoundedDecoders,
    DecompressionBomb,
    decompression_patches,
    record_modules,
    snappy_expanded_bytes,
)

TP = TopicPartition("input", 3)
BOUND = 1024 * 1024
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# aiokafka's code that BoundedPartitionRecords and the batch wrapper rely on, as of the pinned
# 0.14.0. A new aiokafka changes the hash: read the new code, re-run these tests, update the hash.
PINNED_AIOKAFKA = "0.14.0"
PARTITION_RECORDS_SHA256 = "94aa0da0dbec8d1bfcd1aacc64ac405c95c4918b55143e74dcf7f2dab785567f"


@pytest.fixture
def bounded(monkeypatch):
    """The bound installed at 1 MiB for the test only."""
    for module, name, replacement in decompression_patches(BOUND):
        monkeypatch.setattr(module, name, replacement)


def batch_bytes(values: list[bytes], codec: str, base_offset: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(2, CODECS[codec], 0, -1, -1, -1, 64 * 1024 * 1024)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_700_000_000_000 + delta, key=b"k", value=value, headers=[])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)  # the broker's offset; the CRC does not cover it
    return bytes(data)


def legacy_bytes(values: list[bytes], codec: str, last_offset: int) -> bytes:
    builder = LegacyRecordBatchBuilder(1, CODECS[codec], 64 * 1024 * 1024)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_700_000_000_000, key=None, value=value)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, last_offset)  # a wrapper message carries its last inner offset
    return bytes(data)


def read(data: bytes, fetch_offset: int = 0) -> tuple[list, int]:
    """The consumer records the fetcher makes of one partition's fetched bytes, and its next position."""
    records = fetcher.PartitionRecords(TP, MemoryRecords(data), None, fetch_offset, None, None, True, READ_UNCOMMITTED)
    return list(records), records.next_fetch_offset


class ListedRecords:
    """MemoryRecords over batch objects made by the test (to reach the pure-Python batch classes)."""

    def __init__(self, batches: list) -> None:
        self._batches = batches

    def has_next(self) -> bool:
        return bool(self._batches)

    def next_batch(self):
        return self._batches.pop(0)


def bomb_values(codec: str) -> list[bytes]:
    """Three values that compress well and together expand past the 1 MiB bound."""
    return [bytes([65 + n]) * 600_000 for n in range(3)]


@pytest.mark.parametrize("codec", CODECS)
def test_a_batch_within_the_bound_reads_as_it_did(codec, bounded):
    """Every codec still expands an honest batch, with the same records as aiokafka's own decoder."""
    values = [b'{"event_id": "e-%d", "user_id": %d}' % (n, n) for n in range(200)]
    records, position = read(batch_bytes(values, codec, base_offset=40))
    assert [(r.offset, r.value) for r in records] == [(40 + n, value) for n, value in enumerate(values)]
    assert position == 240


@pytest.mark.parametrize("codec", CODECS)
def test_a_batch_over_the_bound_becomes_one_withheld_record_per_offset(codec, bounded):
    """A batch that would expand past the bound is not expanded: each of its offsets comes out as an
    empty withheld value that the parser turns into a decompression_bomb dead letter."""
    records, position = read(batch_bytes(bomb_values(codec), codec, base_offset=10))
    assert [r.offset for r in records] == [10, 11, 12]
    assert position == 13
    for record in records:
        assert isinstance(record.value, WithheldValue) and record.value == b""
        assert record.key is None and record.headers == ()
        with pytest.raises(InvalidEvent) as caught:
            parse_event(record.value)
        assert caught.value.kind == BOMB_KIND
        assert "offsets 10..12" in caught.value.reason and f"beyond {BOUND:,} bytes" in caught.value.reason


def test_the_records_after_a_bomb_in_the_same_fetch_are_read(bounded):
    """The bomb does not end the fetch: the next batch of the partition is expanded and read."""
    after = [b'{"event_id": "after"}']
    records, position = read(batch_bytes(bomb_values("zstd"), "zstd", base_offset=0) + batch_bytes(after, "zstd", base_offset=3))
    assert [(r.offset, isinstance(r.value, WithheldValue)) for r in records] == [(0, True), (1, True), (2, True), (3, False)]
    assert records[-1].value == after[0]
    assert position == 4


def test_a_fetch_that_starts_inside_a_bomb_skips_the_offsets_before_it(bounded):
    """As for any batch, offsets below the position (committed before a restart) are not handed out again."""
    records, position = read(batch_bytes(bomb_values("zstd"), "zstd", base_offset=0), fetch_offset=2)
    assert [r.offset for r in records] == [2]
    assert position == 3


def test_a_bomb_is_logged_at_error_with_its_partition_and_offsets(bounded, caplog):
    """One ERROR per batch names topic[partition]@first..last and the bound."""
    read(batch_bytes(bomb_values("gzip"), "gzip", base_offset=7))
    (entry,) = [r for r in caplog.records if r.name == bounded_decompression.__name__]
    assert entry.levelname == "ERROR"
    assert entry.getMessage().startswith("input[3]@7..9: ") and f"{BOUND:,} bytes" in entry.getMessage()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4"])
def test_a_legacy_message_set_over_the_bound_becomes_one_withheld_record(codec, bounded):
    """A magic v1 compressed message set is known only by its last offset until expanded; that offset
    stands for it."""
    records, position = read(legacy_bytes(bomb_values(codec), codec, last_offset=12))
    assert [(r.offset, r.value.kind) for r in records] == [(12, BOMB_KIND)]
    assert position == 13


def test_a_legacy_message_set_within_the_bound_reads_as_it_did(bounded):
    """Legacy batches expand on their first record; the wrapper gives that record back in place."""
    values = [b"one", b"two", b"three"]
    records, position = read(legacy_bytes(values, "gzip", last_offset=12))
    assert [(r.offset, r.value) for r in records] == [(10, b"one"), (11, b"two"), (12, b"three")]
    assert position == 13


def test_the_pure_python_batch_classes_are_bounded_too(bounded):
    """Without aiokafka's C extension the same names are used, so the same bound holds."""
    v2 = _DefaultRecordBatchPy(batch_bytes(bomb_values("zstd"), "zstd", base_offset=5))
    legacy = _LegacyRecordBatchPy(legacy_bytes(bomb_values("gzip"), "gzip", last_offset=20), 1)
    partition = fetcher.PartitionRecords(TP, ListedRecords([v2, legacy]), None, 0, None, None, True, READ_UNCOMMITTED)
    assert [(r.offset, r.value.kind) for r in partition] == [(5, BOMB_KIND), (6, BOMB_KIND), (7, BOMB_KIND), (20, BOMB_KIND)]


def test_corrupt_compressed_data_is_raised_as_before():
    """Only a full output buffer means a bomb; a broken zstd frame still raises the codec's error."""
    with pytest.raises(cramjam.DecompressionError):
        BoundedDecoders(BOUND).zstd_decode(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)


def test_snappy_sizes_are_read_from_the_block_headers():
    """Raw and xerial-framed snappy both state their expanded size without being expanded."""
    data = b"x" * 100_000
    assert snappy_expanded_bytes(aiokafka.codec.snappy_encode(data, xerial_compatible=False)) == len(data)
    assert snappy_expanded_bytes(aiokafka.codec.snappy_encode(data, xerial_compatible=True)) == len(data)


def test_a_bomb_far_past_the_bound_stops_at_it():
    """256 MiB of one byte (a few kB as zstd) raises DecompressionBomb instead of expanding."""
    compressor = cramjam.zstd.Compressor()
    for _ in range(256):
        compressor.compress(b"\0" * (1024 * 1024))
    bomb = bytes(compressor.finish())
    with pytest.raises(DecompressionBomb) as caught:
        BoundedDecoders(BOUND).zstd_decode(bomb)
    assert caught.value.compressed_bytes == len(bomb) < 64 * 1024


def test_cramjam_reports_a_full_output_buffer_with_the_message_we_match():
    """The bound tells a bomb from corrupt input by this message; a new cramjam must keep it."""
    output = bytearray(10)
    with pytest.raises(cramjam.DecompressionError, match=bounded_decompression._BUFFER_FULL):
        cramjam.zstd.decompress_into(aiokafka.codec.zstd_encode(b"x" * 100), output)


def test_the_record_modules_decode_through_aiokafka_codec_by_these_names():
    """The batch classes take their decoders from module globals named after aiokafka.codec's
    functions; if a new aiokafka imports them otherwise, replacing the names would bound nothing."""
    modules = record_modules()
    assert len(modules) == 4, "the C extension is expected to be installed, as in production"
    for module in modules:
        names = [name for name in CODEC_DECODERS if hasattr(module, name)]
        assert {"gzip_decode", "snappy_decode", "lz4_decode"} <= set(names), module.__name__
        for name in names:
            assert getattr(module, name) is getattr(aiokafka.codec, name), f"{module.__name__}.{name}"


def test_the_fetcher_code_the_bound_wraps_is_the_pinned_one():
    """BoundedPartitionRecords replaces the fetcher's PartitionRecords by name and relies on how it
    walks batches; any change there in aiokafka must be read before the pin moves."""
    assert aiokafka.__version__ == PINNED_AIOKAFKA
    assert "PartitionRecords(" in inspect.getsource(fetcher.Fetcher._proc_fetch_request)
    source = inspect.getsource(bounded_decompression.BoundedPartitionRecords.__mro__[1])
    assert hashlib.sha256(source.encode()).hexdigest() == PARTITION_RECORDS_SHA256
