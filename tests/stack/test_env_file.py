"""The local stack reads .env as config/ does, so `#` and `$` in a value survive in both."""

import subprocess
import sys

from config import load_settings
from tests.stack.shell import REPO_ROOT, clean_environment, run_lib

PRINT_VALUES = 'load_env_file "$1" && printf "%s\\0" "$MYSQL_PASSWORD" "$MYSQL_USER" "$MYSQL_DATABASE" "$INPUT_TOPIC" "$KAFKA_HEAP_OPTS"'
ENV_TEXT = """\
MYSQL_PASSWORD=pa#ss$word
MYSQL_USER='we ird#user$x'
MYSQL_DATABASE="shop$db"
INPUT_TOPIC=events # a comment
KAFKA_HEAP_OPTS='-Xms64m -Xmx128m'
"""


def stack_values(env_file, env=None) -> list[str]:
    result = run_lib(PRINT_VALUES, str(env_file), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\0")[:-1]


def test_stack_and_programs_read_the_same_values(tmp_path):
    """A password like pa#ss$word, quoting and comments give the stack exactly the values config.load_settings gets."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_TEXT)
    settings = load_settings(environ={}, env_file=env_file)
    assert settings.mysql_password == "pa#ss$word"
    expected = [settings.mysql_password, settings.mysql_user, settings.mysql_database, settings.input_topic, "-Xms64m -Xmx128m"]
    assert stack_values(env_file) == expected


def test_the_environment_wins_over_env_file_for_the_stack_too(tmp_path):
    """A variable exported to the stack scripts beats the same one in .env, as it does for the programs."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_TEXT)
    values = stack_values(env_file, env=clean_environment(MYSQL_PASSWORD="from$env"))
    assert values[0] == "from$env"
    assert values[3] == "events"


def test_an_unknown_key_stops_the_stack_with_a_suggestion(tmp_path):
    """LOGLEVEL in .env makes the stack scripts fail, with the same did-you-mean as the programs."""
    env_file = tmp_path / ".env"
    env_file.write_text("LOGLEVEL=debug\n")
    result = run_lib('load_env_file "$1" && echo loaded', str(env_file))
    assert result.returncode != 0
    assert "loaded" not in result.stdout
    assert "did you mean LOG_LEVEL?" in result.stderr



def test_a_secret_set_in_the_environment_takes_its_file_spelling_from_there_too(tmp_path):
    """MYSQL_PASSWORD_FILE in .env is not handed on when the environment sets MYSQL_PASSWORD: the pair is decided there, as in config/."""
    env_file = tmp_path / ".env"
    env_file.write_text("MYSQL_PASSWORD_FILE=secrets/password\nINPUT_TOPIC=events\n")

    def assignments(**environ: str) -> list[str]:
        result = subprocess.run([sys.executable, str(REPO_ROOT / "stack" / "env_file.py"), str(env_file)],
                                env=clean_environment(**environ), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert assignments() == ["MYSQL_PASSWORD_FILE=secrets/password", "INPUT_TOPIC=events"]
    assert assignments(MYSQL_PASSWORD="from-env") == ["INPUT_TOPIC=events"]
