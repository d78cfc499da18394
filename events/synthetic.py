"""Synthetic browsing: the page sequences and events the producer emits and training learns from.

Training and the producer draw from the same generator, so the model is trained on the traffic
it will see.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime

from events.schema import PAGES_PER_EVENT, InputEvent

# Where a shopper goes next from each page: a small Markov chain over the shop's pages.
# Funnel pages (product → cart → checkout) are common enough that every outcome shows up.
NEXT_PAGE: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "home": (("search", "category", "product", "account", "help", "other"), (0.3, 0.3, 0.2, 0.08, 0.04, 0.08)),
    "search": (("product", "search", "category", "home"), (0.6, 0.2, 0.1, 0.1)),
    "category": (("product", "category", "search", "home"), (0.6, 0.15, 0.15, 0.1)),
    "product": (("cart", "product", "reviews", "category", "search", "home"), (0.3, 0.2, 0.15, 0.15, 0.1, 0.1)),
    "reviews": (("product", "cart", "home"), (0.5, 0.3, 0.2)),
    "cart": (("checkout", "product", "home", "cart"), (0.45, 0.25, 0.15, 0.15)),
    "checkout": (("home", "account", "checkout", "help"), (0.5, 0.2, 0.2, 0.1)),
    "account": (("home", "help", "product"), (0.5, 0.2, 0.3)),
    "help": (("home", "account", "other"), (0.6, 0.2, 0.2)),
    "other": (("home", "product", "other"), (0.5, 0.3, 0.2)),
}
ENTRY_PAGES: tuple[tuple[str, ...], tuple[float, ...]] = (("home", "search", "category", "product", "other"), (0.35, 0.2, 0.15, 0.25, 0.05))


def random_pages(rng: random.Random) -> tuple[str, str, str]:
    pages, weights = ENTRY_PAGES
    visited = [rng.choices(pages, weights)[0]]
    while len(visited) < PAGES_PER_EVENT:
        pages, weights = NEXT_PAGE[visited[-1]]
        visited.append(rng.choices(pages, weights)[0])
    return visited[0], visited[1], visited[2]


def new_event_id(rng: random.Random) -> str:
    # Drawn from the seeded generator, so a run with --seed is repeatable end to end.
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_event(rng: random.Random, user_id: int, timestamp: datetime) -> InputEvent:
    return InputEvent(
        event_id=new_event_id(rng),
        user_id=user_id,
        timestamp=timestamp,
        last_three_pages_visited=random_pages(rng),
    )
