"""A record batch Kafka refuses for its size, against the real broker, in both delivery modes."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.conftest import STORE_USERS
from tests.factories import random_events
from tests.integration.kafka_helpers import create_topic, read_topic, send_records
from tests.integration.test_hostile_records import decode
from tests.integration.test_pipeline import as_records, read_predictions

pytestmark = pytest.mark.integration

# Room for two or three uncompressed predictions: a batch of more is refused, each record alone fits.
OUTPUT_MAX_MESSAGE_BYTES = "1000"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_refused_batch_whose_records_each_fit_loses_no_prediction(pipeline_settings, start_service, guarantee):
    """The output topic refuses record batches over 1,000 bytes; each prediction is then sent on its own and
    goes out once, and none is dead-lettered for a neighbour's sake."""
    asyncio.run(create_topic(pipeline_settings, pipeline_settings.output_topic, **{"max.message.bytes": OUTPUT_MAX_MESSAGE_BYTES}))
    events = random_events(40, [7] * STORE_USERS, seed=81)  # one user: one input and one output partition
    asyncio.run(send_records(pipeline_settings, as_records(events)))
    service = start_service(PROCESSING_GUARANTEE=guarantee, OUTPUT_COMPRESSION="none")

    predicted = Counter(decode(r) for r in read_predictions(pipeline_settings, [e.event_id for e in events], timeout_s=90))
    assert set(predicted) == {e.event_id for e in events} and max(predicted.values()) == 1
    assert asyncio.run(read_topic(pipeline_settings, pipeline_settings.dlq_topic, lambda rs: False, 3)) == []
    assert any("each is sent again on its own" in m for m in service.messages()), "a batch was refused"
    assert service.stop() == 0
