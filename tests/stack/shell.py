"""Runs stack/lib.sh's shell functions from a test, in an environment the test controls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LIB = REPO_ROOT / "stack" / "lib.sh"
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
