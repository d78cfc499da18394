"""The stack scripts check every value they take from .env or the environment, and refuse a bad one
before they create or start anything, with a message naming the variable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from config import Settings
from tests.stack.shell import REPO_ROOT, STACK, clean_environment, free_ports, private_stack_environment, run_lib, run_stack

# {marker} is a file the value would create if any shell ran it.
HOSTILE_VALUES = [
    ("KAFKA_PORT", "1; touch {marker}"),
    ("KAFKA_PORT", "$(touch {marker})"),
    ("KAFKA_PORT", "65536"),
    ("KAFKA_PORT", "08"),
    # Bash arithmetic evaluates an array subscript, and with it a command substitution.
    ("KAFKA_CONTROLLER_PORT", "a[$(touch {marker})]"),
    ("MYSQL_PORT", "0"),
    ("KAFKA_SASL_SSL_PORT", "9094 "),
    ("KAFKA_START_TIMEOUT", "x[$(touch {marker})]"),
    ("MYSQL_START_TIMEOUT", "-5"),
    ("MYSQL_DATABASE", "a`b"),
    ("MYSQL_DATABASE", "shop; DROP DATABASE mysql"),
    ("MYSQL_USER", "x'@'%"),
    ("MYSQL_USER", "root"),
    ("KAFKA_VERSION", "4.1.2 -Dx=$(touch {marker})"),
    ("KAFKA_HEAP_OPTS", "-Xmx1g; touch {marker}"),
    ("KAFKA_HEAP_OPTS", "-Xmx1g `touch {marker}`"),
    ("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseZGC $(touch {marker})"),
    ("KAFKA_JVM_PERFORMANCE_OPTS", "-XX:+UseZGC\n-Dx=1"),
    ("KAFKA_HOME", "/opt/kafka\n/tmp"),
    ("STACK_SECURITY", "maybe"),
]


def refused_before_anything(result, variable: str, stack_dir: Path, marker: Path) -> None:
    assert result.returncode != 0
    assert f"ERROR: {variable}" in result.stderr, result.stderr
    assert not stack_dir.exists(), "the stack directory was created before the value was checked"
    assert not marker.exists(), "a value was run as shell code"


@pytest.mark.parametrize(("variable", "value"), HOSTILE_VALUES)
def test_up_refuses_a_bad_value_from_the_environment(tmp_path, variable, value):
    """Each bad value stops up.sh at once: non-zero exit, the variable named, no file created, nothing run."""
    stack_dir, marker = tmp_path / "stack", tmp_path / "pwned"
    env = private_stack_environment(stack_dir, **{variable: value.format(marker=marker)})
    refused_before_anything(run_stack("up.sh", env), variable, stack_dir, marker)


def test_a_password_with_a_newline_is_refused_and_not_shown(tmp_path):
    """A newline could end a SQL statement or a my.cnf line; the refusal names MYSQL_PASSWORD but never prints it."""
    stack_dir, marker = tmp_path / "stack", tmp_path / "pwned"
    env = private_stack_environment(stack_dir, MYSQL_PASSWORD="s3cret\ninit_connect=DROP DATABASE purchases")
    result = run_stack("up.sh", env)
    refused_before_anything(result, "MYSQL_PASSWORD", stack_dir, marker)
    assert "s3cret" not in result.stderr and "init_connect" not in result.stderr


@pytest.mark.parametrize("name", ["new\nline", "tab\there", "hash#mark", "quote'd", "back\\slash"])
def test_a_stack_dir_the_config_files_cannot_carry_is_refused(tmp_path, name):
    """STACK_DIR goes into my.cnf and server.properties: a newline, control character, #, quote or backslash stops up.sh."""
    env = private_stack_environment(tmp_path / name)
    result = run_stack("up.sh", env)
    assert result.returncode != 0
    assert "ERROR: STACK_DIR" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_two_servers_on_one_port_are_refused(tmp_path):
    """MYSQL_PORT equal to KAFKA_PORT is named as such, before either server is tried."""
    stack_dir = tmp_path / "stack"
    env = private_stack_environment(stack_dir)
    env["MYSQL_PORT"] = env["KAFKA_PORT"]
    result = run_stack("up.sh", env)
    assert result.returncode != 0
    assert "MYSQL_PORT" in result.stderr and "KAFKA_PORT" in result.stderr
    assert not stack_dir.exists()


def test_with_security_on_the_sasl_port_must_differ_too(tmp_path):
    """KAFKA_SASL_SSL_PORT on the controller's port is refused when STACK_SECURITY=on asks for it."""
    stack_dir = tmp_path / "stack"
    env = private_stack_environment(stack_dir, STACK_SECURITY="on")
    env["KAFKA_SASL_SSL_PORT"] = env["KAFKA_CONTROLLER_PORT"]
    result = run_stack("up.sh", env)
    assert result.returncode != 0
    assert "ERROR: KAFKA_SASL_SSL_PORT" in result.stderr
    assert not stack_dir.exists()


def test_with_security_on_topic_names_are_checked(tmp_path):
    """The ACLs' topic names are tool arguments: INPUT_TOPIC with a space is refused when STACK_SECURITY=on."""
    stack_dir = tmp_path / "stack"
    result = run_stack("up.sh", private_stack_environment(stack_dir, STACK_SECURITY="on", INPUT_TOPIC="in put"))
    assert result.returncode != 0
    assert "ERROR: INPUT_TOPIC" in result.stderr
    assert not stack_dir.exists()


def test_down_refuses_before_purging(tmp_path):
    """down.sh --purge with a STACK_DIR holding a newline deletes nothing, even when that directory is a stack's."""
    stack_dir = tmp_path / "a\nb"
    stack_dir.mkdir()
    (stack_dir / ".local-stack").touch()
    result = run_stack("down.sh", private_stack_environment(stack_dir), "--purge")
    assert result.returncode != 0
    assert "ERROR: STACK_DIR" in result.stderr
    assert (stack_dir / ".local-stack").exists()


def test_status_refuses_a_bad_port():
    """status.sh checks the same values: a port that is no number is named."""
    result = run_stack("status.sh", clean_environment(MYSQL_PORT="3306;id"))
    assert result.returncode != 0
    assert "ERROR: MYSQL_PORT" in result.stderr


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The stack scripts in a repository of their own, whose .env a test writes; config and the virtualenv are the real ones."""
    repo = tmp_path / "repo"
    shutil.copytree(STACK, repo / "stack", ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ("config", "errors.py", ".venv"):
        (repo / shared).symlink_to(REPO_ROOT / shared)
    return repo


@pytest.mark.parametrize(
    ("variable", "line"),
    [
        ("KAFKA_PORT", "KAFKA_PORT=$(touch {marker})"),
        ("KAFKA_PORT", "KAFKA_PORT='1; touch {marker}'"),
        ("MYSQL_PASSWORD", 'MYSQL_PASSWORD="x\\ninit_connect=DROP DATABASE purchases"'),
        ("MYSQL_DATABASE", "MYSQL_DATABASE='a`b'"),
        ("KAFKA_HEAP_OPTS", "KAFKA_HEAP_OPTS='-Xmx1g `touch {marker}`'"),
    ],
)
def test_up_refuses_a_bad_value_from_env_file(repo_copy, tmp_path, variable, line):
    """The same values in .env are refused the same way: .env is read as data, then checked."""
    marker = tmp_path / "pwned"
    ports = dict(zip(("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "MYSQL_PORT", "KAFKA_SASL_SSL_PORT"), free_ports(4), strict=True))
    ports.pop(variable, None)
    (repo_copy / ".env").write_text("".join(f"{name}={port}\n" for name, port in ports.items()) + line.format(marker=marker) + "\n")
    result = run_stack("up.sh", clean_environment(), stack=repo_copy / "stack")
    refused_before_anything(result, variable, repo_copy / ".stack", marker)


def test_port_open_never_runs_its_argument(tmp_path):
    """port_open hands the port to its inner shell as an argument, so even an unchecked value cannot run."""
    marker = tmp_path / "pwned"
    result = run_lib('port_open "$1"; echo done', f"1; touch {marker}")
    assert result.stdout.strip() == "done"
    assert not marker.exists()


def test_sql_literals_escape_quotes_and_backslashes():
    """sql_str doubles ' and \\ for MariaDB's default sql_mode; sql_ident doubles backticks."""
    result = run_lib('sql_str "$1"; echo; sql_ident "$2"', "it's \\ a'); DROP USER root; --", "a`b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["'it''s \\\\ a''); DROP USER root; --'", "`a``b`"]


def test_the_stacks_pipeline_names_default_as_the_programs_do():
    """The secured stack's ACLs name the topics and group of config's defaults when .env sets none."""
    result = run_lib('printf "%s\\n" "$INPUT_TOPIC" "$OUTPUT_TOPIC" "$DLQ_TOPIC" "$KAFKA_GROUP_ID" "$SHADOW_OUTPUT_TOPIC"')
    assert result.returncode == 0, result.stderr
    defaults = Settings()
    assert result.stdout.split("\n")[:5] == [
        defaults.input_topic, defaults.output_topic, defaults.dlq_topic, defaults.kafka_group_id, defaults.shadow_output_topic,
    ]


@pytest.mark.parametrize(("value", "expected"), [("on", "on"), ("TRUE", "on"), ("1", "on"), ("off", "off"), ("no", "off"), ("", "off")])
def test_stack_security_is_spelled_as_config_spells_booleans(value, expected):
    """STACK_SECURITY takes on/off and the words config/ takes for booleans."""
    result = run_lib('echo "$STACK_SECURITY"', env=clean_environment(STACK_SECURITY=value))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_the_password_may_come_from_mysql_password_file(tmp_path):
    """MYSQL_PASSWORD_FILE is read as config/ reads it: one trailing line end dropped, `$` and `#` kept."""
    password_file = tmp_path / "password"
    password_file.write_text("pa#ss$word\n")
    result = run_lib('printf "%s" "$MYSQL_PASSWORD"', env=clean_environment(MYSQL_PASSWORD_FILE=str(password_file)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pa#ss$word"


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("pw\n", {"MYSQL_PASSWORD": "other"}, "MYSQL_PASSWORD_FILE and MYSQL_PASSWORD are both set"),
        ("pw\ninit_connect=x\n", {}, "ERROR: MYSQL_PASSWORD holds a newline"),
        (None, {}, "MYSQL_PASSWORD_FILE: cannot read"),
    ],
)
def test_a_password_file_that_cannot_be_used_is_refused(tmp_path, content, extra, message):
    """Both spellings at once, a file whose password holds a newline, or a missing file stop the stack scripts."""
    password_file = tmp_path / "password"
    if content is not None:
        password_file.write_text(content)
    result = run_lib("echo loaded", env=clean_environment(MYSQL_PASSWORD_FILE=str(password_file), **extra))
    assert result.returncode != 0
    assert "loaded" not in result.stdout
    assert message in result.stderr


def test_a_password_file_named_in_env_file_is_read_relative_to_the_project(repo_copy):
    """MYSQL_PASSWORD_FILE=secrets/password in .env is the project's secrets/password, as for the programs."""
    (repo_copy / "secrets").mkdir()
    (repo_copy / "secrets" / "password").write_text("from-file\n")
    (repo_copy / ".env").write_text("MYSQL_PASSWORD_FILE=secrets/password\n")
    result = subprocess.run(["bash", "-c", 'source "$1" && printf "%s" "$MYSQL_PASSWORD"', "test", str(repo_copy / "stack" / "lib.sh")],
                            env=clean_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from-file"
