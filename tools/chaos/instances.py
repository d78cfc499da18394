"""The service instances under test: prediction_service.py processes in one consumer group,
which the fault timeline kills, freezes, stops and starts again by slot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY_MESSAGE = "consuming "  # logged once the consumer has joined the group
LOGIN = re.compile(r"; Kafka over (\S+ as [^\"\n]+)")
# A stopped instance exits within SHUTDOWN_TIMEOUT_S by itself; past this slack it is killed.
STOP_SLACK_S = 10.0


@dataclass
class Instance:
    slot: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def joined(self) -> bool:
        return READY_MESSAGE in self.log_path.read_text(errors="replace")

    def login(self) -> str | None:
        """How it reached Kafka, as its ready line says ("SASL_SSL as User:prediction-service"); None before it joined."""
        found = LOGIN.search(self.log_path.read_text(errors="replace"))
        return found.group(1) if found else None


@dataclass
class Crash:
    slot: int
    exit_code: int
    log_path: Path


@dataclass
class Fleet:
    """At most one live process per slot; every process it ever started is in `started`."""

    env: dict[str, str]
    log_dir: Path
    shutdown_timeout_s: float
    live: dict[int, Instance] = field(default_factory=dict)
    started: list[Instance] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)

    def start(self, slot: int) -> Instance:
        log_path = self.log_dir / f"instance-{slot}.{sum(i.slot == slot for i in self.started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "prediction_service.py"], cwd=ROOT, env={**os.environ, **self.env},
                stdout=log, stderr=subprocess.STDOUT,
            )
        instance = Instance(slot, process, log_path)
        self.live[slot] = instance
        self.started.append(instance)
        return instance

    async def wait_joined(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(instance.joined() for instance in self.live.values()):
            for instance in self.live.values():
                if not instance.alive:
                    raise RuntimeError(f"instance {instance.slot} exited with {instance.process.returncode}; see {instance.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the instances did not all join the group within {timeout_s:.0f} s; logs in {self.log_dir}")
            await asyncio.sleep(0.2)

    def kill(self, slot: int) -> int:
        """kill -9; returns the pid."""
        instance = self.live.pop(slot)
        instance.process.kill()
        instance.process.wait(timeout=10)
        return instance.process.pid

    def freeze(self, slot: int) -> int:
        self.live[slot].process.send_signal(signal.SIGSTOP)
        return self.live[slot].process.pid

    def thaw(self, slot: int) -> None:
        self.live[slot].process.send_signal(signal.SIGCONT)

    async def stop(self, slot: int) -> int | None:
        """SIGTERM, the graceful path (a scale-in); killed if it overruns its own deadline. Returns the exit code."""
        instance = self.live.pop(slot)
        instance.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout_s + STOP_SLACK_S
        while instance.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if instance.alive:
            instance.process.kill()
            instance.process.wait(timeout=10)
            return None
        return instance.process.returncode

    def restart_crashed(self) -> list[Crash]:
        """Instances that exited on their own since the last call, each started again in its slot."""
        found = []
        for slot, instance in list(self.live.items()):
            if not instance.alive:
                found.append(Crash(slot, instance.process.returncode, instance.log_path))
                self.start(slot)
        self.crashes += found
        return found

    def kill_all(self) -> None:
        """Every process this fleet started, frozen or not; for the way out, whatever happened."""
        for instance in self.started:
            if instance.alive:
                instance.process.kill()  # frozen or not: SIGKILL needs no SIGCONT
        for instance in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                instance.process.wait(timeout=10)
        self.live.clear()
