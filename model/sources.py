"""Where the served model comes from: MODEL_URI turned into a source that says what it points at, and fetches it.

MODEL_URI is one of
- a `.joblib` file, with model.json beside it;
- a local registry directory (model/local_registry.py); a path that does not exist yet is a registry with nothing in it;
- `models:/NAME@ALIAS` in an MLflow registry (model/mlflow_registry.py).

A relative path is relative to the project root, so every program finds the same model. A source's
fingerprint is cheap, so a caller can poll it and fetch (and load) only when it changes.
"""

from __future__ import annotations

from pathlib import Path

from config.values import MLFLOW_MODEL_PREFIX, PROJECT_ROOT, ConfigError
from errors import SetupError
from model.candidate import Candidate, ModelSource
from model.local_registry import LocalRegistry


class NoModelYet(SetupError):
    """The source points at nothing yet: no version serves from the registry, or the file is not there."""


class FileSource:
    """One model.joblib; it changes when the file is rewritten or replaced."""

    def __init__(self, path: Path, uri: str | None = None) -> None:
        self.path = path
        self.uri = str(path) if uri is None else uri

    def fingerprint(self) -> str:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise NoModelYet(f"no model at {self.path}: train one with `make train`") from None
        return f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}"

    def fetch(self) -> Candidate:
        # Fingerprinted before it is read: a rewrite in between shows as a change at the next poll.
        return Candidate(self.path, None, self.fingerprint(), f"file {self.uri}")


class RegistrySource:
    """The version a local registry's serving.json points at; it changes on promote and rollback."""

    def __init__(self, root: Path, uri: str | None = None) -> None:
        self.registry = LocalRegistry(root)
        self.uri = str(root) if uri is None else uri

    def fingerprint(self) -> str:
        return self._serving()

    def fetch(self) -> Candidate:
        version = self._serving()
        # The registry records the checksum in the version's model.json, which the loader reads anyway.
        return Candidate(self.registry.artifact_path(version), None, version, f"version {version} of registry {self.uri}")

    def _serving(self) -> str:
        version = self.registry.serving()
        if version is None:
            hint = " or promote a registered one with `python -m model.registry promote VERSION`" if self.registry.versions() else ""
            raise NoModelYet(f"no version serves from {self.registry.root}: train one with `make train`{hint}")
        return version


def is_models_uri(uri: str) -> bool:
    return uri.strip().startswith(MLFLOW_MODEL_PREFIX)


def local_path(uri: str) -> Path:
    path = Path(uri.strip()).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def open_model_source(uri: str, *, mlflow_tracking_uri: str = "", cache_dir: Path | None = None) -> ModelSource:
    """The source MODEL_URI names; raises `ConfigError` for a URI that cannot name one."""
    uri = uri.strip()
    if not uri:
        raise ConfigError("MODEL_URI", "must name a .joblib file, a registry directory or models:/NAME@ALIAS")
    if is_models_uri(uri):
        if not mlflow_tracking_uri.strip():
            raise ConfigError("MLFLOW_TRACKING_URI", f"must be set to the MLflow tracking server when MODEL_URI is {uri}")
        from model.mlflow_registry import MlflowSource  # imports mlflow, which only this kind of URI needs

        return MlflowSource(uri, tracking_uri=mlflow_tracking_uri, cache_dir=cache_dir)
    path = local_path(uri)
    if path.is_dir():
        return RegistrySource(path, uri)
    if path.suffix == ".joblib":
        return FileSource(path, uri)
    if path.exists():
        raise ConfigError("MODEL_URI", f"{path} is neither a .joblib file nor a registry directory", uri)
    return RegistrySource(path, uri)
