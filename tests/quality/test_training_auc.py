"""The training AUC of a version, read from its model.json without loading the model."""

from __future__ import annotations

import json
from pathlib import Path

from quality.training_auc import TrainingAucs, recorded_training_aucs


def write_version(registry: Path, version: str, metadata: dict) -> None:
    directory = registry / "versions" / version
    directory.mkdir(parents=True)
    (directory / "model.json").write_text(json.dumps(metadata))


def test_a_registry_version_gives_the_auc_its_model_json_records(tmp_path):
    write_version(tmp_path, "20261205T101500Z-aa", {"version": "20261205T101500Z-aa", "metrics": {"roc_auc": 0.731}})
    write_version(tmp_path, "20261205T101600Z-bb", {"version": "20261205T101600Z-bb", "metrics": {}})
    found = recorded_training_aucs(str(tmp_path), {"20261205T101500Z-aa", "20261205T101600Z-bb", "unknown", "../escape"})
    assert found == {"20261205T101500Z-aa": 0.731}


def test_a_model_file_gives_the_auc_of_its_own_version_only(tmp_path):
    model = tmp_path / "model.joblib"
    model.write_bytes(b"not unpickled")
    (tmp_path / "model.json").write_text(json.dumps({"version": "v7", "metrics": {"roc_auc": 0.7}}))
    assert recorded_training_aucs(str(model), {"v7", "v8"}) == {"v7": 0.7}
    assert recorded_training_aucs(str(model), {"v8"}) == {}


def test_each_source_is_asked_and_an_unknown_version_is_asked_again_only_after_a_while(tmp_path):
    serving, shadow = tmp_path / "serving", tmp_path / "shadow"
    write_version(serving, "v1", {"metrics": {"roc_auc": 0.71}})
    write_version(shadow, "v2", {"metrics": {"roc_auc": 0.74}})
    now = [100.0]
    aucs = TrainingAucs([str(serving), str(shadow)], retry_s=60, clock=lambda: now[0])
    aucs.look_up(aucs.wanted({"v1", "v2", "v3"}))
    assert (aucs.get("v1"), aucs.get("v2"), aucs.get("v3")) == (0.71, 0.74, None)
    assert aucs.wanted({"v1", "v3"}) == []
    write_version(serving, "v3", {"metrics": {"roc_auc": 0.75}})  # registered meanwhile
    now[0] += 61
    assert aucs.wanted({"v1", "v3"}) == ["v3"]
    aucs.look_up(["v3"])
    assert aucs.get("v3") == 0.75
