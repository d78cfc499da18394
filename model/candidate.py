"""What a model source hands over: a local artifact to load, with what its registry recorded of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    artifact_path: Path  # a local model.joblib (downloaded first for MLflow)
    expected_sha256: str | None  # what the registry recorded at registration (None: use model.json's)
    fingerprint: str  # identifies what the source points at
    label: str  # for logs, e.g. "version 20261205T101500Z-ab12cd34ef of registry model/registry"


class ModelSource(Protocol):
    uri: str

    def fingerprint(self) -> str:
        """Cheap; changes when the source points at something else. May raise OSError or a connection error."""

    def fetch(self) -> Candidate:
        """May download; may raise what `fingerprint` raises."""
