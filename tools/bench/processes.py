"""Running a program under test pinned to one core, and reading its CPU time and peak memory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Pinned:
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_s(self) -> float:
        """User plus system CPU seconds so far (0 once it has exited)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float:
        """Resident memory now, where peak_rss_mb is the most it ever held."""
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_pinned(program: Sequence[str], env: dict[str, str], core: int | None, log_path: Path) -> Pinned:
    """Start Python with the arguments `program` (a script, or `-m` and a module) from the project
    folder, on `core` alone when taskset is there."""
    command = [sys.executable, *program]
    if core is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    return Pinned(process, log_path)


@contextlib.contextmanager
def stack_kept_off(core: int) -> Iterator[list[int]]:
    """Keep the local stack's broker and MariaDB (every thread of them) off `core` while the
    benchmark runs, as if they ran on other machines; their affinity is restored afterwards.
    Yields the pids moved (none when the stack's pid files are not there)."""
    run_dir = Path(os.environ.get("STACK_DIR", ROOT / ".stack")) / "run"
    saved: dict[int, set[int]] = {}
    moved: list[int] = []
    for name in ("kafka.pid", "mariadb.pid"):
        try:
            pid = int((run_dir / name).read_text().strip())
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except (OSError, ValueError):
            continue
        for tid in threads:
            try:
                allowed = os.sched_getaffinity(tid)
                if len(allowed - {core}) == 0:
                    continue
                os.sched_setaffinity(tid, allowed - {core})
                saved[tid] = allowed
            except OSError:  # the thread ended meanwhile
                continue
        moved.append(pid)
    try:
        yield moved
    finally:
        for tid, allowed in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, allowed)
