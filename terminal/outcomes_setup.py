"""What `producer.py --outcomes` needs before its first event: the users' features and the purchases topic."""

from __future__ import annotations

from config import Settings
from features.user import UserFeatures
from messaging.kafka_security import KafkaAccessRefused
from messaging.topics import ensure_topics
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool
from terminal.topic_setup import CREATION_REFUSED

# Above this many further events of the same user within one label window, on average, the
# window of one event often holds a purchase drawn for another.
SHARED_WINDOW_WARN_AT = 0.1


async def read_store_users(settings: Settings) -> dict[int, UserFeatures]:
    """Every user with history in the offline store, read once: the simulation's world at start.

    A store that was never loaded raises OfflineStoreNotReady saying how to load it.
    """
    pool = await create_pool(settings)
    try:
        store = MySQLFeatureStore(pool, settings.mysql_query_timeout_ms)
        await store.check_schema()
        return await store.get_all_features()
    finally:
        await close_pool(pool)


async def ensure_purchases_topic(settings: Settings) -> None:
    """Create PURCHASES_TOPIC when it is missing; KafkaAccessRefused saying who may, when Kafka refuses."""
    try:
        await ensure_topics(settings, [settings.purchases_topic])
    except KafkaAccessRefused as exc:
        if CREATION_REFUSED not in str(exc):
            raise
        raise KafkaAccessRefused(
            f"{exc}; or start the purchase sink first, which creates it, or have an administrator create"
            f" {settings.purchases_topic} (docs/security.md)"
        ) from exc


def shared_window_warning(rate_per_s: float, users: int, window_s: float) -> str | None:
    """Why labels will run above the ground truth at this rate, or None when they will not noticeably.

    A prediction is labelled by any purchase of its user in its window, also one drawn for another
    of the user's events: the more events a user has within one window, the more often that is.
    """
    if rate_per_s <= 0:
        return None
    per_user = rate_per_s * window_s / users
    if per_user <= SHARED_WINDOW_WARN_AT:
        return None
    return (
        f"at {rate_per_s:g} events/s over {users} users, a user has about {per_user:.2g} more events within one"
        f" LABEL_WINDOW_S ({window_s:g} s): a purchase drawn for one of them also labels the others positive, so"
        " labels will run above the ground truth; use more --users, a lower --rate or a shorter LABEL_WINDOW_S"
    )
