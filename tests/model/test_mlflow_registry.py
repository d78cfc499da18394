"""model/mlflow_registry.py against a real MLflow tracking server (tests/mlflow_server.py): versions registered from
a directory of files, served through an alias, moved and rolled back, and an unreachable server reported as an
outage. The model files are stand-in bytes: these tests are about where a version's files come from, not what
they hold."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from errors import SetupError
from model.mlflow_registry import (
    MlflowRegistryError,
    MlflowSource,
    MlflowUnavailable,
    MlflowUriError,
    list_versions,
    parse_models_uri,
    register_version,
    rollback_alias,
    set_alias,
)
from tests.mlflow_server import running_mlflow_server
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration

METRICS = {"roc_auc": 0.81, "ece": 0.012}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
            yield uri


@pytest.fixture
def name() -> str:
    # A registered model of its own per test: aliases and their history do not leak between tests.
    return f"purchase-model-{uuid.uuid4().hex[:8]}"


def version_dir(parent: Path, label: str) -> tuple[Path, bytes, str]:
    """A version directory as training writes it, with stand-in bytes for the model; (directory, bytes, checksum)."""
    directory = parent / label
    directory.mkdir()
    payload = f"stand-in model {label} {uuid.uuid4().hex}".encode()
    checksum = hashlib.sha256(payload).hexdigest()
    (directory / "model.joblib").write_bytes(payload)
    (directory / "model.json").write_text(json.dumps({"version": label, "artifact_sha256": checksum}), encoding="utf-8")
    (directory / "report.html").write_text("<html></html>", encoding="utf-8")
    return directory, payload, checksum


def register_two(tracking_uri: str, name: str, tmp_path: Path) -> list[tuple[str, bytes, str]]:
    """Two versions of `name`: (version number, model bytes, checksum) each."""
    registered = []
    for label in ("20261205T101500Z-aaaaaaaaaa", "20261205T111500Z-bbbbbbbbbb"):
        directory, payload, checksum = version_dir(tmp_path, label)
        number = register_version(tracking_uri, name, directory, {"estimator": "logistic", "version": label}, METRICS)
        registered.append((number, payload, checksum))
    return registered


def test_an_alias_serves_the_version_it_points_at_and_follows_its_moves(tracking_uri, name, tmp_path):
    (v1, payload1, checksum1), (v2, payload2, checksum2) = register_two(tracking_uri, name, tmp_path)
    assert (v1, v2) == ("1", "2")
    uri = f"models:/{name}@champion"
    source = MlflowSource(uri, tracking_uri=tracking_uri, cache_dir=tmp_path / "cache")

    set_alias(tracking_uri, name, "champion", v1)
    assert source.fingerprint() == "1"
    candidate = source.fetch()
    assert candidate.artifact_path == tmp_path / "cache" / name / "1" / "model.joblib"
    assert candidate.artifact_path.read_bytes() == payload1
    assert json.loads((candidate.artifact_path.parent / "model.json").read_text())["artifact_sha256"] == checksum1
    assert (candidate.expected_sha256, candidate.fingerprint, candidate.label) == (checksum1, "1", f"{uri} (version 1)")

    set_alias(tracking_uri, name, "champion", v2)
    assert source.fingerprint() == "2"
    candidate = source.fetch()
    assert (candidate.artifact_path.read_bytes(), candidate.expected_sha256) == (payload2, checksum2)

    assert rollback_alias(tracking_uri, name, "champion") == "1"
    assert source.fingerprint() == "1"
    assert source.fetch().artifact_path.read_bytes() == payload1


def test_rollback_steps_back_through_every_move_and_then_refuses(tracking_uri, name, tmp_path):
    (v1, _, _), (v2, _, _) = register_two(tracking_uri, name, tmp_path)
    for version in (v1, v2, v1, v2):
        set_alias(tracking_uri, name, "champion", version)

    assert [rollback_alias(tracking_uri, name, "champion") for _ in range(3)] == ["1", "2", "1"]
    with pytest.raises(SetupError, match=f"{name}@champion has nothing to roll back to"):
        rollback_alias(tracking_uri, name, "champion")
    assert MlflowSource(f"models:/{name}@champion", tracking_uri=tracking_uri, cache_dir=tmp_path).fingerprint() == "1"


def test_moving_an_alias_to_where_it_is_records_no_step(tracking_uri, name, tmp_path):
    (v1, _, _), _ = register_two(tracking_uri, name, tmp_path)
    set_alias(tracking_uri, name, "champion", v1)
    set_alias(tracking_uri, name, "champion", v1)

    with pytest.raises(MlflowRegistryError, match="nothing to roll back to"):
        rollback_alias(tracking_uri, name, "champion")


def test_a_complete_cached_copy_is_not_downloaded_again_but_a_damaged_one_is(tracking_uri, name, tmp_path):
    (v1, payload1, _), _ = register_two(tracking_uri, name, tmp_path)
    set_alias(tracking_uri, name, "champion", v1)
    source = MlflowSource(f"models:/{name}@champion", tracking_uri=tracking_uri, cache_dir=tmp_path / "cache")
    cached = source.fetch().artifact_path
    inode = cached.stat().st_ino

    assert source.fetch().artifact_path.stat().st_ino == inode  # the same file: not replaced by a new download

    cached.write_bytes(b"damaged on disk")
    assert source.fetch().artifact_path.read_bytes() == payload1
    assert not [path.name for path in cached.parent.parent.iterdir() if path.name.startswith(".incoming-")]


def test_registration_logs_a_run_with_the_params_metrics_and_files(tracking_uri, name, tmp_path):
    from mlflow import MlflowClient

    (v1, _, checksum1), (v2, _, _) = register_two(tracking_uri, name, tmp_path)
    set_alias(tracking_uri, name, "champion", v2)

    rows = list_versions(tracking_uri, name)

    assert [(row["version"], row["aliases"]) for row in rows] == [(v1, []), (v2, ["champion"])]
    assert [row["local_version"] for row in rows] == ["20261205T101500Z-aaaaaaaaaa", "20261205T111500Z-bbbbbbbbbb"]
    assert [(row["roc_auc"], row["ece"]) for row in rows] == [(0.81, 0.012)] * 2
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(rows[0]["run_id"])
    assert run.data.params == {"estimator": "logistic", "version": "20261205T101500Z-aaaaaaaaaa"}
    assert run.data.metrics == METRICS
    assert sorted(item.path for item in client.list_artifacts(rows[0]["run_id"], "model")) == [
        "model/model.joblib", "model/model.json", "model/report.html"]
    assert client.get_model_version(name, v1).tags["artifact_sha256"] == checksum1


def test_a_version_without_a_recorded_checksum_is_not_registered(tracking_uri, name, tmp_path):
    directory, _, _ = version_dir(tmp_path, "20261205T101500Z-cccccccccc")
    (directory / "model.json").write_text(json.dumps({"version": directory.name}), encoding="utf-8")

    with pytest.raises(MlflowRegistryError, match="records no artifact_sha256"):
        register_version(tracking_uri, name, directory, {}, METRICS)


def test_an_unknown_alias_or_model_is_a_setting_to_fix_not_an_outage(tracking_uri, name, tmp_path):
    register_two(tracking_uri, name, tmp_path)

    for uri in (f"models:/{name}@nobody", "models:/no-such-model@champion"):
        with pytest.raises(MlflowRegistryError, match="promote VERSION") as refused:
            MlflowSource(uri, tracking_uri=tracking_uri, cache_dir=tmp_path).fingerprint()
        assert not refused.value.retriable
    with pytest.raises(MlflowRegistryError, match=r"model\.registry list"):
        set_alias(tracking_uri, name, "champion", "9")


def test_an_unreachable_server_is_an_outage(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    source = MlflowSource("models:/purchase-model@champion", tracking_uri=closed, cache_dir=tmp_path)

    with pytest.raises(MlflowUnavailable, match="is unavailable") as unavailable:
        source.fingerprint()
    assert unavailable.value.retriable
    with pytest.raises(MlflowUnavailable):
        source.fetch()
    with pytest.raises(MlflowUnavailable):
        rollback_alias(closed, "purchase-model", "champion")


def test_a_server_that_never_answers_is_an_outage_not_a_hang(tmp_path):
    # Connections are accepted (the listen backlog) and never answered: only the client's timeouts end the wait,
    # lowered by model.mlflow_registry from MLflow's defaults of minutes (and pytest-timeout stops a hang).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(MlflowUnavailable, match="is unavailable"):
            MlflowSource("models:/purchase-model@champion", tracking_uri=uri, cache_dir=tmp_path).fingerprint()


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/purchase-model@champion", ("purchase-model", "champion")),
    ("  models:/Purchase_Model.v2@shadow-1 ", ("Purchase_Model.v2", "shadow-1")),
])
def test_a_models_uri_names_a_model_and_an_alias(uri, expected):
    assert parse_models_uri(uri) == expected


@pytest.mark.parametrize("uri", [
    "models:/purchase-model", "models:/purchase-model/3", "models:/@champion", "models:/purchase-model@",
    "models:/../x@champion", "models:/a/b@champion", "runs:/abc/model", "model/registry",
])
def test_a_malformed_models_uri_says_the_expected_form(uri):
    with pytest.raises(MlflowUriError, match="models:/NAME@ALIAS") as refused:
        parse_models_uri(uri)
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, SetupError)
