"""Authentication and TLS settings: validated on construction, secrets never shown, and mapped
onto nats-py's connect options from the API, the environment and the command line."""

from __future__ import annotations

import os
from pathlib import Path

import nats.errors
import nkeys
import pytest

from mabeam.cli.common import config_from_args
from mabeam.cli.main import build_parser
from mabeam.core.config import Config, redact_url
from mabeam.core.connection import is_auth_error, map_nats_error, security_options
from mabeam.core.errors import ConfigError, ConnectError

SEED = nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_USER).decode()
CREDS = (
    "-----BEGIN NATS USER JWT-----\neyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl\n"
    "------END NATS USER JWT------\n\n"
    f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    contents = {"seed": SEED + "\n", "creds": CREDS, "pem": "not really a PEM\n"}
    paths = {}
    for name, text in contents.items():
        path = tmp_path / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


def test_every_auth_and_tls_field_is_read_from_the_environment(files: dict[str, str]) -> None:
    environ = {
        "MABEAM_USER": "runner",
        "MABEAM_PASSWORD": "s3cret",
        "MABEAM_TLS_CA_FILE": files["pem"],
        "MABEAM_TLS_CERT_FILE": files["pem"],
        "MABEAM_TLS_KEY_FILE": files["pem"],
        "MABEAM_TLS_HOSTNAME": "nats.example",
        "MABEAM_TLS_HANDSHAKE_FIRST": "yes",
    }
    config = Config.from_env(environ)
    assert (config.user, config.password) == ("runner", "s3cret")
    assert config.tls_ca_file == config.tls_cert_file == config.tls_key_file == files["pem"]
    assert (config.tls_hostname, config.tls_handshake_first) == ("nats.example", True)
    assert Config.from_env({"MABEAM_TOKEN": "t0k"}).token == "t0k"
    assert Config.from_env({"MABEAM_NKEY_SEED_FILE": files["seed"]}).nkey_seed_file == files["seed"]
    assert Config.from_env({"MABEAM_CREDS_FILE": files["creds"]}).creds_file == files["creds"]


def test_a_bad_boolean_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MABEAM_TLS_HANDSHAKE_FIRST"):
        Config.from_env({"MABEAM_TLS_HANDSHAKE_FIRST": "maybe"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"user": "runner"}, "user is set but password is not"),
        ({"password": "pw"}, "password is set but user is not"),
        ({"user": "u", "password": "p", "token": "t"}, "not user and token"),
        ({"token": "t", "nkey_seed_file": "{seed}"}, "not token and nkey_seed_file"),
        ({"nkey_seed_file": "{seed}", "creds_file": "{creds}"}, "nkey_seed_file and creds_file"),
        ({"token": ""}, "token must be a non-empty string"),
        ({"nkey_seed_file": "/no/such/seed"}, "nkey_seed_file '/no/such/seed' is not a file"),
        ({"creds_file": "{missing}"}, "creds_file .* is not a file"),
        ({"tls_ca_file": "{missing}"}, "tls_ca_file .* is not a file"),
        ({"nkey_seed_file": "{pem}"}, "nkey_seed_file .* does not hold a user nkey seed"),
        ({"creds_file": "{seed}"}, "creds_file .* is not a NATS credentials file"),
        ({"tls_cert_file": "{pem}"}, "tls_cert_file and tls_key_file go together"),
        ({"tls_key_file": "{pem}"}, "tls_cert_file and tls_key_file go together"),
        ({"tls_handshake_first": "yes"}, "tls_handshake_first must be true or false"),
    ],
)
def test_inconsistent_or_missing_credentials_name_the_field(
    files: dict[str, str], fields: dict[str, object], message: str
) -> None:
    paths = {**files, "missing": files["pem"] + ".gone"}
    values = {
        key: value.format(**paths) if isinstance(value, str) else value
        for key, value in fields.items()
    }
    with pytest.raises(ConfigError, match=message):
        Config(**values)  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused(files: dict[str, str]) -> None:
    os.chmod(files["seed"], 0)
    with pytest.raises(ConfigError, match=r"nkey_seed_file .* is not readable"):
        Config(nkey_seed_file=files["seed"])


def test_secrets_never_appear_in_repr() -> None:
    config = Config(
        nats_url="nats://app:url-pw@127.0.0.1:4222",
        user="runner",
        password="pass-word",
        extra={"token": "extra-token", "inbox_prefix": "_I"},
    )
    shown = repr(config)
    for secret in ("url-pw", "pass-word", "extra-token"):
        assert secret not in shown
    assert "user='runner'" in shown and "password='***'" in shown and "'_I'" in shown
    assert "'***'" in repr(Config(token="tok-en")) and "tok-en" not in repr(Config(token="tok-en"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://u:pw@h:4222", "nats://u:***@h:4222"),
        ("tls://just-a-token@h:4222", "tls://***@h:4222"),
        ("nats://h:4222", "nats://h:4222"),
    ],
)
def test_urls_are_shown_with_their_secret_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert Config(nats_url=f"{url}, nats://other:1").display_url == f"{shown}, nats://other:1"


def test_each_auth_method_becomes_its_nats_py_option(files: dict[str, str]) -> None:
    assert security_options(Config()) == {}
    assert security_options(Config(user="u", password="p")) == {"user": "u", "password": "p"}
    assert security_options(Config(token="t")) == {"token": "t"}
    assert security_options(Config(nkey_seed_file=files["seed"])) == {"nkeys_seed": files["seed"]}
    assert security_options(Config(creds_file=files["creds"])) == {
        "user_credentials": files["creds"]
    }
    assert security_options(Config(tls_hostname="n", tls_handshake_first=True)) == {
        "tls_hostname": "n",
        "tls_handshake_first": True,
    }


def test_tls_files_become_an_ssl_context_and_bad_pem_names_the_field(
    files: dict[str, str],
) -> None:
    with pytest.raises(ConfigError, match="tls_ca_file"):
        security_options(Config(tls_ca_file=files["pem"]))
    with pytest.raises(ConfigError, match="tls_cert_file"):
        security_options(Config(tls_cert_file=files["pem"], tls_key_file=files["pem"]))


@pytest.mark.parametrize("command", ["runner", "call", "spawn", "publish", "subscribe", "agents"])
def test_every_connecting_command_takes_the_security_options(
    command: str, files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MABEAM_PASSWORD", "from-env")
    positional = {"call": ["a1", "ping"], "spawn": ["demo"], "publish": ["t", "{}"]}
    positional["subscribe"] = ["t.>"]
    argv = [command, *positional.get(command, [])]
    argv += ["--user", "runner", "--tls-ca", files["pem"], "--tls-hostname", "nats.example"]
    argv += ["--tls-handshake-first"]
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert (config.user, config.password, config.tls_ca_file) == (
        "runner",
        "from-env",
        files["pem"],
    )
    assert (config.tls_hostname, config.tls_handshake_first) == ("nats.example", True)


def test_command_line_credentials_combine_with_the_environment(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MABEAM_PASSWORD", "env-secret")
    args = build_parser().parse_args(["call", "a1", "ping", "--user", "client"])
    config = config_from_args(args)
    assert (config.user, config.password, config.tls_handshake_first) == (
        "client",
        "env-secret",
        False,
    )
    monkeypatch.delenv("MABEAM_PASSWORD")
    for flag, value, field in (
        ("--token", "tok", "token"),
        ("--nkey", files["seed"], "nkey_seed_file"),
        ("--creds", files["creds"], "creds_file"),
    ):
        args = build_parser().parse_args(["call", "a1", "ping", flag, value])
        assert getattr(config_from_args(args), field) == value


@pytest.mark.parametrize(
    "error",
    [nats.errors.AuthorizationError(), nats.errors.Error("nats: 'Authorization Violation'")],
)
def test_an_authorization_failure_maps_to_a_connect_error(error: Exception) -> None:
    assert is_auth_error(error)
    mapped = map_nats_error(error)
    assert isinstance(mapped, ConnectError)
    assert mapped.message.startswith("authorization violation")


def test_tls_failures_map_to_a_connect_error() -> None:
    mapped = map_nats_error(nats.errors.SecureConnWantedError())
    assert isinstance(mapped, ConnectError) and mapped.message.startswith("TLS")
    assert not is_auth_error(nats.errors.Error("nats: 'Permissions Violation for Publish'"))
