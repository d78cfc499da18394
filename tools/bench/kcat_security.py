"""The project's Kafka security settings as librdkafka properties, for kcat.

kcat takes them from a properties file (`-F`) rather than `-X` arguments, so that no password
shows in the process list: the file is private (0600, in a 0700 folder) and removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from config import Settings
from config.settings import SASL_PROTOCOLS, TLS_PROTOCOLS


def librdkafka_properties(settings: Settings) -> dict[str, str]:
    """What kcat needs to connect as the settings say; empty for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    properties = {"security.protocol": protocol.lower()}
    if protocol in SASL_PROTOCOLS:
        properties |= {
            "sasl.mechanisms": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password,
        }
    if protocol in TLS_PROTOCOLS:
        optional = {
            "ssl.ca.location": settings.kafka_ssl_cafile,
            "ssl.certificate.location": settings.kafka_ssl_certfile,
            "ssl.key.location": settings.kafka_ssl_keyfile,
            "ssl.key.password": settings.kafka_ssl_key_password,
        }
        properties |= {name: value for name, value in optional.items() if value}
        properties["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
    return properties


def kcat_security_arguments(settings: Settings) -> list[str]:
    """`-F FILE` with the properties above, or nothing for PLAINTEXT."""
    properties = librdkafka_properties(settings)
    if not properties:
        return []
    for name, value in properties.items():
        if "\n" in value or "\r" in value:
            raise SystemExit(f"the Kafka setting behind {name} holds a line break, which kcat's properties file cannot carry")
    return ["-F", str(_properties_file("".join(f"{name}={value}\n" for name, value in sorted(properties.items()))))]


@cache
def _properties_file(content: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="kcat-"))  # 0700
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "client.properties"
    path.touch(mode=0o600)
    path.write_text(content)
    return path
