"""The watcher loads a new version off the loop, refuses a bad one with a reason and a counter,
and keeps going when the source cannot be read."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from model.artifact import save_model
from model.local_registry import LocalRegistry
from model.sources import RegistrySource
from service.models.slots import SERVING, ModelSlot
from service.models.watch import ModelWatcher
from service.observe.model_stats import ModelStats
from service.retry import Backoff

BACKOFF = Backoff(0.01, 0.02)


def register(registry: LocalRegistry, model, version: str, tmp: Path, *, metrics: dict | None = None) -> str:
    staged = tmp / f"staged-{version}" / "model.joblib"
    good_metrics = {"roc_auc": 0.75, "oracle_roc_auc": 0.76, "ece": 0.01}
    metadata = {"version": version, "sklearn_version": model.sklearn_version, "metrics": metrics or good_metrics,
                "gates": {"max_auc_gap_to_oracle": 0.02, "max_ece": 0.02}}
    save_model(dataclasses.replace(model, version=version), staged, metadata)
    return registry.register(staged)


@pytest.fixture
def registry(tmp_path, model):
    registry = LocalRegistry(tmp_path / "registry")
    registry.promote(register(registry, model, "v1", tmp_path))
    return registry


def watcher_on(registry: LocalRegistry, model) -> tuple[ModelWatcher, ModelSlot, ModelStats]:
    source = RegistrySource(registry.root)
    slot = ModelSlot(SERVING, dataclasses.replace(model, version="v1"), source.fingerprint())
    stats = ModelStats()
    return ModelWatcher(slot, source, 1, stats, BACKOFF), slot, stats


async def test_a_promoted_version_is_loaded_and_waits_in_the_slot(registry, model, tmp_path):
    watcher, slot, stats = watcher_on(registry, model)
    await watcher.check()
    assert slot.pending is None, "nothing new"
    registry.promote(register(registry, model, "v2", tmp_path))
    await watcher.check()
    assert slot.pending is not None and slot.pending.model.version == "v2"
    assert slot.model is not None and slot.model.version == "v1", "the swap is the loop's, between batches"
    assert not stats.refused


async def test_a_corrupt_artifact_is_refused_once_with_its_reason_until_sighup(registry, model, tmp_path, caplog):
    watcher, slot, stats = watcher_on(registry, model)
    version = register(registry, model, "v2", tmp_path)
    artifact = registry.artifact_path(version)
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"corrupted!")
    registry.promote(version)
    with caplog.at_level(logging.ERROR):
        await watcher.check()
        await watcher.check()
    assert slot.pending is None
    assert stats.refused == {(SERVING, "checksum"): 1}, "refused once, not at every poll"
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    await watcher.check(forced=True)
    assert stats.refused == {(SERVING, "checksum"): 2}, "SIGHUP gives it another look"


async def test_a_version_failing_its_ece_gate_is_refused(registry, model, tmp_path):
    watcher, slot, stats = watcher_on(registry, model)
    version = register(registry, model, "v2", tmp_path, metrics={"roc_auc": 0.75, "oracle_roc_auc": 0.76, "ece": 0.08})
    registry.promote(version)
    await watcher.check()
    assert slot.pending is None and stats.refused == {(SERVING, "gate"): 1}


async def test_a_source_that_cannot_be_read_is_counted_and_backs_off(registry, model, tmp_path):
    watcher, slot, stats = watcher_on(registry, model)
    registry.pointer_path.write_text("{not json")
    await watcher.check()
    await watcher.check()
    assert stats.source_errors == {SERVING: 2} and slot.pending is None
    registry.promote(register(registry, model, "v2", tmp_path))
    await watcher.check()
    assert slot.pending is not None and slot.pending.model.version == "v2"


def test_registry_pointer_is_json(registry):
    assert json.loads(registry.pointer_path.read_text())["version"] == "v1"
