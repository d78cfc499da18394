"""Variable names: a `.env` key config does not know is an error, a misspelt environment variable a warning."""

import re
from pathlib import Path

import pytest

from config import OTHER_VARIABLES, SECRET_FILE_VARIABLES, SETTING_NAMES, ConfigError, Settings, load_settings, misspelt_variables

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_FILE = Path("/nonexistent/.env")


def env_file_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_an_unknown_env_file_key_is_an_error_with_a_suggestion(tmp_path):
    """LOGLEVEL=debug in .env stops start-up, naming LOGLEVEL, the file and LOG_LEVEL as the likely intent."""
    env_file = env_file_with(tmp_path, "INPUT_TOPIC=in\nLOGLEVEL=debug\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, env_file=env_file)
    assert caught.value.variable == "LOGLEVEL"
    assert str(env_file) in str(caught.value)
    assert str(caught.value).endswith("did you mean LOG_LEVEL?")


def test_an_unknown_key_with_no_near_name_points_at_env_example(tmp_path):
    """A key resembling nothing known is still refused, and the message says where the settings are listed."""
    with pytest.raises(ConfigError, match=r"^FROBNICATE: .*\.env\.example"):
        load_settings(environ={}, env_file=env_file_with(tmp_path, "FROBNICATE=1\n"))


def test_an_unknown_key_is_refused_even_when_the_environment_sets_it(tmp_path):
    """The typo is in the file, so the file is refused whatever the environment holds."""
    with pytest.raises(ConfigError, match="did you mean MYSQL_PASSWORD"):
        load_settings(environ={"MYSQL_PASWORD": "x"}, env_file=env_file_with(tmp_path, "MYSQL_PASWORD=x\n"))


def test_the_stacks_and_composes_variables_are_allowed_in_env_file(tmp_path):
    """Variables the local stack or docker compose read are accepted in .env and leave the settings alone."""
    text = "".join(f"{name}=1\n" for name in sorted(OTHER_VARIABLES - {"KAFKA_PORT"})) + "COMPOSE_PROJECT_NAME=shop\n"
    assert load_settings(environ={}, env_file=env_file_with(tmp_path, text)) == Settings()


def test_other_variables_cover_what_the_stack_and_compose_read():
    """Every variable stack/*.sh or docker-compose.yml takes from the environment, with a default (`${X:-d}`) or
    required (`${X:?message}`), is a setting, a secret's X_FILE spelling or in OTHER_VARIABLES."""
    read = set()
    for path in [*sorted((REPO_ROOT / "stack").glob("*.sh")), REPO_ROOT / "docker-compose.yml"]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-?]", code))
    assert {"STACK_DIR", "MYSQL_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= read
    assert read - SETTING_NAMES - OTHER_VARIABLES - SECRET_FILE_VARIABLES == set()


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("KAFKA_BOOTSTRAP_SERVER", "KAFKA_BOOTSTRAP_SERVERS"), ("LOGLEVEL", "LOG_LEVEL"), ("log_level", "LOG_LEVEL"),
     ("MYSQL_PASSWD", "MYSQL_PASSWORD"), ("KAFKA_CONTROLER_PORT", "KAFKA_CONTROLLER_PORT")],
)
def test_a_near_miss_in_the_environment_is_warned_about(typed, meant):
    """An environment variable one slip away from a known name gets a warning naming both."""
    [warning] = misspelt_variables({typed: "x"})
    assert f" {typed} " in warning and warning.endswith(f"did you mean {meant}?")


def test_other_programs_variables_get_no_warning():
    """Known names, and other tools' variables that merely share a prefix (MYSQL_TCP_PORT, KAFKA_OPTS), pass silently."""
    environ = dict.fromkeys(
        ["PATH", "HOME", "HOSTNAME", "USER", "JAVA_HOME", "KAFKA_OPTS", "MYSQL_TCP_PORT", "MYSQL_UNIX_PORT", "MYSQL_PWD",
         "LOG_LEVEL", "KAFKA_PORT", "STACK_DIR", "COMPOSE_PROJECT_NAME"], "x")
    assert misspelt_variables(environ) == []
