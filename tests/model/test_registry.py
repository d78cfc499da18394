"""The local model registry and its command line, on dummy artifacts (any bytes with a matching model.json)."""

from __future__ import annotations

import hashlib
import json
import random
import stat
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

import model as model_package
from config import PROJECT_ROOT
from errors import PredictionError
from model.local_registry import LocalRegistry, RegistryError
from model.registry import main

GATES = {"max_auc_gap_to_oracle": 0.02, "max_ece": 0.02}


def version_name(index: int) -> str:
    return f"20261205T1015{index:02d}Z-{index:010x}"


def saved_model(directory: Path, version: str, *, roc_auc: float = 0.80, ece: float = 0.01) -> Path:
    """A model.joblib of arbitrary bytes and the model.json that save_model would write beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.joblib"
    path.write_bytes(f"pickled model {version}".encode())
    metadata = {
        "version": version,
        "estimator": "hist_gradient_boosting",
        "trained_at": "2026-12-05T10:15:00+00:00",
        "metrics": {"roc_auc": roc_auc, "oracle_roc_auc": 0.81, "ece": ece},
        "gates": GATES,
        "artifact_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    path.with_suffix(".json").write_text(json.dumps(metadata))
    return path


def registry_with(tmp_path: Path, count: int) -> tuple[LocalRegistry, list[str]]:
    registry = LocalRegistry(tmp_path / "registry")
    versions = [registry.register(saved_model(tmp_path / f"trained-{i}", version_name(i))) for i in range(count)]
    return registry, versions


def leftovers(registry: LocalRegistry) -> list[str]:
    return [path.name for path in registry.versions_dir.iterdir() if path.name.startswith(".")]


def test_register_copies_the_model_its_metadata_and_reports_into_a_version_directory(tmp_path):
    model_path = saved_model(tmp_path / "trained", version_name(1))
    report = tmp_path / "trained" / "report.html"
    report.write_text("<html></html>")
    registry = LocalRegistry(tmp_path / "registry")

    version = registry.register(model_path, [report])

    assert version == version_name(1)
    stored = registry.versions_dir / version
    assert sorted(path.name for path in stored.iterdir()) == ["model.joblib", "model.json", "report.html"]
    assert registry.artifact_path(version).read_bytes() == model_path.read_bytes()
    assert leftovers(registry) == []
    assert registry.serving() is None, "registering does not make a version serve"


def test_a_tampered_artifact_is_refused_and_leaves_nothing_behind(tmp_path):
    model_path = saved_model(tmp_path / "trained", version_name(1))
    model_path.write_bytes(b"something else entirely")
    registry = LocalRegistry(tmp_path / "registry")

    with pytest.raises(RegistryError, match="SHA-256"):
        registry.register(model_path)

    assert registry.versions() == []
    assert leftovers(registry) == []


def test_a_model_without_a_recorded_checksum_is_refused(tmp_path):
    model_path = saved_model(tmp_path / "trained", version_name(1))
    metadata = json.loads(model_path.with_suffix(".json").read_text())
    del metadata["artifact_sha256"]
    model_path.with_suffix(".json").write_text(json.dumps(metadata))

    with pytest.raises(RegistryError, match="artifact_sha256"):
        LocalRegistry(tmp_path / "registry").register(model_path)


def test_a_version_registers_only_once(tmp_path):
    registry, versions = registry_with(tmp_path, 1)
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(tmp_path / "trained-0" / "model.joblib")
    assert [info.version for info in registry.versions()] == versions


def test_a_version_name_cannot_leave_the_registry(tmp_path):
    model_path = saved_model(tmp_path / "trained", "../escaped")
    with pytest.raises(RegistryError, match="not a version name"):
        LocalRegistry(tmp_path / "registry").register(model_path)
    assert not (tmp_path / "escaped").exists()


def test_versions_are_listed_oldest_first_with_their_metrics_and_gates(tmp_path):
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(saved_model(tmp_path / "b", version_name(2), roc_auc=0.70))
    registry.register(saved_model(tmp_path / "a", version_name(1), ece=0.015))

    first, second = registry.versions()

    assert (first.version, second.version) == (version_name(1), version_name(2))
    assert (first.roc_auc, first.ece, first.gates_passed) == (0.80, 0.015, True)
    assert (second.roc_auc, second.gates_passed) == (0.70, False), "0.11 below the oracle misses the 0.02 gate"
    assert first.estimator == "hist_gradient_boosting"
    assert first.trained_at == "2026-12-05T10:15:00+00:00"
    assert first.path == registry.versions_dir / version_name(1)


def test_promote_points_serving_at_the_version_and_remembers_the_previous_one(tmp_path):
    registry, (v0, v1, v2) = registry_with(tmp_path, 3)

    assert registry.promote(v0) is None
    assert registry.promote(v2) == v0
    assert registry.promote(v1) == v2

    assert registry.serving() == v1
    assert registry.history() == [v2, v0]
    assert json.loads(registry.pointer_path.read_text()) == {"version": v1, "history": [v2, v0]}
    assert stat.S_IMODE(registry.pointer_path.stat().st_mode) & 0o044 == 0o044, "readable by a service running as another user"


def test_promoting_the_serving_version_again_changes_nothing(tmp_path):
    registry, (v0, v1) = registry_with(tmp_path, 2)
    registry.promote(v0)
    registry.promote(v1)
    assert registry.promote(v1) == v1
    assert registry.history() == [v0]


def test_an_unknown_version_cannot_be_promoted(tmp_path):
    registry, (v0,) = registry_with(tmp_path, 1)
    registry.promote(v0)
    with pytest.raises(RegistryError, match="unknown version 20990101T000000Z-0000000000"):
        registry.promote("20990101T000000Z-0000000000")
    assert registry.serving() == v0


def test_rollback_walks_back_through_the_history(tmp_path):
    registry, (v0, v1, v2) = registry_with(tmp_path, 3)
    for version in (v0, v1, v2):
        registry.promote(version)

    assert registry.rollback() == v1
    assert (registry.serving(), registry.history()) == (v1, [v0])
    assert registry.rollback() == v0
    assert (registry.serving(), registry.history()) == (v0, [])
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.serving() == v0


def test_rollback_with_nothing_ever_served_is_refused(tmp_path):
    registry, _ = registry_with(tmp_path, 1)
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.serving() is None


def test_a_corrupt_pointer_is_reported_and_a_promotion_repairs_it(tmp_path):
    registry, (v0,) = registry_with(tmp_path, 1)
    registry.pointer_path.write_text('{"version": ')
    with pytest.raises(RegistryError, match=r"serving\.json"):
        registry.serving()
    registry.promote(v0)
    assert (registry.serving(), registry.history()) == (v0, [])


def test_a_reader_never_sees_a_missing_or_partial_pointer_while_promotions_happen(tmp_path):
    registry, versions = registry_with(tmp_path, 3)
    registry.promote(versions[0])
    finished = threading.Event()
    reads: list[int] = []
    problems: list[str] = []

    def read_until_finished() -> None:
        count = 0
        while True:
            last_round = finished.is_set()
            try:
                pointer = json.loads(registry.pointer_path.read_text())
                if pointer["version"] not in versions or not set(pointer["history"]) <= set(versions):
                    problems.append(f"unexpected pointer {pointer}")
                if LocalRegistry(registry.root).serving() not in versions:
                    problems.append("serving() named no registered version")
            except Exception as exc:  # noqa: BLE001 - every failure to read is what this test looks for
                problems.append(repr(exc))
            count += 1
            if last_round:
                reads.append(count)
                return

    readers = [threading.Thread(target=read_until_finished) for _ in range(3)]
    for reader in readers:
        reader.start()
    for step in range(150):
        registry.promote(versions[step % 3])
        if step % 10 == 9:
            registry.rollback()
    finished.set()
    for reader in readers:
        reader.join()

    assert problems == []
    assert len(reads) == len(readers) and min(reads) >= 1


def test_concurrent_promotions_lose_no_history(tmp_path):
    registry, versions = registry_with(tmp_path, 4)
    registry.promote(versions[0])
    changes: list[int] = []

    def promote_many(seed: int) -> None:
        rng = random.Random(seed)
        changed = 0
        for _ in range(60):
            version = rng.choice(versions)
            changed += registry.promote(version) != version
        changes.append(changed)

    writers = [threading.Thread(target=promote_many, args=(seed,)) for seed in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert len(registry.history()) == sum(changes), "every promotion that changed the serving version left one history entry"


# The command line.

def run(capsys, *argv: str, **settings: str) -> tuple[int, str, str]:
    code = main(list(argv), **settings)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_an_aligned_table_marking_the_serving_version(tmp_path, capsys):
    registry, (v0, v1) = registry_with(tmp_path, 2)
    registry.promote(v0)
    registry.promote(v1)

    code, out, _ = run(capsys, "--registry", str(registry.root), "list")

    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if "VERSION" in line)
    rows = lines[lines.index(header) + 1:][:2]
    assert [row.split()[0] for row in rows] == [v0, "*"], "oldest first, the serving one marked"
    assert {row.index(v0 if v0 in row else v1) for row in rows} == {header.index("VERSION")}, "columns line up"
    assert "passed" in rows[0] and "0.8000" in rows[0]
    assert f"rollback returns to {v0}" in out


def test_promote_and_rollback_say_what_changed(tmp_path, capsys):
    registry, (v0, v1) = registry_with(tmp_path, 2)
    registry.promote(v0)

    assert run(capsys, "--registry", str(registry.root), "promote", v1) == (0, f"promoted {v1} (was {v0})\n", "")
    assert run(capsys, "--registry", str(registry.root), "rollback") == (0, f"rolled back to {v0} (was {v1})\n", "")
    assert run(capsys, "--registry", str(registry.root), "promote", v0) == (0, f"{v0} already serves; nothing changed\n", "")
    assert (registry.serving(), registry.history()) == (v0, [])


@pytest.mark.parametrize("argv, message", [
    (["promote", "20990101T000000Z-0000000000"], "unknown version 20990101T000000Z-0000000000"),
    (["rollback"], "nothing to roll back to"),
])
def test_refused_commands_exit_2_with_one_line(tmp_path, capsys, argv, message):
    registry, (v0,) = registry_with(tmp_path, 1)
    registry.promote(v0)

    code, out, err = run(capsys, "--registry", str(registry.root), *argv)

    assert (code, out) == (2, "")
    assert message in err and err.count("\n") == 1
    assert registry.serving() == v0


def test_a_missing_registry_exits_2(tmp_path, capsys):
    code, _, err = run(capsys, "--registry", str(tmp_path / "nowhere"), "list")
    assert code == 2
    assert f"no registry at {tmp_path / 'nowhere'}" in err and "make train" in err


def test_without_registry_the_model_uri_setting_is_used(tmp_path, capsys):
    registry, (v0,) = registry_with(tmp_path, 1)
    assert run(capsys, "promote", v0, model_uri=str(registry.root)) == (0, f"promoted {v0} (was nothing)\n", "")
    assert registry.serving() == v0


def test_a_model_uri_naming_a_file_is_not_a_registry(tmp_path, capsys):
    code, _, err = run(capsys, "list", model_uri=str(tmp_path / "model.joblib"))
    assert code == 2
    assert "not a registry" in err and "--registry" in err


def test_python_dash_m_model_registry_runs_the_command_line(tmp_path):
    registry, (v0,) = registry_with(tmp_path, 1)
    done = subprocess.run([sys.executable, "-m", "model.registry", "--registry", str(registry.root), "promote", v0],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (0, f"promoted {v0} (was nothing)\n"), done.stderr
    assert registry.serving() == v0


class FakeMlflowRegistry:
    """Stands in for model.mlflow_registry: one model whose alias "champion" is on version 2."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def module(self) -> types.ModuleType:
        module = types.ModuleType("model.mlflow_registry")
        module.parse_models_uri = lambda uri: tuple(uri.removeprefix("models:/").split("@"))  # type: ignore[attr-defined]
        module.list_versions = self.list_versions  # type: ignore[attr-defined]
        module.set_alias = lambda *args: self.calls.append(("set_alias", *args))  # type: ignore[attr-defined]
        module.rollback_alias = self.rollback_alias  # type: ignore[attr-defined]
        return module

    def rollback_alias(self, *args: str) -> str:
        self.calls.append(("rollback_alias", *args))
        return "1"

    def list_versions(self, tracking_uri: str, name: str) -> list[dict[str, Any]]:
        return [{"version": "1", "aliases": []}, {"version": "2", "aliases": ["champion"], "roc_auc": 0.8}]


@pytest.fixture
def mlflow_registry(monkeypatch) -> FakeMlflowRegistry:
    fake = FakeMlflowRegistry()
    module = fake.module()
    monkeypatch.setitem(sys.modules, "model.mlflow_registry", module)
    # `from model import mlflow_registry` finds the package attribute first once the real one was imported.
    monkeypatch.setattr(model_package, "mlflow_registry", module, raising=False)
    return fake


def test_an_mlflow_alias_is_promoted_and_rolled_back_through_mlflow_registry(capsys, mlflow_registry):
    settings = {"model_uri": "models:/purchase-model@champion", "mlflow_tracking_uri": "http://mlflow:5000"}

    assert run(capsys, "promote", "3", **settings) == (0, "promoted 3 to purchase-model@champion (was 2)\n", "")
    assert run(capsys, "rollback", **settings) == (0, "rolled back purchase-model@champion to 1 (was 2)\n", "")
    assert mlflow_registry.calls == [
        ("set_alias", "http://mlflow:5000", "purchase-model", "champion", "3"),
        ("rollback_alias", "http://mlflow:5000", "purchase-model", "champion"),
    ]


def test_an_mlflow_list_marks_the_version_holding_the_alias(capsys, mlflow_registry):
    code, out, _ = run(capsys, "list", model_uri="models:/purchase-model@champion", mlflow_tracking_uri="http://mlflow:5000")
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if "VERSION" in line)
    assert header.split() == ["VERSION", "ALIASES", "ROC", "AUC"]
    assert [line.split() for line in lines[lines.index(header) + 1:][:2]] == [["1"], ["*", "2", "champion", "0.8000"]]


def test_an_mlflow_registry_needs_a_tracking_uri(capsys, mlflow_registry):
    code, _, err = run(capsys, "list", model_uri="models:/purchase-model@champion", mlflow_tracking_uri="")
    assert code == 2
    assert "MLFLOW_TRACKING_URI" in err
    assert mlflow_registry.calls == []


def test_an_unreachable_mlflow_server_is_one_line_and_exit_1(capsys, mlflow_registry, monkeypatch):
    class Unavailable(PredictionError):
        retriable = True

    def unreachable(*args: str) -> list[dict[str, Any]]:
        raise Unavailable("MLflow at http://mlflow:5000 is unavailable (listing the versions of purchase-model): refused")

    monkeypatch.setattr(sys.modules["model.mlflow_registry"], "list_versions", unreachable)
    code, out, err = run(capsys, "list", model_uri="models:/purchase-model@champion", mlflow_tracking_uri="http://mlflow:5000")
    assert (code, out) == (1, "")
    assert "is unavailable" in err and err.count("\n") == 1
