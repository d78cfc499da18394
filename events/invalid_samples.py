"""One example of each kind of invalid input record, for the producer's --invalid-ratio and the tests.

Every sample must be rejected by `events.schema.parse_event`; the tests check that it is.
"""

from __future__ import annotations

import random

_VALID_FIELDS = '"event_id": "bad-{n}", "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": ["home", "product", "cart"]'

INVALID_SAMPLES: dict[str, bytes] = {
    "not_utf8": b'{"event_id": "\xff\xfe", "user_id": 1}',
    "not_json": b"user 7 looked at the cart",
    "truncated_json": b'{"event_id": "bad", "user_id": 7, "timest',
    "not_an_object": b'[1, "home/cart/checkout"]',
    "missing_field": b'{"event_id": "bad-{n}", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z"}',
    "user_id_bool": ('{"user_id": true, ' + _VALID_FIELDS + "}").encode(),
    "user_id_float": ('{"user_id": 7.5, ' + _VALID_FIELDS + "}").encode(),
    "user_id_string": ('{"user_id": "7", ' + _VALID_FIELDS + "}").encode(),
    "user_id_negative": ('{"user_id": -3, ' + _VALID_FIELDS + "}").encode(),
    "user_id_nan": ('{"user_id": NaN, ' + _VALID_FIELDS + "}").encode(),
    "user_id_infinity": ('{"user_id": Infinity, ' + _VALID_FIELDS + "}").encode(),
    "bad_timestamp": b'{"event_id": "bad-{n}", "user_id": 7, "timestamp": "yesterday", "last_three_pages_visited": ["home", "product", "cart"]}',
    "two_pages": b'{"event_id": "bad-{n}", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": "home/cart"}',
    "four_pages": b'{"event_id": "bad-{n}", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": ["home", "product", "cart", "checkout"]}',
    "long_event_id": ('{"event_id": "' + "x" * 300 + '", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": ["home", "product", "cart"]}').encode(),
    "timestamp_out_of_range": b'{"event_id": "bad-{n}", "user_id": 7, "timestamp": "0001-01-01T00:00:00+01:00", "last_three_pages_visited": ["home", "product", "cart"]}',
    "deeply_nested": ('{"event_id": "bad-{n}", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": ["home", "product", "cart"], "extra": ' + "[" * 5000 + "]" * 5000 + "}").encode(),
    "empty_event_id": b'{"event_id": "", "user_id": 7, "timestamp": "2026-11-26T12:00:00Z", "last_three_pages_visited": ["home", "product", "cart"]}',
}


def random_invalid(rng: random.Random, n: int) -> tuple[str, bytes]:
    """A random invalid sample, numbered `n` where the sample has an event id to number."""
    kind = rng.choice(sorted(INVALID_SAMPLES))
    return kind, INVALID_SAMPLES[kind].replace(b"{n}", str(n).encode())
