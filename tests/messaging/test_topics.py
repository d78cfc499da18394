import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from messaging.kafka_security import kafka_client_options
from messaging.topics import ensure_topics
from tests.conftest import env_settings

pytestmark = pytest.mark.integration


async def partition_counts(settings, topics):
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


def test_missing_topics_are_created_once_with_the_configured_partitions(stack_settings):
    """The first call creates the topics with TOPIC_PARTITIONS partitions, all with a leader; the second creates nothing."""
    settings = env_settings(TOPIC_PARTITIONS="3")
    topics = [f"topics-{uuid.uuid4().hex[:8]}-{n}" for n in range(2)]
    assert sorted(asyncio.run(ensure_topics(settings, topics))) == sorted(topics)
    assert asyncio.run(partition_counts(settings, topics)) == {topic: 3 for topic in topics}
    assert asyncio.run(ensure_topics(settings, topics)) == []


async def cleanup_policy(settings, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_code, _message, _type, _name, entries)] = response.resources
        return {entry[0]: entry[1] for entry in entries}["cleanup.policy"]
    finally:
        await admin.close()


def test_topic_configs_are_applied_to_the_topics_created(stack_settings):
    """A topic created with configs carries them (the quality topic is compacted); one created without keeps the broker's default."""
    settings = env_settings()
    compacted, plain = (f"topics-{uuid.uuid4().hex[:8]}-{kind}" for kind in ("compacted", "plain"))
    asyncio.run(ensure_topics(settings, [compacted], {"cleanup.policy": "compact"}))
    asyncio.run(ensure_topics(settings, [plain]))
    assert asyncio.run(cleanup_policy(settings, compacted)) == "compact"
    assert asyncio.run(cleanup_policy(settings, plain)) == "delete"
