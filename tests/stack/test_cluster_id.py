"""Kafka cluster ids from stack/lib.sh never start with `-`, which kafka-storage would take for an option."""

import base64
import re

from tests.stack.shell import run_lib


def test_no_cluster_id_starts_with_a_dash(tmp_path):
    """For each of the 64 possible first characters, the id is a valid 22-character Kafka Uuid not starting with `-`."""
    sources = []
    for index in range(64):
        source = tmp_path / f"random-{index}"
        # The first character encodes the first byte's top six bits; 62 is the one that gives `-`.
        source.write_bytes(bytes([index << 2]) + bytes(range(index, index + 15)))
        sources.append(str(source))
    result = run_lib('for source in "$@"; do new_kafka_cluster_id "$source"; done', *sources)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 64
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cluster_id), cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert ids[62].startswith("_")
