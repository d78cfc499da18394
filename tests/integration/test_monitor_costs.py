"""The benchmark's quality monitor rows (tools/bench/monitor_costs.py), in small, against the real broker and program."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from events.purchase import decode_purchase
from events.schema import decode_prediction
from messaging.kafka_security import kafka_client_options
from tools.bench.monitor_costs import LABEL_WINDOW_S, Outcomes, monitor_costs, monitor_table, synthetic_outcomes

pytestmark = pytest.mark.integration

PREDICTIONS = 2_000


def positives_by_the_label_rule(outcomes: Outcomes) -> int:
    """Predictions whose user has a purchase in (event time, event time + LABEL_WINDOW_S]."""
    window = timedelta(seconds=LABEL_WINDOW_S)
    bought: dict[int, list] = {}
    for _key, value, _id in outcomes.purchases:
        purchase = decode_purchase(value)
        bought.setdefault(purchase.user_id, []).append(purchase.timestamp)
    positives = 0
    for _key, value, _id in outcomes.predictions:
        prediction = decode_prediction(value)
        at = prediction.timestamp
        positives += any(at < when <= at + window for when in bought.get(prediction.user_id, []))
    return positives


async def bench_topics_left(settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        topics = await admin.list_topics()
        return {t for t in topics if t.startswith("bench-") and (t.endswith(("-predictions", "-purchases")) or "-quality-" in t)}
    finally:
        await admin.close()


def test_both_rows_come_from_the_real_monitor_with_every_prediction_labelled_by_the_rule(stack_settings, tmp_path):
    outcomes = synthetic_outcomes(PREDICTIONS)
    before = asyncio.run(bench_topics_left(stack_settings))

    labelling, at_cap = asyncio.run(monitor_costs(stack_settings, {}, outcomes, tmp_path, core=None))

    # Every prediction labelled, none sampled out, and labelled as the rule says from the records written.
    assert (labelling.labelled, labelling.pending, labelling.sampled_out) == (PREDICTIONS, 0, 0)
    assert labelling.positive == positives_by_the_label_rule(outcomes)
    assert 0 < labelling.positive < PREDICTIONS
    assert labelling.labelled_per_s is not None and labelling.labelled_per_s > 0
    # CPU time comes in clock ticks of 10 ms, about a third of this small run: no lower bound on it here.
    assert labelling.cpu_s_per_10k is not None
    assert labelling.rss_mb > 0 and labelling.peak_rss_mb >= labelling.rss_mb
    # At the cap: everything read, every prediction waiting, none labelled or let go.
    assert (at_cap.pending, at_cap.cap, at_cap.labelled, at_cap.sampled_out) == (PREDICTIONS, PREDICTIONS, 0, 0)
    assert at_cap.rss_mb > 0 and at_cap.labelled_per_s is None
    table = monitor_table([labelling, at_cap])
    assert labelling.name in table and at_cap.name in table
    # The runs' topics are gone (those of other tests may come and go meanwhile: only new ones count).
    assert asyncio.run(bench_topics_left(stack_settings)) - before == set()
