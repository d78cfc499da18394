"""producer.py and consumer.py as a person runs them, around a running service."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.integration.kafka_helpers import read_topic
from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration


def run_program(script: str, env: dict[str, str], *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout_s,
    )


def at_least(count: int) -> Callable[[list], bool]:
    """A read_topic condition: `count` records or more."""
    return lambda records: len(records) >= count


def test_producer_service_and_consumer_work_together(pipeline_env, start_service):
    """The producer reports valid and invalid counts; the consumer prints one line per valid event and a summary."""
    service = start_service()
    produced = run_program(
        "producer.py", pipeline_env, "--count", "60", "--rate", "0", "--invalid-ratio", "0.2", "--seed", "3", "--users", "300"
    )
    assert produced.returncode == 0, produced.stderr
    summary = produced.stdout.strip().splitlines()[-1]
    counts = re.search(r"(\d+) valid, (\d+) invalid", summary)
    assert counts, summary
    valid, invalid = (int(n) for n in counts.groups())
    assert valid + invalid == 60 and invalid > 0

    consumed = run_program("consumer.py", pipeline_env, "--from-beginning", "--count", str(valid))
    assert consumed.returncode == 0, consumed.stderr
    lines = [line for line in consumed.stdout.splitlines() if re.match(r"user\s+\d+\s+p=0\.\d{3}|user\s+\d+\s+p=1\.000", line)]
    assert len(lines) == valid
    assert f"received {valid} records" in consumed.stdout

    dead = run_program("consumer.py", pipeline_env, "--dead-letters", "--from-beginning", "--count", str(invalid))
    assert dead.returncode == 0, dead.stderr
    assert len(re.findall(r"\]@\d+  (not_utf8|not_json|invalid_field|invalid_pages): ", dead.stdout)) == invalid
    assert service.stop() == 0


def test_the_producer_refuses_a_bad_setting_by_name(pipeline_env):
    """A malformed KAFKA_BOOTSTRAP_SERVERS stops the producer with exit code 2 and the variable's name."""
    result = run_program("producer.py", {**pipeline_env, "KAFKA_BOOTSTRAP_SERVERS": "no-port-here"}, "--count", "1")
    assert result.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_the_consumer_stops_after_an_idle_timeout(pipeline_env):
    """With nothing to read, --idle-timeout-s ends the consumer with a zero-record summary."""
    result = run_program("consumer.py", pipeline_env, "--idle-timeout-s", "1")
    assert result.returncode == 0, result.stderr
    assert "received 0 records" in result.stdout


def test_the_live_view_tallies_predictions_dead_letters_and_models(pipeline_env, pipeline_settings, start_service):
    """consumer.py --live --from-beginning counts every prediction and dead letter a producer run caused, by kind and model."""
    service = start_service()
    produced = run_program(
        "producer.py", pipeline_env, "--count", "40", "--rate", "0", "--invalid-ratio", "0.25", "--seed", "4", "--users", "300"
    )
    assert produced.returncode == 0, produced.stderr
    counts = re.search(r"(\d+) valid, (\d+) invalid", produced.stdout)
    assert counts, produced.stdout
    valid, invalid = (int(n) for n in counts.groups())
    for topic, wanted in ((pipeline_settings.output_topic, valid), (pipeline_settings.dlq_topic, invalid)):
        assert len(asyncio.run(read_topic(pipeline_settings, topic, at_least(wanted), 60))) == wanted

    live = run_program("consumer.py", {**pipeline_env, "COLUMNS": "120"}, "--live", "--from-beginning", "--idle-timeout-s", "3")
    assert live.returncode == 0, live.stderr
    assert f"{valid} predictions," in live.stdout and "latency (ms)" in live.stdout
    assert re.search(rf"│ \d{{8}}T\d{{6}}Z-\w+ +│ +{valid} │", live.stdout), "one model version served them all"
    by_kind = re.findall(r"│ (not_utf8|not_json|invalid_field|invalid_pages) +│ +(\d+) │", live.stdout)
    assert sum(int(n) for _, n in by_kind) == invalid
    assert live.stdout.strip().splitlines()[-1].startswith(f"received {valid} predictions and {invalid} dead letters")
    assert service.stop() == 0
