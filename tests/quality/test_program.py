"""quality_monitor.py as a person runs it: --help and --check-config at once, a bad setting or a taken port
stops it with exit code 2 naming the cause, and SIGTERM while Kafka is away stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tools.chaos.tcp_proxy import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"aiokafka", "sklearn", "pandas", "numpy"}


def run(*args: str, timeout_s: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s)


def imported_packages(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")}


def test_help_and_check_config_answer_without_loading_kafka_or_the_model_libraries():
    helped = run("-X", "importtime", "quality_monitor.py", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage:")
    assert "--snapshot-interval-s" in helped.stdout
    checked = run("-X", "importtime", "quality_monitor.py", "--check-config", QUALITY_TOPIC="checked-quality")
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "QUALITY_TOPIC=checked-quality  # from the environment" in checked.stdout.splitlines()
    assert imported_packages(helped.stderr) & HEAVY == set()
    assert imported_packages(checked.stderr) & HEAVY == set()


def test_a_purchases_topic_that_is_the_output_topic_stops_it_with_exit_code_2_naming_the_setting():
    result = run("quality_monitor.py", PURCHASES_TOPIC="same", OUTPUT_TOPIC="same", LOG_FORMAT="json")
    assert result.returncode == 2
    assert "PURCHASES_TOPIC" in result.stderr and "must differ from OUTPUT_TOPIC" in result.stderr


def test_a_taken_metrics_port_stops_it_with_exit_code_2_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("quality_monitor.py", QUALITY_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1",
                     KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", LOG_FORMAT="json")
    assert result.returncode == 2
    assert "QUALITY_METRICS_PORT" in result.stderr


def test_sigterm_while_kafka_is_away_stops_it_cleanly_and_health_answers_meanwhile():
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "QUALITY_METRICS_PORT": str(port),
           "METRICS_HOST": "127.0.0.1", "LOG_FORMAT": "json", "RETRY_BACKOFF_MAX_MS": "500"}
    process = subprocess.Popen([sys.executable, "quality_monitor.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        health = None
        deadline = time.monotonic() + 60
        while health is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.loads(response.read())
            except OSError:
                time.sleep(0.2)
        assert health == {"status": "starting"}
        time.sleep(1.5)  # a few retries
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    messages = [json.loads(line)["message"] for line in output.splitlines() if line.startswith("{")]
    assert any("Kafka unavailable while creating topics" in m and "next try in" in m for m in messages), output[-3000:]
