"""The page vocabulary of the shop. Anything else a client sends is folded into `other`."""

from __future__ import annotations

OTHER_PAGE = "other"

# Order matters only for readability; the model one-hot encodes each position over this set.
KNOWN_PAGES: tuple[str, ...] = (
    "home",
    "search",
    "category",
    "product",
    "reviews",
    "cart",
    "checkout",
    "account",
    "help",
    OTHER_PAGE,
)
_KNOWN = frozenset(KNOWN_PAGES)

PAGES_SEPARATOR = "/"


def normalise_page(raw: str) -> str:
    """Lower-case and strip a page name; unknown names become `other`."""
    page = raw.strip().lower()
    return page if page in _KNOWN else OTHER_PAGE
