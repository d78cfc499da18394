"""The steady-rate load and the arrival watcher, run through kcat (librdkafka, in C).

Both run while the latency is measured, on the core the broker has too (the service has the
other one), so what they cost there is taken from the broker. Written with aiokafka, at 30,000
events/s, the producer alone used 28% of that core even with its record batches built
beforehand, and with the watcher the service's p99 was 175–207 ms; through kcat, fed from here,
the load costs the core about 19% (6% here, 13% kcat) and the p99 was 74–88 ms. The records are
still made here, so the events are the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
from collections.abc import AsyncIterator, Iterator

from config import Settings
from tools.bench.kcat_security import kcat_security_arguments

# How often the pacer tops up: Kafka's own producer default linger (5 ms), also kcat's.
TOP_UP_S = 0.005
KCAT = "kcat"


def _kcat(settings: Settings, *args: str) -> list[str]:
    if shutil.which(KCAT) is None:
        raise SystemExit("kcat is not installed; `make up` (stack/install_system_deps.sh) installs it")
    return [KCAT, *kcat_security_arguments(settings), "-b", settings.kafka_bootstrap_servers, "-q", *args]


async def send_paced(settings: Settings, topic: str, records: Iterator[tuple[bytes, bytes, str]], rate: float, seconds: float) -> int:
    """Send `rate` records a second for `seconds`: every TOP_UP_S, what is due by then.

    The lines for each top-up are joined beforehand, so while the clock runs this process only
    writes them to kcat's stdin. Returns how many records were sent.
    """
    lines = []
    for key, value, _ in itertools.islice(records, int(rate * seconds)):
        if b"\t" in key or b"\n" in key + value:
            raise ValueError(f"record {key!r} cannot go through kcat's line format")
        lines.append(key + b"\t" + value + b"\n")
    per_tick = max(1, round(rate * TOP_UP_S))
    ticks = [b"".join(lines[first:first + per_tick]) for first in range(0, len(lines), per_tick)]
    command = _kcat(
        settings, "-P", "-t", topic, "-K", "\t",
        # Kafka's own partitioner (murmur2), as the service's keyed_partition; every record acknowledged by the broker.
        "-X", "partitioner=murmur2_random", "-X", "acks=all", "-X", f"linger.ms={TOP_UP_S * 1000:g}",
    )
    kcat = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert kcat.stdin is not None
    started = time.monotonic()
    for n, tick in enumerate(ticks):
        wait_s = started + n * TOP_UP_S - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        kcat.stdin.write(tick)
        await kcat.stdin.drain()
    kcat.stdin.close()
    _, errors = await kcat.communicate()  # kcat flushes and waits for every acknowledgement at EOF
    if kcat.returncode != 0 or errors.strip():
        raise SystemExit(f"kcat could not send every record to {topic} (exit {kcat.returncode}): {errors.decode(errors='replace')[-500:]}")
    return len(lines)


@contextlib.asynccontextmanager
async def arrivals_watched(
    settings: Settings, topic: str, partition: int | None = None,
) -> AsyncIterator[list[tuple[int, int, float]]]:
    """While inside, note when (epoch ms) a read_committed reader gets records of `topic` (of one
    `partition` only, if given), as (partition, highest offset so far, ms); `TopicTimes.arrivals`
    maps that to events afterwards."""
    arrived: list[tuple[int, int, float]] = []
    only = ["-p", str(partition)] if partition is not None else []
    command = _kcat(
        settings, "-C", "-t", topic, *only, "-o", "beginning", "-u", "-f", "%p %o\n",
        "-X", "isolation.level=read_committed", "-X", "fetch.wait.max.ms=5",
    )
    kcat = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    reading = asyncio.create_task(_note_arrivals(kcat, arrived))
    try:
        yield arrived
    finally:
        reading.cancel()
        with contextlib.suppress(ProcessLookupError):
            kcat.kill()
        await kcat.wait()


async def _note_arrivals(kcat: asyncio.subprocess.Process, arrived: list[tuple[int, int, float]]) -> None:
    assert kcat.stdout is not None
    rest = b""
    while chunk := await kcat.stdout.read(1 << 16):
        now_ms = time.time() * 1000
        *complete, rest = (rest + chunk).split(b"\n")
        highest: dict[int, int] = {}
        for line in complete:
            partition, offset = line.split()
            highest[int(partition)] = max(highest.get(int(partition), -1), int(offset))
        arrived.extend((partition, offset, now_ms) for partition, offset in highest.items())
