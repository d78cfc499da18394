"""A real MLflow tracking server for tests: a SQLite store and an artifact directory in a temporary directory,
on 127.0.0.1 and a free port, stopped with all its processes when the test is done.

The server proxies artifacts (`mlflow-artifacts:/` URIs), so clients upload and download them over HTTP as they
would from a remote server, never through the server's directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tools.chaos.tcp_proxy import free_port

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


class MlflowServerError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


@contextlib.contextmanager
def running_mlflow_server(tmp_path: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start `mlflow server` with its files under `tmp_path`, yield its URI once it answers, then stop it."""
    home = tmp_path / "mlflow-server"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # The server's background job runner (a pool of consumer processes) serves GenAI features tests never use.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", str(home / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        # Its own process group: the server runs uvicorn as a child, and stopping the group stops them all.
        process = subprocess.Popen(command, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_until_healthy(uri, process, log_path, start_timeout_s)
        yield uri
    finally:
        _stop(process)


def _wait_until_healthy(uri: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MlflowServerError(f"mlflow server exited with code {process.returncode} before answering:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        time.sleep(0.2)
    raise MlflowServerError(f"mlflow server at {uri} did not answer within {timeout_s:.0f} s:\n{_tail(log_path)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its children may still be finishing: make sure none outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def _tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
