"""Runs stack/lib.sh's shell functions and the stack scripts from a test, in an environment the test controls."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = REPO_ROOT / "stack"
LIB = STACK / "lib.sh"
# Settings the developer may have exported would leak into what the stack reads.
PASSED_ON = ("PATH", "HOME", "LANG", "JAVA_HOME")


def clean_environment(**extra: str) -> dict[str, str]:
    return {**{name: os.environ[name] for name in PASSED_ON if name in os.environ}, **extra}


def run_lib(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Sources lib.sh, then runs `script` with `args` as "$@"."""
    return subprocess.run(
        ["bash", "-c", f'source "{LIB}" && {script}', "lib.sh", *args],
        env=clean_environment() if env is None else env, capture_output=True, text=True, timeout=60,
    )


def run_stack(script: str, env: dict[str, str], *args: str, stack: Path = STACK, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs stack/`script` (up.sh, down.sh, status.sh) with exactly `env`."""
    return subprocess.run(["bash", str(stack / script), *args], env=env, capture_output=True, text=True, timeout=timeout)


def free_ports(count: int) -> list[str]:
    """`count` distinct TCP ports nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [str(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def private_stack_environment(stack_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a stack of its own: `stack_dir` and four free ports, then `extra`."""
    ports = dict(zip(("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "MYSQL_PORT", "KAFKA_SASL_SSL_PORT"), free_ports(4), strict=True))
    return clean_environment(STACK_DIR=str(stack_dir), **{**ports, **extra})
