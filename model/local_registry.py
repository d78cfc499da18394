"""A local model registry: every accepted model version kept side by side, and a pointer to the one that serves.

    <registry>/versions/<version>/model.joblib, model.json (+ report files)
    <registry>/serving.json    {"version": "<version>", "history": ["<previous>", "<one before>", ...]}

Readers take no lock: the pointer is replaced atomically and a version directory appears only when complete,
so a reader sees the old state or the new one, never half of either. Writers of the pointer (promote,
rollback) hold a lock file, so two of them cannot lose each other's history.

    python -m model.registry [--registry DIR] list | promote VERSION | rollback   (see model/registry.py)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from errors import SetupError

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.joblib"
METADATA_NAME = "model.json"
POINTER_NAME = "serving.json"
VERSIONS_DIR = "versions"
# Version names become directory names: no path separators, and no leading dot (those are work in progress).
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CHUNK_BYTES = 1 << 20
# What each gate recorded in model.json limits, computed from the recorded metrics.
GATE_MEASURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "max_auc_gap_to_oracle": lambda metrics: metrics["oracle_roc_auc"] - metrics["roc_auc"],
    "max_ece": lambda metrics: metrics["ece"],
}


class RegistryError(SetupError):
    """A registry operation that cannot be done as asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    trained_at: str | None
    estimator: str | None
    roc_auc: float | None
    ece: float | None
    gates_passed: bool | None  # None: model.json records no gates, or gates this registry cannot check
    path: Path


def gates_passed(metadata: dict[str, Any]) -> bool | None:
    metrics, gates = metadata.get("metrics"), metadata.get("gates")
    if not isinstance(metrics, dict) or not isinstance(gates, dict) or not gates:
        return None
    try:
        return all(GATE_MEASURES[name](metrics) <= float(limit) for name, limit in gates.items())
    except (KeyError, TypeError, ValueError):
        return None


class LocalRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS_DIR
        self.pointer_path = self.root / POINTER_NAME

    def register(self, model_path: Path, extra_files: Sequence[Path] = ()) -> str:
        """Copy a saved model (and its model.json and reports) in as a new version; return the version.

        Refuses a model.json without a version or checksum, an artifact whose SHA-256 differs from the
        recorded one, and a version already registered. Registering does not make the version serve.
        """
        metadata_file = model_path.with_suffix(".json")
        metadata = _read_json(metadata_file)
        version = self._checked_name(metadata.get("version"), f"the version in {metadata_file}")
        recorded = metadata.get("artifact_sha256")
        if not isinstance(recorded, str) or not recorded:
            raise RegistryError(f"{metadata_file} records no artifact_sha256: save the model with model.artifact.save_model")
        target = self.version_dir(version)
        if target.exists():
            raise RegistryError(f"version {version} is already registered in {self.root}")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        incoming = self.versions_dir / f".incoming-{secrets.token_hex(8)}"
        incoming.mkdir()
        try:
            actual = _copy_synced(model_path, incoming / ARTIFACT_NAME)
            if actual != recorded:
                raise RegistryError(f"{model_path} has SHA-256 {actual} but {metadata_file} records {recorded}:"
                                    " the file changed after it was saved; train again")
            _copy_synced(metadata_file, incoming / METADATA_NAME)
            for extra in extra_files:
                _copy_synced(extra, incoming / extra.name)
            _fsync_dir(incoming)
            try:
                incoming.rename(target)
            except OSError:
                raise RegistryError(f"version {version} is already registered in {self.root}") from None
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        _fsync_dir(self.versions_dir)
        log.info("registered version %s in %s", version, self.root)
        return version

    def versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first (names start with their UTC training time)."""
        if not self.versions_dir.is_dir():
            return []
        names = sorted(entry.name for entry in os.scandir(self.versions_dir) if entry.is_dir() and VERSION_NAME.fullmatch(entry.name))
        return [self._describe(name) for name in names]

    def serving(self) -> str | None:
        return self._read_pointer()[0]

    def history(self) -> list[str]:
        """The versions that served before, most recent first: what `rollback` returns to, in order."""
        return self._read_pointer()[1]

    def promote(self, version: str) -> str | None:
        """Make `version` serve; return the version that served before (None: none did)."""
        self._require(version)
        with self._writing():
            try:
                current, history = self._read_pointer()
            except RegistryError as exc:
                log.warning("%s; starting a new history", exc)
                current, history = None, []
            if current == version:
                log.info("%s already serves; nothing changed", version)
                return current
            self._write_pointer(version, [current, *history] if current else history)
        log.info("promoted %s (was %s)", version, current or "nothing")
        return current

    def rollback(self) -> str:
        """Make the version that served before serve again; return it."""
        with self._writing():
            current, history = self._read_pointer()
            if not history:
                raise RegistryError(f"nothing to roll back to: no version served in {self.root} before {current or 'now'}")
            previous = history[0]
            self._require(previous)
            self._write_pointer(previous, history[1:])
        log.info("rolled back to %s (was %s)", previous, current)
        return previous

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / self._checked_name(version, "a version name")

    def artifact_path(self, version: str) -> Path:
        return self.version_dir(version) / ARTIFACT_NAME

    def _require(self, version: str) -> None:
        if not self.artifact_path(version).is_file():
            raise RegistryError(f"unknown version {version} in {self.root}: `python -m model.registry list` shows the registered ones")

    def _describe(self, version: str) -> VersionInfo:
        try:
            metadata = _read_json(self.version_dir(version) / METADATA_NAME)
        except RegistryError:
            metadata = {}
        metrics = metadata.get("metrics")
        if not isinstance(metrics, dict):
            metrics = {}
        return VersionInfo(
            version=version,
            trained_at=_optional(metadata.get("trained_at"), str),
            estimator=_optional(metadata.get("estimator"), str),
            roc_auc=_optional(metrics.get("roc_auc"), float),
            ece=_optional(metrics.get("ece"), float),
            gates_passed=gates_passed(metadata),
            path=self.version_dir(version),
        )

    def _read_pointer(self) -> tuple[str | None, list[str]]:
        try:
            pointer = json.loads(self.pointer_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, []
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {self.pointer_path} ({exc}): promote a version to rewrite it") from None
        version = pointer.get("version") if isinstance(pointer, dict) else None
        history = pointer.get("history", []) if isinstance(pointer, dict) else None
        if not (_is_version_name(version) and isinstance(history, list) and all(map(_is_version_name, history))):
            raise RegistryError(f"{self.pointer_path} is not a serving pointer: promote a version to rewrite it")
        return version, history

    def _write_pointer(self, version: str, history: list[str]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".serving-", suffix=".tmp", dir=self.root)
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the pointer from a service running as another user
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"version": version, "history": history}, file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.pointer_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def _checked_name(self, name: object, what: str) -> str:
        if not _is_version_name(name):
            raise RegistryError(f"{what} is {name!r}, not a version name (letters, digits, '.', '_', '-')")
        return name


def _is_version_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and VERSION_NAME.fullmatch(name) is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return document


def _optional(value: object, kind: type[Any]) -> Any:
    return kind(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


def _copy_synced(source: Path, target: Path) -> str:
    """Copy a file and flush it to disk; return the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    with source.open("rb") as reader, target.open("xb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    # A rename or replace is durable only once the directory holding it is flushed too.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

