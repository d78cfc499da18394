"""tools/demo.sh, as `make demo` runs it after training, on a machine whose cores are all busy."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import STORE_USERS, delete_topics, loaded_store
from tests.integration.service_process import REPO_ROOT
from tools.live_quality import MIN_LABELLED

pytestmark = pytest.mark.integration

DEMO_EVENTS = 150
# Longer than the demo may take; each busy loop also ends by itself after this, whatever happens.
BUSY_S = 300
BUSY_LOOP = f"import time\nend = time.monotonic() + {BUSY_S}\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture
def busy_cores():
    """One spinning process per core for the duration of the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 1)]
    yield len(spinners)
    for spinner in spinners:
        spinner.kill()
        spinner.wait(timeout=10)


@pytest.fixture
def demo_env(pipeline_env, stack_settings, tmp_path) -> Iterator[dict[str, str]]:
    """The pipeline's topics, plus the purchases' and the quality snapshots' topics and the sink's group, all deleted
    afterwards; a store of its own, since the purchase sink writes into it; and a copy of the session's registry,
    since the demo promotes its retrained model."""
    run = uuid.uuid4().hex[:8]
    registry = tmp_path / "registry"
    shutil.copytree(pipeline_env["MODEL_URI"], registry)
    env = {**pipeline_env, "MODEL_URI": str(registry), "PURCHASES_TOPIC": f"it-{run}-purchases",
           "QUALITY_TOPIC": f"it-{run}-quality", "PURCHASES_GROUP_ID": f"it-{run}-sink", "SHADOW_OUTPUT_TOPIC": ""}
    try:
        with loaded_store(stack_settings, "purchases_demo", STORE_USERS, as_of=datetime.now(UTC) - timedelta(minutes=1)) as database:
            yield {**env, "MYSQL_DATABASE": database}
    finally:
        asyncio.run(delete_topics(stack_settings, [env["PURCHASES_TOPIC"], env["QUALITY_TOPIC"]]))


def test_the_demo_passes_with_every_core_busy_and_its_log_survives_redirection(demo_env, busy_cores, tmp_path):
    """With a busy loop on every core, demo.sh waits for readiness, kills the service mid-stream and starts it
    again, retrains and promotes a model under load, gets exactly one prediction for every valid event across
    both, counts them per model version, stops the purchase sink and the quality monitor cleanly, prints each
    version's live quality from the purchases that followed, ends with a latency summary in ms, and its output
    redirected to a file holds all of it."""
    log_path = tmp_path / "demo.log"
    env = {**os.environ, **demo_env, "DEMO_EVENTS": str(DEMO_EVENTS), "DEMO_LOG_DIR": str(tmp_path / "logs")}
    for port in ("METRICS_PORT", "QUALITY_METRICS_PORT"):
        env.pop(port, None)  # the demo picks free ports of its own
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
    per_version = dict((version, int(n)) for n, version in re.findall(r"(?m)^  (\d+) model (\S+)$", text))
    assert len(per_version) == 2 and sum(per_version.values()) == valid_sent, "predictions of the old and the new version"

    assert re.search(r"(?m)^  purchase sink: stopped cleanly; purchases: [1-9]\d* written", text), "the sink wrote purchases"
    assert re.search(r"(?m)^  quality monitor: stopped cleanly$", text)
    quality = dict(re.findall(r"(?m)^  live quality: model (\S+)[ :](.*)$", text))
    assert set(quality) == set(per_version), "one live-quality line per version that served"
    # The first version served the whole first stream and the second's start: far more labels than the minimum.
    first = next(iter(per_version))
    figures = re.fullmatch(r"AUC (\d\.\d{3}) over (\d+) labelled predictions \(training AUC (\d\.\d{3})\), log loss \d+\.\d{3}, "
                           r"positive rate \d\.\d{3} \(mean probability \d\.\d{3}\)", quality[first])
    assert figures, quality[first]
    assert 0.0 < float(figures[1]) <= 1.0 and MIN_LABELLED <= int(figures[2]) <= per_version[first] and 0.5 < float(figures[3]) <= 1.0
