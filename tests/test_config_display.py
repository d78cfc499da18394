"""Showing settings: the password never appears, and --check-config says where each value came from."""

import dataclasses
from pathlib import Path

from config import MASK, Settings, describe_settings, load_settings

NO_FILE = Path("/nonexistent/.env")
SECRET = "pa#ss$word"


def test_repr_masks_the_password():
    """repr, str and f-strings of Settings show *** for MYSQL_PASSWORD and never the password."""
    settings = load_settings(environ={"MYSQL_PASSWORD": SECRET}, env_file=NO_FILE)
    for shown in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert SECRET not in shown
        assert f"mysql_password='{MASK}'" in shown
    assert "mysql_user='prediction'" in repr(settings)


def test_describe_lists_every_setting_with_its_source(tmp_path):
    """One NAME=value line per setting, each noting the environment, .env or the default."""
    env_file = tmp_path / ".env"
    env_file.write_text("INPUT_TOPIC=from_file\nOUTPUT_TOPIC=overridden\n")
    settings = load_settings(environ={"OUTPUT_TOPIC": "from_env"}, env_file=env_file)
    lines = describe_settings(settings).splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [field.metadata["env"] for field in dataclasses.fields(Settings)]
    assert "INPUT_TOPIC=from_file  # from .env" in lines
    assert "OUTPUT_TOPIC=from_env  # from the environment" in lines
    assert "DLQ_TOPIC=dead_letter_topic  # default" in lines


def test_describe_masks_the_password_and_names_a_derived_address():
    """The password shows as ***, and a bootstrap address taken from KAFKA_PORT says so."""
    settings = load_settings(environ={"MYSQL_PASSWORD": SECRET, "KAFKA_PORT": "19092"}, env_file=NO_FILE)
    text = describe_settings(settings)
    assert SECRET not in text
    assert f"MYSQL_PASSWORD={MASK}  # from the environment" in text.splitlines()
    assert "KAFKA_BOOTSTRAP_SERVERS=localhost:19092  # from KAFKA_PORT in the environment" in text.splitlines()


def test_describe_a_hand_built_settings():
    """Settings made in code, not loaded, still describe each value as default or set by the program."""
    lines = describe_settings(Settings(batch_max_records=7)).splitlines()
    assert "BATCH_MAX_RECORDS=7  # set by the program" in lines
    assert "POLL_TIMEOUT_MS=200  # default" in lines

