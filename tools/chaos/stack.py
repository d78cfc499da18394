"""The harness's own servers: a Kafka broker, a MariaDB behind a proxy, its offline store and model.

Nothing here touches the local stack (`make up`) or the project's model registry: the store is
loaded and the model trained by the project's own commands, pointed at these servers and at a
single model file in this folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tools.chaos.private_kafka import PrivateKafka
from tools.chaos.private_mysql import DATABASE, PASSWORD, USER, PrivateMySQL
from tools.chaos.secured_kafka import SecuredListener, listener_of, secured_kafka
from tools.chaos.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
# Fewer than the store's users with history (about 85% of them), so every instance caches per
# user, with a short life: most events are a MySQL lookup, and a MySQL fault holds them up.
CACHE_MAX_USERS = 1_000
CACHE_TTL_S = 5
TRAINING_SAMPLES = 20_000


@dataclass(frozen=True)
class ChaosStack:
    directory: Path
    kafka: PrivateKafka
    mysql: PrivateMySQL
    proxy: TcpProxy
    model_path: Path  # a single model.joblib (model.json beside it): what MODEL_URI names
    users: int
    secured: SecuredListener | None = None  # with --secured: the broker's SASL_SSL listener

    def env(self, through_proxy: bool = True, principal: str | None = None) -> dict[str, str]:
        """Settings that reach these servers. The services always go through the proxy; the
        loader, the training and the verdict go straight to MySQL, which the proxy may be slowing.
        With a secured listener, a program named by `principal` logs in there as that principal;
        without one (the harness itself), it uses the PLAINTEXT listener."""
        # The private servers speak plaintext, whatever .env says of the shared ones.
        kafka = {"KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers, "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        if self.secured is not None and principal is not None:
            kafka = self.secured.client_env(principal)
        return {
            **kafka,
            "MYSQL_SSL_MODE": "disabled",
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(self.proxy.port if through_proxy else self.mysql.port),
            "MYSQL_USER": USER,
            "MYSQL_PASSWORD": PASSWORD,
            "MYSQL_DATABASE": DATABASE,
            "MODEL_URI": str(self.model_path),
            "FEATURE_CACHE_MAX_USERS": str(CACHE_MAX_USERS),
            "FEATURE_CACHE_TTL_S": str(CACHE_TTL_S),
        }


@contextlib.contextmanager
def private_stack(directory: Path, users: int, say: Callable[[str], None], secured: bool = False) -> Iterator[ChaosStack]:
    """Start the servers, load the store and train the model; kill the servers on the way out.
    `secured` adds a SASL_SSL listener with SCRAM users and ACLs, which the programs under test use."""
    if secured:
        kafka, ca, passwords = secured_kafka(directory)
    else:
        kafka = PrivateKafka(directory / "kafka")
    mysql = PrivateMySQL(directory / "mysql")
    try:
        say(f"starting a private Kafka and MariaDB under {directory}")
        # Side by side: the broker's JVM takes most of the wait, MariaDB a second or two.
        with ThreadPoolExecutor(2) as starting:
            started: list[Future[object]] = [starting.submit(kafka.start), starting.submit(mysql.start)]
            for future in started:
                future.result()
        listener = listener_of(kafka, ca, passwords, directory / "secrets") if secured else None
        say(f"Kafka on {kafka.bootstrap_servers}" + (f" (SASL_SSL on {listener.bootstrap_servers})" if listener else "")
            + f", MariaDB on 127.0.0.1:{mysql.port}")
        with TcpProxy("127.0.0.1", mysql.port) as proxy:
            stack = ChaosStack(directory, kafka, mysql, proxy, directory / "model" / "model.joblib", users, listener)
            _prepare(stack, say)
            yield stack
    finally:
        kafka.thaw()
        kafka.kill()
        mysql.kill()


def _prepare(stack: ChaosStack, say: Callable[[str], None]) -> None:
    env = {**os.environ, **stack.env(through_proxy=False), "LOG_FORMAT": "console"}
    steps = (
        ("loading the offline store", ["-m", "offline_store.loader", "--users", str(stack.users), "--seed", "42"]),
        ("training the model", ["-m", "model.train", "--users", str(stack.users), "--samples", str(TRAINING_SAMPLES)]),
    )
    for what, args in steps:
        say(f"{what} ({stack.users:,} users)")
        log_path = stack.directory / f"{args[1]}.log"
        with log_path.open("wb") as log:
            done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}")
