"""MODEL_URI turned into a model source: files, local registries, MLflow URIs, and what their fingerprints follow."""

from __future__ import annotations

import os
import sys
import types
import uuid
from pathlib import Path

import pytest

from config import PROJECT_ROOT, ConfigError
from model.local_registry import LocalRegistry
from model.sources import FileSource, NoModelYet, RegistrySource, open_model_source
from tests.model.test_registry import saved_model, version_name


def test_a_file_source_fetches_the_file_itself(tmp_path):
    path = saved_model(tmp_path, version_name(1))
    source = open_model_source(str(path))

    candidate = source.fetch()

    assert isinstance(source, FileSource)
    assert candidate.artifact_path == path
    assert candidate.expected_sha256 is None, "the checksum comes from model.json"
    assert candidate.fingerprint == source.fingerprint()
    assert str(path) in candidate.label


def test_a_file_fingerprint_changes_when_the_file_is_replaced_or_rewritten(tmp_path):
    path = saved_model(tmp_path, version_name(1))
    source = FileSource(path)
    before = source.fingerprint()

    # Replaced atomically with bytes of the same size, as save_model does: a new inode.
    replacement = tmp_path / "model.joblib.tmp"
    replacement.write_bytes(bytes(len(path.read_bytes())))
    os.replace(replacement, path)
    replaced = source.fingerprint()
    # Rewritten in place with another size.
    path.write_bytes(b"a longer payload than before, rewritten in place")
    rewritten = source.fingerprint()

    assert len({before, replaced, rewritten}) == 3
    assert source.fingerprint() == rewritten, "unchanged file, unchanged fingerprint"


def test_a_missing_file_says_to_train_one(tmp_path):
    source = open_model_source(str(tmp_path / "model.joblib"))
    assert isinstance(source, FileSource)
    with pytest.raises(NoModelYet, match="make train"):
        source.fingerprint()
    with pytest.raises(NoModelYet, match="make train"):
        source.fetch()


def registry_with_two_versions(tmp_path: Path) -> tuple[LocalRegistry, str, str]:
    registry = LocalRegistry(tmp_path / "registry")
    first = registry.register(saved_model(tmp_path / "a", version_name(1)))
    second = registry.register(saved_model(tmp_path / "b", version_name(2)))
    return registry, first, second


def test_a_registry_source_serves_the_promoted_version_and_its_fingerprint_follows_promotions(tmp_path):
    registry, first, second = registry_with_two_versions(tmp_path)
    registry.promote(first)
    source = open_model_source(str(registry.root))
    assert isinstance(source, RegistrySource)

    before = source.fingerprint()
    candidate = source.fetch()
    registry.promote(second)

    assert before == candidate.fingerprint == first
    assert candidate.artifact_path == registry.artifact_path(first) and candidate.artifact_path.is_file()
    assert candidate.label == f"version {first} of registry {registry.root}"
    assert source.fingerprint() == second
    assert source.fetch().artifact_path == registry.artifact_path(second)


def test_a_registry_with_nothing_promoted_says_how_to_get_a_version(tmp_path):
    registry, _, _ = registry_with_two_versions(tmp_path)
    source = RegistrySource(registry.root)
    with pytest.raises(NoModelYet, match=rf"no version serves from {registry.root}: train one with `make train` or promote"):
        source.fetch()


def test_a_missing_path_is_a_registry_that_does_not_exist_yet(tmp_path):
    source = open_model_source(str(tmp_path / "registry"))
    assert isinstance(source, RegistrySource)
    with pytest.raises(NoModelYet, match=r"no version serves from .*: train one with `make train`$"):
        source.fingerprint()
    assert not (tmp_path / "registry").exists(), "looking does not create it"


def test_relative_paths_are_relative_to_the_project_root():
    relative = f"model/no-such-registry-{uuid.uuid4().hex}"
    registry_source = open_model_source(relative)
    file_source = open_model_source(f"{relative}/model.joblib")
    assert isinstance(registry_source, RegistrySource) and isinstance(file_source, FileSource)
    assert registry_source.registry.root == PROJECT_ROOT / relative
    assert file_source.path == PROJECT_ROOT / relative / "model.joblib"
    assert registry_source.uri == relative


def test_a_file_that_is_not_a_joblib_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"MODEL_URI.*neither a \.joblib file nor a registry directory"):
        open_model_source(str(path))


def test_an_empty_uri_is_refused():
    with pytest.raises(ConfigError, match="MODEL_URI"):
        open_model_source("  ")


def test_an_mlflow_uri_needs_a_tracking_uri():
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        open_model_source("models:/purchase-model@champion", mlflow_tracking_uri="")


def test_an_mlflow_uri_opens_an_mlflow_source(monkeypatch, tmp_path):
    opened: list[tuple[str, str, Path | None]] = []

    class FakeMlflowSource:
        def __init__(self, uri: str, *, tracking_uri: str, cache_dir: Path | None) -> None:
            opened.append((uri, tracking_uri, cache_dir))
            self.uri = uri

    module = types.ModuleType("model.mlflow_registry")
    module.MlflowSource = FakeMlflowSource  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "model.mlflow_registry", module)

    source = open_model_source("models:/purchase-model@champion", mlflow_tracking_uri="http://mlflow:5000", cache_dir=tmp_path)

    assert isinstance(source, FakeMlflowSource)
    assert opened == [("models:/purchase-model@champion", "http://mlflow:5000", tmp_path)]
