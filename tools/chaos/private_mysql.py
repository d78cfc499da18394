"""A MariaDB server of the harness's own, which it may kill -9 and restart on the same data.

Started the way stack/up.sh starts the local one (`mariadb-install-db`, then `mariadbd`), but
with `--no-defaults` and every path on the command line, so no system or user option file is
read, and on a free loopback port with its own socket, under the caller's folder.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from pathlib import Path

from tools.chaos.tcp_proxy import free_port

START_TIMEOUT_S = 60.0
USER = "chaos"
PASSWORD = "chaos"
DATABASE = "purchases"


class PrivateMySQL:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        # A Unix socket path must fit in 108 bytes: the caller's folder should be a short one.
        self.socket = directory / "mysqld.sock"
        self.log_path = directory / "mariadb.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _server_options(self) -> list[str]:
        return [
            "--no-defaults",  # must come first
            f"--datadir={self.directory / 'data'}",
            f"--tmpdir={self.directory / 'tmp'}",
            f"--socket={self.socket}",
            f"--pid-file={self.directory / 'mariadb.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--user={getpass.getuser()}",  # mariadbd refuses to run as root unless told to
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            # Killed on purpose: the last second of commits may go, the store is loaded before that.
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
            # 1, not 2: no "Aborted connection" line for every connection the proxy drops.
            "--log-warnings=1",
        ]

    def start(self) -> PrivateMySQL:
        """Start the server, creating its data the first time, and wait until it answers."""
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        first_start = not (self.directory / "data").exists()
        if first_start:
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={self.directory / 'data'}", f"--user={getpass.getuser()}",
                 "--auth-root-authentication-method=socket", f"--auth-root-socket-user={getpass.getuser()}", "--skip-test-db"],
                check=True, capture_output=True, timeout=120,
            )
        # A socket file left by a killed server would make the new one think another runs.
        self.socket.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(["mariadbd", *self._server_options()], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.root_sql("SELECT 1").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"private MariaDB did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        if first_start:
            self._create_user()
        return self

    def root_sql(self, sql: str) -> subprocess.CompletedProcess[bytes]:
        # --host=localhost: a MYSQL_HOST in the environment would otherwise send root over TCP.
        return subprocess.run(
            ["mariadb", "--no-defaults", "--protocol=socket", "--host=localhost", f"--socket={self.socket}", "-uroot", "-e", sql],
            capture_output=True, timeout=30,
        )

    def _create_user(self) -> None:
        result = self.root_sql(
            f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
            f" CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            f" GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO '{USER}'@'127.0.0.1';"
        )
        if result.returncode != 0:
            raise RuntimeError(f"cannot create the harness's MariaDB user: {result.stderr.decode(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; InnoDB recovers on the next start."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
