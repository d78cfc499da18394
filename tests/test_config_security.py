"""The security settings: their parsers and cross-checks, secrets read from X_FILE, and their masking."""

import os
from pathlib import Path

import pytest

from config import MASK, PROJECT_ROOT, SECRET_FILE_VARIABLES, ConfigError, Settings, describe_settings, load_settings, misspelt_variables

NO_FILE = Path("/nonexistent/.env")
SASL_LOGIN = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc"}


def load(env_file: Path = NO_FILE, /, **environ: str) -> Settings:
    return load_settings(environ=environ, env_file=env_file)


def config_error(**environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(**environ)
    return caught.value


def secret_file(tmp_path: Path, content: str, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


# -- defaults and parsers -----------------------------------------------------------------------


def test_the_defaults_connect_as_before_plaintext_and_no_mysql_tls():
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT" and settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_ssl_check_hostname is True and settings.mysql_ssl_mode == "disabled"
    assert load() == settings


def test_protocol_and_mechanism_take_any_case_and_keep_kafkas_spelling():
    settings = load(KAFKA_SECURITY_PROTOCOL="sasl_ssl", KAFKA_SASL_MECHANISM="scram-sha-256", KAFKA_SASL_USERNAME="u",
                    KAFKA_SASL_PASSWORD="p")
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("KAFKA_SECURITY_PROTOCOL", "TLS"), ("KAFKA_SASL_MECHANISM", "GSSAPI"), ("KAFKA_SSL_CHECK_HOSTNAME", "maybe"),
     ("MYSQL_SSL_MODE", "preferred")],
)
def test_a_value_outside_the_choices_names_its_variable(variable, value):
    error = config_error(**{variable: value})
    assert error.variable == variable and repr(value) in str(error)


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("FALSE", False), ("no", False), ("0", False), ("true", True), ("1", True)]
)
def test_the_host_name_check_reads_as_a_flag(raw, expected):
    assert load(KAFKA_SSL_CHECK_HOSTNAME=raw).kafka_ssl_check_hostname is expected


def test_a_relative_certificate_path_is_taken_from_the_project():
    settings = load(KAFKA_SSL_CAFILE="stack/security/ca.crt", MYSQL_SSL_CA="/etc/ssl/ca.pem")
    assert settings.kafka_ssl_cafile == str(PROJECT_ROOT / "stack" / "security" / "ca.crt")
    assert settings.mysql_ssl_ca == "/etc/ssl/ca.pem"


# -- cross-checks -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_needs_a_username_and_a_password(protocol):
    assert config_error(KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_PASSWORD="pw").variable == "KAFKA_SASL_USERNAME"
    error = config_error(KAFKA_SECURITY_PROTOCOL=protocol, KAFKA_SASL_USERNAME="svc")
    assert error.variable == "KAFKA_SASL_PASSWORD" and "KAFKA_SASL_PASSWORD_FILE" in str(error)


def test_a_client_certificate_and_its_key_go_together():
    assert config_error(KAFKA_SSL_CERTFILE="/c.pem").variable == "KAFKA_SSL_CERTFILE"
    assert config_error(KAFKA_SSL_KEYFILE="/k.pem").variable == "KAFKA_SSL_KEYFILE"
    assert config_error(KAFKA_SSL_KEY_PASSWORD="x").variable == "KAFKA_SSL_KEY_PASSWORD"
    assert config_error(MYSQL_SSL_CERT="/c.pem").variable == "MYSQL_SSL_CERT"
    assert config_error(MYSQL_SSL_KEY="/k.pem").variable == "MYSQL_SSL_CERT"


@pytest.mark.parametrize("mode", ["verify_ca", "verify_identity"])
def test_verifying_mysql_needs_its_ca(mode):
    error = config_error(MYSQL_SSL_MODE=mode)
    assert error.variable == "MYSQL_SSL_CA" and mode in str(error)
    assert load(MYSQL_SSL_MODE=mode, MYSQL_SSL_CA="/ca.pem").mysql_ssl_mode == mode
    assert load(MYSQL_SSL_MODE="required").mysql_ssl_mode == "required"


# -- secrets from files -------------------------------------------------------------------------


def test_every_secret_has_a_file_variable():
    assert {"KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_KEY_PASSWORD_FILE", "MYSQL_PASSWORD_FILE"} == SECRET_FILE_VARIABLES


def test_a_secret_file_gives_its_content_without_the_line_end(tmp_path):
    """One trailing line end goes (echo, editors); spaces and anything else are part of the secret."""
    path = secret_file(tmp_path, " pa#ss word \r\n")
    assert load(MYSQL_PASSWORD_FILE=str(path)).mysql_password == " pa#ss word "
    assert load(MYSQL_PASSWORD_FILE=str(secret_file(tmp_path, "a\n\n", "two"))).mysql_password == "a\n"


def test_a_secret_file_satisfies_the_sasl_check(tmp_path):
    """KAFKA_SASL_PASSWORD is required with SASL; its file stands in for it."""
    assert load(**SASL_LOGIN, KAFKA_SASL_PASSWORD_FILE=str(secret_file(tmp_path, "kafka\n"))).kafka_sasl_password == "kafka"


def test_setting_both_in_one_place_is_an_error(tmp_path):
    path = str(secret_file(tmp_path, "from-file"))
    error = config_error(MYSQL_PASSWORD="typed", MYSQL_PASSWORD_FILE=path)
    assert error.variable == "MYSQL_PASSWORD_FILE" and "MYSQL_PASSWORD" in str(error) and "the environment" in str(error)
    env_file = tmp_path / ".env"
    env_file.write_text(f"MYSQL_PASSWORD=typed\nMYSQL_PASSWORD_FILE={path}\n")
    with pytest.raises(ConfigError, match=r"^MYSQL_PASSWORD_FILE: and MYSQL_PASSWORD are both set in \.env"):
        load(env_file)


def test_the_environment_wins_over_env_file_for_the_pair(tmp_path):
    """As for any variable: a copied .env.example's MYSQL_PASSWORD does not clash with MYSQL_PASSWORD_FILE typed on the command line."""
    env_file = tmp_path / ".env"
    env_file.write_text("MYSQL_PASSWORD=from-env-file\n")
    path = str(secret_file(tmp_path, "from-secret-file"))
    assert load(env_file, MYSQL_PASSWORD_FILE=path).mysql_password == "from-secret-file"
    env_file.write_text(f"MYSQL_PASSWORD_FILE={path}\n")
    assert load(env_file, MYSQL_PASSWORD="typed").mysql_password == "typed"
    assert load(env_file).mysql_password == "from-secret-file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_secret_file_is_named(tmp_path):
    path = secret_file(tmp_path, "pw")
    path.chmod(0)
    error = config_error(KAFKA_SSL_KEY_PASSWORD_FILE=str(path))
    assert error.variable == "KAFKA_SSL_KEY_PASSWORD_FILE" and str(path) in str(error)


@pytest.mark.parametrize("problem", ["missing", "directory", "binary", "empty name"])
def test_a_secret_file_that_cannot_be_read_is_a_config_error_naming_it(tmp_path, problem):
    path = {"missing": tmp_path / "absent", "directory": tmp_path, "binary": tmp_path / "bin", "empty name": None}[problem]
    if problem == "binary":
        path.write_bytes(b"\xff\xfe\x00pw")
    error = config_error(MYSQL_PASSWORD_FILE="" if path is None else str(path))
    assert error.variable == "MYSQL_PASSWORD_FILE"
    assert path is None or str(path) in str(error)
    assert error.exit_code == 2


def test_file_variables_are_known_names(tmp_path):
    """X_FILE in .env is no typo, and the environment's X_FILE gets no near-miss warning."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"KAFKA_SASL_PASSWORD_FILE={secret_file(tmp_path, 'pw')}\n")
    assert load(env_file).kafka_sasl_password == "pw"
    assert misspelt_variables(dict.fromkeys(SECRET_FILE_VARIABLES, "x")) == []


# -- masking ------------------------------------------------------------------------------------


def test_every_secret_is_masked_in_repr_and_describe(tmp_path):
    settings = load(
        **SASL_LOGIN, KAFKA_SASL_PASSWORD="kafka-secret", KAFKA_SSL_CERTFILE="/c.pem", KAFKA_SSL_KEYFILE="/k.pem",
        KAFKA_SSL_KEY_PASSWORD="key-secret", MYSQL_PASSWORD_FILE=str(secret_file(tmp_path, "mysql-secret")),
    )
    lines = describe_settings(settings).splitlines()
    for shown in (repr(settings), "\n".join(lines)):
        assert not {"kafka-secret", "key-secret", "mysql-secret"} & set(shown.replace("'", " ").replace("=", " ").split())
    assert f"KAFKA_SASL_PASSWORD={MASK}  # from the environment" in lines
    assert f"KAFKA_SSL_KEY_PASSWORD={MASK}  # from the environment" in lines
    assert f"MYSQL_PASSWORD={MASK}  # from MYSQL_PASSWORD_FILE in the environment" in lines
    assert "KAFKA_SSL_CHECK_HOSTNAME=true  # default" in lines
