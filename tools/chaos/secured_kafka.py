"""The fault harness's broker with a SASL_SSL listener, as a platform team would run it: SCRAM-SHA-512
logins, TLS with a CA of the run's own, the StandardAuthorizer denying what no ACL allows, and
each program logged in as its own principal with only the grants stack/security.sh gives it.

Its PLAINTEXT listener stays open to the harness itself (User:ANONYMOUS is a super user there),
which creates the topics, grants the ACLs and judges the outcome: the programs under test never use it.
The harness runs the service and the producer; `closed_loop_acls` holds the rest of stack/security.sh's
grants that concern the closed loop (purchases, the purchase sink, the quality monitor, training on what
was served), for brokers that run those programs too.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from aiokafka.conn import create_conn
from aiokafka.protocol.admin import CreateAclsRequest

from config import Settings
from tools.chaos.certificates import broker_certificates
from tools.chaos.private_kafka import PrivateKafka

SCRAM_MECHANISM = "SCRAM-SHA-512"
SERVICE, PRODUCER = "prediction-service", "producer"
# The principals of the closed loop's programs, as stack/security.sh names them.
CONSUMER, SINK, MONITOR, TRAINER = "consumer", "purchase-sink", "quality-monitor", "trainer"
PRINCIPALS = (SERVICE, PRODUCER)
LISTENER = "SASL_SSL"
# org.apache.kafka.common.resource.ResourceType, PatternType, acl.AclOperation and AclPermissionType codes.
TOPIC, GROUP, TRANSACTIONAL_ID = 2, 3, 5
LITERAL, PREFIXED = 3, 4
READ, WRITE, CREATE, DESCRIBE = 3, 4, 5, 8
ALLOW = 3

# (resource type, name, pattern, principal, operation): one grant.
Acl: TypeAlias = tuple[int, str, int, str, int]


class AclRefused(RuntimeError):
    pass


@dataclass(frozen=True)
class SecuredListener:
    bootstrap_servers: str
    ca: Path
    password_files: dict[str, Path]

    def client_env(self, principal: str) -> dict[str, str]:
        """The settings of a program logged in as `principal` (its password read from a file, as from a secret)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": principal,
            "KAFKA_SASL_PASSWORD_FILE": str(self.password_files[principal]),
            "KAFKA_SSL_CAFILE": str(self.ca),
        }


def secured_kafka(directory: Path, passwords: dict[str, str] | None = None, plain_too: bool = False,
                  ) -> tuple[PrivateKafka, Path, dict[str, str]]:
    """A broker (not started) with a SASL_SSL listener, its CA file, and its SCRAM users' passwords
    (`passwords`, or a random one for each of the pipeline's principals). `plain_too` also lets the
    same users log in with SASL PLAIN, for clients whose SCRAM Kafka 4 refuses (librdkafka before 2.6.1)."""
    ca, keystore = broker_certificates(directory / "certs")
    if passwords is None:
        passwords = {principal: secrets.token_hex(16) for principal in PRINCIPALS}
    plain = [
        "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        + " ".join(f'user_{user}="{password}"' for user, password in passwords.items()) + ";",
    ] if plain_too else []
    kafka = PrivateKafka(
        directory / "kafka",
        listeners={LISTENER: LISTENER},
        properties=[
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}" + (",PLAIN" if plain_too else ""),
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            *plain,
            "ssl.keystore.type=PEM", f"ssl.keystore.location={keystore}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=User:ANONYMOUS",
        ],
        format_arguments=[argument for principal, password in passwords.items()
                          for argument in ("--add-scram", f"{SCRAM_MECHANISM}=[name={principal},password={password}]")],
    )
    return kafka, ca, passwords


def listener_of(kafka: PrivateKafka, ca: Path, passwords: dict[str, str], directory: Path) -> SecuredListener:
    """The SASL_SSL listener of a started `kafka`, with each principal's password in a 0600 file under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for principal, password in passwords.items():
        files[principal] = directory / f"{principal}.password"
        files[principal].write_text(password)
        files[principal].chmod(0o600)
    return SecuredListener(f"127.0.0.1:{kafka.ports[LISTENER]}", ca, files)


def pipeline_acls(input_topic: str, outputs: Iterable[str], group: str) -> list[Acl]:
    """(resource type, name, pattern, principal, operation) for each grant of the service and the producer on the
    pipeline's topics: stack/security.sh's, for these names."""
    service, producer = f"User:{SERVICE}", f"User:{PRODUCER}"
    outputs = list(outputs)
    topics = [input_topic, *outputs]
    return [
        *((TOPIC, topic, LITERAL, principal, DESCRIBE) for topic in topics for principal in (service, producer)),
        (TOPIC, input_topic, LITERAL, service, READ),
        (GROUP, group, LITERAL, service, READ),
        *((TOPIC, topic, LITERAL, service, CREATE) for topic in topics),
        *((TOPIC, topic, LITERAL, service, WRITE) for topic in outputs),
        # The service's transactional ids are <group>-<topic>-<partition>.
        (TRANSACTIONAL_ID, f"{group}-", PREFIXED, service, WRITE),
        (TOPIC, input_topic, LITERAL, producer, WRITE),
    ]


@dataclass(frozen=True)
class ClosedLoopNames:
    """The topics and group the closed loop's programs use."""

    input_topic: str
    output_topic: str
    dlq_topic: str
    shadow_output_topic: str  # "": no shadow
    purchases_topic: str
    purchases_group: str
    quality_topic: str

    @classmethod
    def of(cls, settings: Settings) -> ClosedLoopNames:
        return cls(settings.input_topic, settings.output_topic, settings.dlq_topic, settings.shadow_output_topic,
                   settings.purchases_topic, settings.purchases_group_id, settings.quality_topic)


def closed_loop_acls(names: ClosedLoopNames) -> list[Acl]:
    """The grants stack/security.sh gives for the closed loop, beyond pipeline_acls and the consumer's reading of the
    pipeline's outputs: each program's own principal, and only what it uses."""
    producer, consumer = f"User:{PRODUCER}", f"User:{CONSUMER}"
    sink, monitor, trainer = f"User:{SINK}", f"User:{MONITOR}", f"User:{TRAINER}"
    predictions = [names.output_topic, *([names.shadow_output_topic] if names.shadow_output_topic else [])]
    return [
        # producer.py --outcomes sends purchases; consumer.py --live follows the monitor's snapshots.
        (TOPIC, names.purchases_topic, LITERAL, producer, WRITE),
        (TOPIC, names.quality_topic, LITERAL, consumer, READ),
        # The purchase sink: purchases in its group, their topic created when missing, invalid ones dead-lettered.
        (TOPIC, names.purchases_topic, LITERAL, sink, READ),
        (GROUP, names.purchases_group, LITERAL, sink, READ),
        (TOPIC, names.purchases_topic, LITERAL, sink, CREATE),
        (TOPIC, names.dlq_topic, LITERAL, sink, WRITE),
        # The quality monitor reads in no group, and owns its snapshot topic (one partition it creates itself).
        *((TOPIC, topic, LITERAL, monitor, READ) for topic in [*predictions, names.purchases_topic, names.quality_topic]),
        (TOPIC, names.quality_topic, LITERAL, monitor, WRITE),
        (TOPIC, names.quality_topic, LITERAL, monitor, CREATE),
        # Training on what was served joins the predictions with their events, in no group.
        (TOPIC, names.input_topic, LITERAL, trainer, READ),
        (TOPIC, names.output_topic, LITERAL, trainer, READ),
    ]


async def grant(plaintext_bootstrap: str, acls: Iterable[Acl]) -> None:
    """Adds the ACLs through the PLAINTEXT listener (aiokafka's admin client has no call for them: each request is sent as is)."""
    host, _, port = plaintext_bootstrap.rpartition(":")
    conn = await create_conn(host, int(port))
    try:
        for resource_type, name, pattern, principal, operation in acls:
            response = await conn.send(CreateAclsRequest(resource_type, name, pattern, principal, "*", operation, ALLOW))
            errors = [(code, message) for code, message in response.creation_responses if code]
            if errors:
                raise AclRefused(f"the broker refused the ACL {operation} on {name} for {principal}: {errors}")
    finally:
        conn.close()
