"""Create the pipeline's topics when they are missing, with the configured partition count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from config import Settings
from messaging.kafka_security import (
    KAFKA_AUTHORIZATION_ERRORS,
    KafkaAccessRefused,
    kafka_client_options,
    principal,
    start_kafka_client,
)

log = logging.getLogger(__name__)

LEADER_WAIT_S = 15.0


def pipeline_topics(settings: Settings) -> tuple[str, ...]:
    shadow = (settings.shadow_output_topic,) if settings.shadow_output_topic else ()
    return settings.input_topic, settings.output_topic, settings.dlq_topic, *shadow


async def ensure_topics(settings: Settings, topics: Iterable[str], configs: Mapping[str, str] | None = None) -> list[str]:
    """Create whichever of `topics` do not exist yet, with topic `configs` if given; returns the ones this call created.

    Several instances may start at once, so "already exists" from a concurrent creator is fine.
    Kafka refusing the client (credentials, certificate, protocol) or the creation (an ACL) raises
    KafkaAccessRefused, which no retry gets past.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="topic-setup", **kafka_client_options(settings)
    )
    await start_kafka_client(admin, settings)
    try:
        missing = sorted(set(topics) - set(await admin.list_topics()))
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(name, settings.topic_partitions, settings.topic_replication_factor, topic_configs=dict(configs or {}))
                for name in missing
            ]
        )
        created = []
        for topic, error_code, *_ in response.topic_errors:
            error = for_code(error_code) if error_code else None
            if error is None:
                created.append(topic)
            elif error in KAFKA_AUTHORIZATION_ERRORS:
                raise KafkaAccessRefused(
                    f"Kafka denied {principal(settings)} creating topic {topic}: grant it CREATE on that topic (or on the"
                    f" cluster), or create the topic beforehand with {settings.topic_partitions} partitions; if it exists,"
                    " this program lacks READ or WRITE on it, without which Kafka hides it"
                )
            elif error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {topic!r}")
        await _wait_for_leaders(admin, missing)
    finally:
        await admin.close()
    if created:
        log.info("created topics %s with %d partitions", ", ".join(created), settings.topic_partitions)
    return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """A new topic's partitions take a moment to elect leaders; clients that send before that
    get NotLeaderForPartition retries, so wait until every partition has one."""
    deadline = time.monotonic() + LEADER_WAIT_S
    while time.monotonic() < deadline:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        await asyncio.sleep(0.1)
    log.warning("partitions of %s still have no leader after %.0f s; clients will retry", ", ".join(topics), LEADER_WAIT_S)
