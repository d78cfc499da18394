"""The programs answer --help and --check-config without loading the Kafka client or the data stack."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"aiokafka", "sklearn", "pandas", "numpy"}
PROGRAMS = ["producer.py", "consumer.py", "prediction_service.py", "quality_monitor.py"]


def run_with_importtime(script: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Runs the program and returns its result and the top-level packages it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", script, *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=60,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    # config's own dependency is always loaded; missing, it means the output was not parsed.
    assert "dotenv" in imported, result.stderr[-2000:]
    return result, imported


@pytest.mark.parametrize("script", PROGRAMS)
def test_help_imports_no_heavy_library(script):
    """--help exits 0 with the usage, and neither aiokafka, sklearn, pandas nor numpy was imported."""
    result, imported = run_with_importtime(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
    assert imported & HEAVY == set()


@pytest.mark.parametrize("script", PROGRAMS)
def test_check_config_prints_masked_settings_and_exits(script):
    """--check-config prints every setting with the password masked, exits 0 and loads no Kafka client."""
    result, imported = run_with_importtime(script, "--check-config", MYSQL_PASSWORD="pa#ss$word", INPUT_TOPIC="checked")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "INPUT_TOPIC=checked  # from the environment" in result.stdout.splitlines()
    assert "MYSQL_PASSWORD=***  # from the environment" in result.stdout.splitlines()
    assert "pa#ss$word" not in result.stdout + result.stderr
    assert imported & HEAVY == set()
