"""Helpers for the model lifecycle tests: private registries, damaged versions, steady load, and reading
a service's outputs and metrics in full."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from events.schema import InputEvent, Prediction, decode_prediction, encode_event, encode_key
from messaging.kafka_security import kafka_client_options
from model.artifact import ARTIFACT_FILE, save_model
from model.evaluation import Trained
from model.local_registry import LocalRegistry
from tests.factories import model_metadata, random_events
from tests.integration.service_process import REPO_ROOT, ServiceProcess

# The warning the model watcher logs when it cannot read a source (service/models/watch.py).
SOURCE_ERROR_LINE = re.compile(r"\(attempt (?P<attempt>\d+)\).*retrying in (?P<delay>[0-9.]+) s")


def as_records(events: Iterable[InputEvent]) -> list[tuple[bytes, bytes]]:
    return [(encode_key(event.user_id), encode_event(event)) for event in events]


def registry_serving(root: Path, model_path: Path) -> tuple[LocalRegistry, str]:
    """A registry of the test's own at `root`, serving a copy of the artifact at `model_path`; (registry, version)."""
    registry = LocalRegistry(root)
    version = registry.register(model_path)
    registry.promote(version)
    return registry, version


def stage(trained: Trained, directory: Path, **metric_overrides: float) -> Path:
    """Save a trained model as `model.train` would, under `directory`; metric_overrides replace recorded metrics
    (the checksum still matches: it is the metadata that claims a failed gate, not the bytes that are damaged)."""
    metadata: dict[str, Any] = model_metadata(trained)
    metadata["metrics"] = {**metadata["metrics"], **metric_overrides}
    path = directory / ARTIFACT_FILE
    save_model(trained.model, path, metadata)
    return path


def damage(artifact: Path) -> None:
    """Flip bytes in the middle of a file, keeping its size: what a bad disk or a partial copy leaves behind."""
    data = bytearray(artifact.read_bytes())
    middle = len(data) // 2
    for index in range(middle, min(middle + 64, len(data))):
        data[index] ^= 0xFF
    artifact.write_bytes(bytes(data))


def run_registry_command(registry_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m model.registry --registry DIR ...` as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "model.registry", "--registry", str(registry_dir), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def metric_samples(service: ServiceProcess, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` on the service's /metrics, with its labels; empty when there is none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{service.env['METRICS_PORT']}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [(dict(sample.labels), sample.value) for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def metric_value(service: ServiceProcess, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`; 0 when there is none."""
    return sum(value for sample_labels, value in metric_samples(service, name) if labels.items() <= sample_labels.items())


def info_versions(service: ServiceProcess, name: str) -> set[str]:
    """The versions an info metric (prediction_service_model_info, ..._shadow_model_info) reports."""
    return {labels["version"] for labels, value in metric_samples(service, name) if value == 1}


def source_error_lines(service: ServiceProcess, role: str = "serving") -> list[tuple[int, float]]:
    """(attempt, announced retry delay in s) of each 'cannot read the <role> model source' warning, in order."""
    lines = []
    for entry in service.log_entries():
        message = entry.get("message", "")
        if message.startswith(f"cannot read the {role} model source") and entry.get("level") == "warning":
            match = SOURCE_ERROR_LINE.search(message)
            assert match is not None, f"unexpected source error line: {message}"
            lines.append((int(match["attempt"]), float(match["delay"])))
    return lines


def predictions_by_event(records: Iterable[ConsumerRecord]) -> dict[str, Prediction]:
    return {decode_prediction(record.value).event_id: decode_prediction(record.value) for record in records}


async def read_committed_until(settings: Settings, topic: str, event_ids: Iterable[str], timeout_s: float) -> dict[str, Prediction]:
    """Predictions on `topic` (read_committed) by event id, once every one of `event_ids` has one or at the timeout."""
    wanted = set(event_ids)
    seen: dict[str, Prediction] = {}
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed", **kafka_client_options(settings))
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= seen.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.update(predictions_by_event(records))
    finally:
        await consumer.stop()
    return seen


async def read_everything(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Every committed record of `topic`, up to each partition's last stable offset as it is now: a full read,
    so a duplicate anywhere in the topic is seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed", **kafka_client_options(settings))
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end within {timeout_s} s"
            for batch in (await consumer.getmany(*partitions, timeout_ms=200)).values():
                records.extend(record for record in batch if record.offset < ends[TopicPartition(record.topic, record.partition)])
    finally:
        await consumer.stop()
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    # A consumer started without a subscription knows no topic until it asks for the metadata.
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # aiokafka offers no public call for this
        partitions = consumer.partitions_for_topic(topic)
    return set(partitions or ())


async def delete_topic(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            await admin.delete_topics([topic])
    finally:
        await admin.close()


def versions_in_order(positions: Iterable[tuple[Any, int, str]]) -> dict[Any, list[str]]:
    """Per partition, the model versions in offset order, from (partition, offset, version) triples."""
    by_partition: dict[Any, list[tuple[int, str]]] = {}
    for partition, offset, version in positions:
        by_partition.setdefault(partition, []).append((offset, version))
    return {partition: [version for _, version in sorted(pairs)] for partition, pairs in by_partition.items()}


def switches_once(sequence: list[str], first: str, second: str) -> bool:
    """True when the sequence is some `first`s followed by some `second`s (either part may be empty)."""
    if not set(sequence) <= {first, second}:
        return False
    cut = sequence.index(second) if second in sequence else len(sequence)
    return all(version == second for version in sequence[cut:])


def runs(sequence: list[str]) -> list[tuple[str, int]]:
    """A version sequence in run-length form, for a failure message a person can read."""
    result: list[tuple[str, int]] = []
    for version in sequence:
        if result and result[-1][0] == version:
            result[-1] = (version, result[-1][1] + 1)
        else:
            result.append((version, 1))
    return result


@dataclass
class SteadyLoad:
    """Sends batches of random events at a steady pace from one producer, remembering where each landed.

    It sends at least `min_batches`, and after that goes on until `enough()` says so (or `max_batches`):
    a test can keep load on until something has happened, and a while after.
    """

    settings: Settings
    user_ids: list[int]
    batch_size: int = 25
    pause_s: float = 0.1
    min_batches: int = 40
    max_batches: int = 400
    seed: int = 0
    sent: list[InputEvent] = field(default_factory=list)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # event id: (input partition, offset)
    batches: int = 0

    async def run(self, enough: Callable[[int], bool]) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(self.settings)
        )
        await producer.start()
        try:
            while self.batches < self.max_batches and (self.batches < self.min_batches or not enough(self.batches)):
                events = random_events(self.batch_size, self.user_ids, seed=self.seed * 100_000 + self.batches)
                deliveries = [await producer.send(self.settings.input_topic, value, key) for key, value in as_records(events)]
                for event, metadata in zip(events, await asyncio.gather(*deliveries), strict=True):
                    self.positions[event.event_id] = (metadata.partition, metadata.offset)
                self.sent.extend(events)
                self.batches += 1
                await asyncio.sleep(self.pause_s)
        finally:
            await producer.stop()

