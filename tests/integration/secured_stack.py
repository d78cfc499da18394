"""A private local stack started with STACK_SECURITY=on (its own STACK_DIR and ports), and the
settings its principals' env files give: shared by the stack's tests and the pipeline's tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dotenv import dotenv_values

from config import Settings, load_settings
from tests.stack.shell import REPO_ROOT, private_stack_environment, run_stack

# Quotes, a backslash and SQL comment marks: the bootstrap SQL must carry it as data.
DEV_PASSWORD = "it's a \\ pass'word; -- #$"
# An env file that does not exist: the settings come from the given environment alone.
NO_FILE = Path("/nonexistent/.env")
KAFKA_PRINCIPALS = ("prediction-service", "producer", "consumer")
MYSQL_SERVICE_ENV = "mysql-prediction_service"
MYSQL_LOADER_ENV = "mysql-prediction_loader"


def copy_kafka_classpaths(stack_dir: Path) -> None:
    """Reuse resolved Kafka classpaths (they name jars in ~/.m2), sparing Maven runs."""
    (stack_dir / "kafka").mkdir(parents=True, exist_ok=True)
    for cached in (REPO_ROOT / ".stack" / "kafka").glob("*classpath-*.txt"):
        shutil.copy(cached, stack_dir / "kafka")


@contextmanager
def running_secured_stack(stack_dir: Path, **extra: str) -> Iterator[dict[str, str]]:
    """Starts a private stack with STACK_SECURITY=on in `stack_dir`; yields its environment; purges it afterwards."""
    copy_kafka_classpaths(stack_dir)
    env = private_stack_environment(stack_dir, STACK_SECURITY="on", MYSQL_PASSWORD=DEV_PASSWORD, MYSQL_START_TIMEOUT="30",
                                    KAFKA_HEAP_OPTS="-Xms128m -Xmx384m", **extra)
    try:
        started = run_stack("up.sh", env)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield env
    finally:
        stopped = run_stack("down.sh", env, "--purge")
        assert stopped.returncode == 0, stopped.stderr
        assert not stack_dir.exists()


def env_file(stack: dict[str, str], name: str) -> dict[str, str]:
    """The variables of $STACK_DIR/security/`name`.env, as a program started with it sees them."""
    values = dotenv_values(Path(stack["STACK_DIR"]) / "security" / f"{name}.env")
    return {key: value for key, value in values.items() if value is not None}


def principal_env(stack: dict[str, str], *names: str) -> dict[str, str]:
    """The env files `names` merged, later ones winning."""
    environ: dict[str, str] = {}
    for name in names:
        environ |= env_file(stack, name)
    return environ


def settings_of(stack: dict[str, str], *names: str, **overrides: str) -> Settings:
    """The programs' settings with the env files `names` (then `overrides`) as their whole environment."""
    return load_settings(environ={**principal_env(stack, *names), **overrides}, env_file=NO_FILE)


def plain_settings(stack: dict[str, str], **overrides: str) -> Settings:
    """Settings for the stack's plain listener, which keeps full access for development."""
    return load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{stack['KAFKA_PORT']}", **overrides}, env_file=NO_FILE)
