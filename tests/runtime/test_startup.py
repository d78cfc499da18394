import json
import logging
from pathlib import Path

import pytest

from errors import SETUP_EXIT_CODE
from runtime.startup import start_program

NO_FILE = Path("/nonexistent/.env")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    previous = root.handlers[:], root.level
    yield
    root.handlers[:], level = previous
    root.setLevel(level)


def test_a_misspelt_variable_is_logged_once_through_the_configured_logging(capsys, restore_logging):
    """KAFKA_BOOTSTRAP_SERVER in the environment gives one WARNING, in the LOG_FORMAT chosen, naming the intended setting."""
    start_program(environ={"KAFKA_BOOTSTRAP_SERVER": "kafka:9092", "LOG_FORMAT": "json", "PATH": "/usr/bin"}, env_file=NO_FILE)
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(entries) == 1
    assert entries[0]["level"] == "warning"
    assert "KAFKA_BOOTSTRAP_SERVER " in entries[0]["message"] and "KAFKA_BOOTSTRAP_SERVERS?" in entries[0]["message"]


def test_an_unknown_env_file_key_exits_with_code_2(tmp_path, capsys, restore_logging):
    """A typo in .env stops the program with exit code 2 and a message suggesting the right name."""
    env_file = tmp_path / ".env"
    env_file.write_text("LOGLEVEL=debug\n")
    with pytest.raises(SystemExit) as stopped:
        start_program(environ={}, env_file=env_file)
    assert stopped.value.code == SETUP_EXIT_CODE
    assert "did you mean LOG_LEVEL?" in capsys.readouterr().err
