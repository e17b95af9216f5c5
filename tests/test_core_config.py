import pytest

from mabeam.core.config import DEFAULT_NATS_URL, DEFAULT_PREFIX, Config
from mabeam.core.errors import ConfigError


def test_defaults_without_environment() -> None:
    config = Config.from_env({})
    assert config.nats_url == DEFAULT_NATS_URL
    assert config.prefix == DEFAULT_PREFIX


def test_environment_is_read_and_arguments_win() -> None:
    environ = {
        "MABEAM_NATS_URL": "nats://h1:4222",
        "MABEAM_PREFIX": "env",
        "MABEAM_MAX_PAYLOAD": "10",
    }
    config = Config.from_env(environ, prefix="arg", nats_url=None)
    assert config.nats_url == "nats://h1:4222"
    assert config.prefix == "arg"
    assert config.max_payload == 10


def test_several_servers() -> None:
    config = Config(nats_url="nats://a:1, nats://b:2")
    assert config.servers == ["nats://a:1", "nats://b:2"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nats_url": "http://x:1"}, "nats_url"),
        ({"nats_url": "nats://host:99999"}, "nats_url"),
        ({"nats_url": ""}, "nats_url"),
        ({"prefix": "a b"}, "prefix"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"max_payload": -1}, "max_payload"),
        ({"request_timeout": True}, "request_timeout"),
        ({"request_timeout": float("nan")}, "request_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"call_retry_for": float("nan")}, "call_retry_for"),
    ],
)
def test_invalid_values_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**changes)  # type: ignore[arg-type]


def test_unparsable_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MABEAM_CONNECT_TIMEOUT"):
        Config.from_env({"MABEAM_CONNECT_TIMEOUT": "soon"})


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="colour"):
        Config.from_env({}, colour="red")


def test_with_revalidates() -> None:
    with pytest.raises(ConfigError):
        Config().with_(prefix="")


def test_events_mode_and_history_come_from_the_environment_and_are_checked() -> None:
    config = Config.from_env({"MABEAM_EVENTS_MODE": "binary", "MABEAM_EVENTS_HISTORY": "a.>, b.*"})
    assert (config.events_mode, config.events_history) == ("binary", ("a.>", "b.*"))
    assert (Config().events_mode, Config().events_history) == ("structured", (">",))
    with pytest.raises(ConfigError, match="events_mode"):
        Config(events_mode="xml")
    for bad in ((), ("a..b",), ">"):
        with pytest.raises(ConfigError, match="events_history"):
            Config(events_history=bad)  # type: ignore[arg-type]
