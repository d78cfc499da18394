"""Create the pipeline's topics when they are missing, with the configured partition count."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from config import Settings

log = logging.getLogger(__name__)


def pipeline_topics(settings: Settings) -> tuple[str, str, str]:
    return settings.input_topic, settings.output_topic, settings.dlq_topic


async def ensure_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """Create whichever of `topics` do not exist yet; returns the ones this call created.

    Several instances may start at once, so "already exists" from a concurrent creator is fine.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="topic-setup")
    await admin.start()
    try:
        missing = sorted(set(topics) - set(await admin.list_topics()))
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(name, settings.topic_partitions, settings.topic_replication_factor) for name in missing]
        )
    finally:
        await admin.close()

    created = []
    for topic, error_code, *_ in response.topic_errors:
        error = for_code(error_code) if error_code else None
        if error is None:
            created.append(topic)
        elif error is not TopicAlreadyExistsError:
            raise error(f"cannot create topic {topic!r}")
    if created:
        log.info("created topics %s with %d partitions", ", ".join(created), settings.topic_partitions)
    return created
