"""The pipeline's topics for producer.py and consumer.py, which a secured cluster does not let create them."""

from __future__ import annotations

from config import Settings
from messaging.kafka_security import KafkaAccessRefused
from messaging.topics import ensure_topics, pipeline_topics

# How messaging/topics.py words Kafka refusing a topic's creation (`Kafka denied <principal>
# creating topic <topic>: …`), as opposed to refusing the login or another grant.
CREATION_REFUSED = " creating topic "
# The ACLs of stack/security.sh and docs/security.md give CREATE to the service's principal only.
WHO_CREATES = (
    "on a secured cluster only the prediction service's principal may create the pipeline's topics:"
    " start prediction_service.py first, which creates them, or have an administrator create them (docs/security.md)"
)


async def ensure_pipeline_topics(settings: Settings) -> None:
    """Create whichever of the pipeline's topics are missing; KafkaAccessRefused saying who may, when Kafka
    refuses this program's principal the creation."""
    try:
        await ensure_topics(settings, pipeline_topics(settings))
    except KafkaAccessRefused as exc:
        if CREATION_REFUSED not in str(exc):
            raise
        raise KafkaAccessRefused(f"{exc}; {WHO_CREATES}") from exc
