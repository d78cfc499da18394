"""A Kafka broker of a test's (or the fault harness's) own, which it may freeze or kill without
touching the shared one.

It runs from the same jars as the local stack (their classpath is cached by stack/up.sh) on
free loopback ports, with its data in the caller's folder. A caller may add listeners (say a
SASL_SSL one), server properties and arguments for formatting its storage (SCRAM users).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.chaos.tcp_proxy import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


def _classpath() -> str:
    stack_dir = Path(os.environ.get("STACK_DIR", REPO_ROOT / ".stack"))
    found = sorted((stack_dir / "kafka").glob("classpath-*.txt"))
    if not found:
        raise RuntimeError(f"no Kafka classpath under {stack_dir}/kafka: start the stack with `make up` first")
    return found[-1].read_text().strip()


class PrivateKafka:
    def __init__(
        self, directory: Path, *, listeners: Mapping[str, str] | None = None, properties: Sequence[str] = (),
        format_arguments: Sequence[str] = (),
    ) -> None:
        """`listeners` maps each extra listener's name to its security protocol; `ports` then holds its port."""
        self.directory = directory
        self.port = free_port()
        self.controller_port = free_port()
        self.listener_protocols = dict(listeners or {})
        self.ports = {name: free_port() for name in self.listener_protocols}
        self.properties = list(properties)
        self.format_arguments = list(format_arguments)
        self.log_path = directory / "kafka.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = self.directory / "server.properties"
        extra = "".join(f",{name}://127.0.0.1:{port}" for name, port in self.ports.items())
        protocols = "".join(f",{name}:{protocol}" for name, protocol in self.listener_protocols.items())
        config.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}{extra}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}{extra}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}",
                f"log.dirs={self.directory / 'data'}",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                *self.properties,
                "",
            ])
        )
        return config

    def start(self, format_storage: bool = True) -> PrivateKafka:
        """Start the broker; `format_storage=False` restarts it on the data it already has."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        java = ["java", "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-cp", _classpath(),
                f"-Dlog4j2.configurationFile={REPO_ROOT / 'stack' / 'kafka' / 'log4j2.properties'}"]
        if format_storage:
            # A Kafka Uuid is 16 bytes in base64url; a leading '-' would read as an option.
            cluster_id = "A" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[1:]
            subprocess.run([*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *self.format_arguments],
                           check=True, capture_output=True, timeout=120)
        # Appended to, so a restart keeps the lines of the run before it; the readiness check
        # below reads this run's lines only.
        self.log_path.touch()
        start_of_run = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*java, "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Kafka Server started" not in (this_run := self._log_since(start_of_run)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"private Kafka did not start:\n{this_run[-3000:]}")
            time.sleep(0.2)
        return self

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers, as with a hung broker or a partition."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
