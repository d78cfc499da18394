"""Runs prediction_service.py as a real process, the way a user starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "prediction_service.py"], cwd=REPO_ROOT, env={**os.environ, **self.env},
            stdout=log_file, stderr=subprocess.STDOUT,
        )
        log_file.close()
        return self

    def log_entries(self) -> list[dict]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"message": line})
        return entries

    def messages(self) -> list[str]:
        return [entry.get("message", "") for entry in self.log_entries()]

    def wait_for_message(self, fragment: str, timeout_s: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(fragment in message for message in self.messages()) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode} before logging {fragment!r}:\n{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"no {fragment!r} in the service log after {timeout_s} s:\n{self.tail()}")

    def metric_total(self, name: str) -> float:
        """The sum of a metric's samples on the service's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.env['METRICS_PORT']}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]
        assert samples, f"no {name} in /metrics"
        return sum(sample.value for sample in samples)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL: no chance to commit or close anything."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
