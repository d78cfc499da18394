"""The fault harness's reduced run (`python -m tools.chaos --reduced`), one processing guarantee at a time.

It brings its own broker and MariaDB (from the local stack's cached Kafka jars), so it neither
needs nor touches the shared ones; its JSON is what the assertions read.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

# The harness bounds each of its waits; this only ends a run that hangs all the same.
RUN_TIMEOUT_S = 420
# After SIGTERM the harness kills everything it started; this long is plenty for that.
CLEANUP_S = 120


def run_reduced(guarantee: str, tmp_path: Path, *options: str) -> tuple[int, str, dict[str, Any]]:
    """Run the harness; returns its exit code, its output and this guarantee's results."""
    results, log_path = tmp_path / "results.json", tmp_path / "chaos.log"
    with log_path.open("wb") as log:
        harness = subprocess.Popen(
            [sys.executable, "-m", "tools.chaos", "--reduced", "--guarantee", guarantee, "--json", str(results), *options],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        code = harness.wait(timeout=RUN_TIMEOUT_S)
    finally:
        # Not a SIGKILL first: the harness's brokers and instances would outlive it.
        if harness.poll() is None:
            harness.send_signal(signal.SIGTERM)
            try:
                harness.wait(timeout=CLEANUP_S)
            except subprocess.TimeoutExpired:
                harness.kill()
    output = log_path.read_text(errors="replace")
    assert results.is_file(), f"no results from the harness (exit {code}):\n{output[-4000:]}"
    return code, output, json.loads(results.read_text())["modes"][guarantee]


@pytest.mark.timeout(RUN_TIMEOUT_S + CLEANUP_S + 30)
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_under_faults_no_event_is_lost_every_probability_is_exact_and_exactly_once_doubles_none(guarantee, tmp_path):
    """Through kill -9s, a zombie, a scale-in, and a killed broker and a killed or slow MySQL, every valid event
    gets a prediction equal to the offline one to 1e-9 and every invalid one a dead letter of its kind;
    under exactly_once none of them twice."""
    code, output, result = run_reduced(guarantee, tmp_path)
    assert_passed(guarantee, code, output, result)
    assert result["logins"] == ["PLAINTEXT as User:ANONYMOUS (no KAFKA_SASL_USERNAME)"], output[-4000:]


@pytest.mark.timeout(RUN_TIMEOUT_S + CLEANUP_S + 30)
def test_on_a_secured_listener_each_program_logs_in_as_its_own_principal_and_the_faults_lose_nothing(tmp_path):
    """The same faults with the instances and the load on a SASL_SSL listener (SCRAM-SHA-512, the run's own CA),
    under the StandardAuthorizer with only the ACLs the secured stack grants: reconnecting after a killed broker
    logs in again, and exactly once still holds."""
    code, output, result = run_reduced("exactly_once", tmp_path, "--secured")
    assert result["logins"] == ["SASL_SSL as User:prediction-service"], output[-4000:]
    assert_passed("exactly_once", code, output, result)


def assert_passed(guarantee: str, code: int, output: str, result: dict[str, Any]) -> None:
    tail = output[-4000:]
    assert result["caught_up"], tail
    assert result["not_delivered"] == 0, tail
    assert result["missing"] == 0, tail
    assert result["wrong_probabilities"] == 0 and result["unexpected_predictions"] == 0, tail
    assert result["dead_letters_missing"] == 0 and result["dead_letters_wrong_kind"] == 0, tail
    assert result["unexpected_dead_letters"] == 0, tail
    if guarantee == "exactly_once":
        assert result["duplicate_predictions"] == 0 and result["duplicate_dead_letters"] == 0, tail
    assert code == 0, tail
