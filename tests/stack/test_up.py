"""stack/up.sh on a private stack (own STACK_DIR and ports): the database and user are always there afterwards."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pymysql
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import load_settings
from tests.stack.shell import REPO_ROOT, clean_environment, free_ports, run_stack

pytestmark = pytest.mark.integration

PASSWORD = "pa#ss$word"
NO_FILE = Path("/nonexistent/.env")


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory):
    """Starts a second stack with MYSQL_HOST exported, as the old Makefile did, and purges it afterwards."""
    stack_dir = tmp_path_factory.mktemp("stack")
    # Reuse the resolved Kafka classpath (it names jars in ~/.m2), sparing a Maven run.
    (stack_dir / "kafka").mkdir()
    for cached in (REPO_ROOT / ".stack" / "kafka").glob("classpath-*.txt"):
        shutil.copy(cached, stack_dir / "kafka")
    kafka_port, controller_port, mysql_port = free_ports(3)
    env = clean_environment(
        STACK_DIR=str(stack_dir), KAFKA_PORT=kafka_port, KAFKA_CONTROLLER_PORT=controller_port, MYSQL_PORT=mysql_port,
        MYSQL_HOST="127.0.0.1", MYSQL_PASSWORD=PASSWORD, MYSQL_START_TIMEOUT="30", KAFKA_HEAP_OPTS="-Xms128m -Xmx256m",
    )
    try:
        started = run_stack("up.sh", env)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield env
    finally:
        stopped = run_stack("down.sh", env, "--purge")
        assert stopped.returncode == 0, stopped.stderr
        assert not stack_dir.exists()


def app_login(env: dict[str, str]) -> None:
    connection = pymysql.connect(host="127.0.0.1", port=int(env["MYSQL_PORT"]), user="prediction",
                                 password=PASSWORD, database="purchases", connect_timeout=5)
    connection.close()


def root_sql(env: dict[str, str], sql: str) -> None:
    socket_path = Path(env["STACK_DIR"]) / "run" / "mariadb.sock"
    subprocess.run(["mariadb", "--no-defaults", "--protocol=socket", "--host=localhost", f"--socket={socket_path}",
                    "-uroot", "-e", sql], check=True, timeout=30)


def test_mariadb_is_bootstrapped_even_with_mysql_host_exported(stack_env):
    """With MYSQL_HOST=127.0.0.1 in its environment, up.sh still creates the user, who logs in with a password holding # and $."""
    app_login(stack_env)


def test_a_rerun_bootstraps_a_server_that_is_already_running(stack_env):
    """After a first run that stopped before creating them, the next up.sh creates the missing database and user."""
    root_sql(stack_env, "DROP USER 'prediction'@'127.0.0.1', 'prediction'@'localhost'; DROP DATABASE purchases;")
    with pytest.raises(pymysql.err.OperationalError):
        app_login(stack_env)
    rerun = run_stack("up.sh", stack_env)
    assert rerun.returncode == 0, rerun.stderr
    assert "MariaDB already running" in rerun.stdout
    app_login(stack_env)


def test_the_programs_follow_the_stacks_kafka_port(stack_env):
    """Given only KAFKA_PORT, as the stack is, the programs' settings reach this stack's Kafka."""
    settings = load_settings(environ=stack_env, env_file=NO_FILE)
    assert settings.kafka_bootstrap_servers == f"localhost:{stack_env['KAFKA_PORT']}"

    async def list_topics() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10_000)
        await asyncio.wait_for(admin.start(), 30)
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(list_topics())
