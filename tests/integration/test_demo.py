"""tools/demo.sh, as `make demo` runs it after training, on a machine whose cores are all busy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.service_process import REPO_ROOT

pytestmark = pytest.mark.integration

DEMO_EVENTS = 150
# Longer than the demo may take; each busy loop also ends by itself after this, whatever happens.
BUSY_S = 240
BUSY_LOOP = f"import time\nend = time.monotonic() + {BUSY_S}\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture
def busy_cores():
    """One spinning process per core for the duration of the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 1)]
    yield len(spinners)
    for spinner in spinners:
        spinner.kill()
        spinner.wait(timeout=10)


def test_the_demo_passes_with_every_core_busy_and_its_log_survives_redirection(pipeline_env, busy_cores, tmp_path):
    """With a busy loop on every core, demo.sh waits for readiness, kills the service mid-stream and starts it
    again, retrains and promotes a model under load, gets exactly one prediction for every valid event across
    both, counts them per model version, ends with a latency summary in ms, and its output redirected to a
    file holds all of it."""
    log_path = tmp_path / "demo.log"
    # The demo promotes its retrained model: into a copy, so the session's registry stays as the other tests expect.
    registry = tmp_path / "registry"
    shutil.copytree(pipeline_env["MODEL_URI"], registry)
    env = {**os.environ, **pipeline_env, "MODEL_URI": str(registry), "DEMO_EVENTS": str(DEMO_EVENTS),
           "DEMO_LOG_DIR": str(tmp_path / "logs")}
    env.pop("METRICS_PORT", None)  # the demo picks a free port of its own
    with log_path.open("wb") as log:
        result = subprocess.run(
            ["bash", "tools/demo.sh"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=BUSY_S - 20
        )
    text = log_path.read_text(errors="replace")
    assert result.returncode == 0, text[-4000:]
    lines = text.splitlines()
    assert lines[0].startswith("== starting the prediction service"), "the start of the log was lost"
    assert any(line.startswith("service ready after") for line in lines)
    sent = re.search(r"sent (\d+) events to .*: (\d+) valid, (\d+) invalid", text)
    assert sent and int(sent[1]) == DEMO_EVENTS
    valid_sent = sum(int(valid) for valid in re.findall(r"sent \d+ events to .*: (\d+) valid", text))
    last = lines[-1]
    match = re.fullmatch(
        r"demo OK: (\d+) valid events sent, (\d+) predictions received, (\d+) events predicted twice "
        r"\(exactly_once, the service killed with SIGKILL mid-stream and restarted, a new model promoted under load\); "
        r"latency after the event p50 \d+ ms, p95 \d+ ms, p99 \d+ ms, max \d+ ms",
        last,
    )
    assert match, last
    assert int(match[1]) == valid_sent > int(sent[2]) and int(match[2]) == int(match[1]) and int(match[3]) == 0
    assert len(re.findall(r"(?m)^user +\d+ +p=", text)) >= valid_sent, "every prediction is printed"
    per_version = [int(n) for n in re.findall(r"(?m)^  (\d+) model \S+$", text)]
    assert len(per_version) == 2 and sum(per_version) == valid_sent, "predictions of the old and the new version"
