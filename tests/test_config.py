import re
from pathlib import Path

import pytest

from config import OTHER_VARIABLES, SECRET_FILE_VARIABLES, SETTING_NAMES, ConfigError, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_FILE = Path("/nonexistent/.env")


def test_defaults_apply_when_nothing_is_set():
    """With an empty environment every setting takes its documented default."""
    settings = load_settings(environ={}, env_file=NO_FILE)
    assert settings == Settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert (settings.input_topic, settings.output_topic) == ("input_topic", "output_topic")


def test_values_are_parsed_to_their_types():
    """Numbers become ints; an absolute model path is kept as given."""
    settings = load_settings(environ={"MYSQL_PORT": "3307", "MODEL_URI": "/tmp/m.joblib", "BATCH_MAX_RECORDS": " 50 "}, env_file=NO_FILE)
    assert settings.mysql_port == 3307
    assert settings.batch_max_records == 50
    assert settings.model_uri == "/tmp/m.joblib"


def test_the_default_model_uri_is_the_projects_registry():
    """With MODEL_URI unset the service serves what the local registry under model/registry promotes."""
    assert load_settings(environ={}, env_file=NO_FILE).model_uri == str(REPO_ROOT / "model" / "registry")


@pytest.mark.parametrize("variable", ["MODEL_URI", "SHADOW_MODEL_URI"])
def test_a_relative_model_uri_is_relative_to_the_project(variable):
    """MODEL_URI=model/x.joblib means the same file whatever the working directory; a registry directory alike."""
    assert getattr(load_settings(environ={variable: "model/x.joblib"}, env_file=NO_FILE), variable.lower()) == str(
        REPO_ROOT / "model" / "x.joblib"
    )
    assert getattr(load_settings(environ={variable: "models-here"}, env_file=NO_FILE), variable.lower()) == str(REPO_ROOT / "models-here")


def test_an_mlflow_model_uri_is_kept_as_given():
    """models:/NAME@ALIAS names a model in the MLflow registry, not a path: it is not made absolute."""
    settings = load_settings(
        environ={"MODEL_URI": "models:/purchase-model@champion", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}, env_file=NO_FILE
    )
    assert settings.model_uri == "models:/purchase-model@champion"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize("value", ["models:/x", "models:/x@", "models:/@champion", "models:/a/b@champion"])
def test_a_malformed_mlflow_model_uri_is_refused(value):
    """A models:/ URI without both NAME and ALIAS is named as MODEL_URI's error."""
    with pytest.raises(ConfigError, match="models:/NAME@ALIAS") as caught:
        load_settings(environ={"MODEL_URI": value, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}, env_file=NO_FILE)
    assert caught.value.variable == "MODEL_URI"


@pytest.mark.parametrize("variable", ["MODEL_URI", "SHADOW_MODEL_URI"])
def test_an_mlflow_model_needs_a_tracking_server(variable):
    """models:/NAME@ALIAS without MLFLOW_TRACKING_URI cannot be resolved: refused at start-up, naming the missing setting."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: "models:/purchase-model@champion"}, env_file=NO_FILE)
    assert caught.value.variable == "MLFLOW_TRACKING_URI"


def test_a_shadow_output_topic_needs_a_shadow_model():
    """SHADOW_OUTPUT_TOPIC alone would publish nothing: refused, naming it."""
    with pytest.raises(ConfigError, match="SHADOW_MODEL_URI") as caught:
        load_settings(environ={"SHADOW_OUTPUT_TOPIC": "shadow_predictions"}, env_file=NO_FILE)
    assert caught.value.variable == "SHADOW_OUTPUT_TOPIC"
    settings = load_settings(
        environ={"SHADOW_OUTPUT_TOPIC": "shadow_predictions", "SHADOW_MODEL_URI": "/tmp/shadow.joblib"}, env_file=NO_FILE
    )
    assert (settings.shadow_model_uri, settings.shadow_output_topic) == ("/tmp/shadow.joblib", "shadow_predictions")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MYSQL_PORT", "abc"),
        ("MYSQL_PORT", "70000"),
        ("TOPIC_PARTITIONS", "0"),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("KAFKA_BOOTSTRAP_SERVERS", " , "),
        ("INPUT_TOPIC", "   "),
        ("LOG_LEVEL", "loud"),
        ("BATCH_MAX_RECORDS", "1.5"),
    ],
)
def test_a_bad_value_names_its_variable(variable, value):
    """A malformed value raises ConfigError whose message starts with the variable's name."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value}, env_file=NO_FILE)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}:")


def test_topics_must_differ():
    """Publishing dead letters to the input topic would loop them forever, so it is refused."""
    with pytest.raises(ConfigError, match="DLQ_TOPIC"):
        load_settings(environ={"DLQ_TOPIC": "input_topic"}, env_file=NO_FILE)


def test_environment_wins_over_env_file(tmp_path):
    """A variable in the environment overrides the same one in .env; others come from the file."""
    env_file = tmp_path / ".env"
    env_file.write_text("INPUT_TOPIC=from_file\nOUTPUT_TOPIC=out_from_file\n")
    settings = load_settings(environ={"INPUT_TOPIC": "from_env"}, env_file=env_file)
    assert settings.input_topic == "from_env"
    assert settings.output_topic == "out_from_file"


def test_settings_are_frozen():
    """Settings are parsed once and cannot be changed behind other modules' backs."""
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.input_topic = "other"  # type: ignore[misc]


def documented_in_env_example() -> dict[str, str]:
    """`NAME=value` lines of .env.example, commented out or not."""
    example = (REPO_ROOT / ".env.example").read_text()
    return dict(re.findall(r"^(?:# )?([A-Z_]+)=(.*)$", example, flags=re.MULTILINE))


def test_env_example_documents_every_setting_with_its_default():
    """.env.example names every setting with its default value, and every other variable .env may hold
    (the secrets' X_FILE variables may be shown too)."""
    documented = documented_in_env_example()
    assert SETTING_NAMES | OTHER_VARIABLES <= set(documented) <= SETTING_NAMES | OTHER_VARIABLES | SECRET_FILE_VARIABLES
    settings_part = {name: value for name, value in documented.items() if name in SETTING_NAMES}
    assert load_settings(environ=settings_part, env_file=NO_FILE) == Settings()


def test_a_copy_of_env_example_gives_the_defaults():
    """`cp .env.example .env` is accepted as it stands and changes nothing."""
    assert load_settings(environ={}, env_file=REPO_ROOT / ".env.example") == Settings()


def test_the_programs_follow_the_stacks_kafka_port():
    """With KAFKA_BOOTSTRAP_SERVERS unset, KAFKA_PORT (which moves the local stack) sets its port, also under a copied .env.example."""
    moved = load_settings(environ={"KAFKA_PORT": "19092"}, env_file=REPO_ROOT / ".env.example")
    assert moved.kafka_bootstrap_servers == "localhost:19092"


def test_an_explicit_bootstrap_address_wins_over_kafka_port(tmp_path):
    """KAFKA_BOOTSTRAP_SERVERS, from the environment or .env, is used as given whatever KAFKA_PORT says."""
    env_file = tmp_path / ".env"
    env_file.write_text("KAFKA_BOOTSTRAP_SERVERS=broker:9094\n")
    assert load_settings(environ={"KAFKA_PORT": "19092"}, env_file=env_file).kafka_bootstrap_servers == "broker:9094"
    settings = load_settings(environ={"KAFKA_PORT": "19092", "KAFKA_BOOTSTRAP_SERVERS": "b:1"}, env_file=NO_FILE)
    assert settings.kafka_bootstrap_servers == "b:1"


def test_a_bad_kafka_port_is_named_when_the_programs_follow_it():
    """A KAFKA_PORT that is not a port stops start-up with a message naming KAFKA_PORT."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"KAFKA_PORT": "90920"}, env_file=NO_FILE)
    assert caught.value.variable == "KAFKA_PORT"


def test_no_module_but_config_reads_the_environment():
    """Only config/loading.py touches os.environ; everything else gets Settings passed down.

    Tests and tools/ are exempt: they launch the programs and hand the environment on to them. So is
    stack/: its shell scripts read the environment themselves, and stack/env_file.py hands them `.env`
    less what the environment already sets.
    """
    offenders = [
        path.relative_to(REPO_ROOT)
        for path in REPO_ROOT.rglob("*.py")
        if not path.is_relative_to(REPO_ROOT / "tests")
        and not path.is_relative_to(REPO_ROOT / "tools")
        and not path.is_relative_to(REPO_ROOT / "stack")
        and not any(part.startswith(".") for part in path.relative_to(REPO_ROOT).parts)
        and path != REPO_ROOT / "config" / "loading.py"
        and re.search(r"os\.environ|os\.getenv", path.read_text())
    ]
    assert offenders == []
