"""Configuration from arguments and environment, validated on construction.

`Config.from_env(**overrides)` reads `MABEAM_*` variables and lets explicit arguments (from the
CLI or the API) win over them. Every field is checked; a bad value is a `ConfigError` that names
the field and the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from mabeam.core.errors import BadRequestError, ConfigError
from mabeam.core.names import Subjects, validate_prefix

__all__ = ["DEFAULT_NATS_URL", "DEFAULT_PREFIX", "Config"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "mabeam"
_URL_SCHEMES = ("nats", "tls", "ws", "wss")

# Environment variable → (field name, parser).
_ENV: dict[str, tuple[str, str]] = {
    "MABEAM_NATS_URL": ("nats_url", "str"),
    "MABEAM_PREFIX": ("prefix", "str"),
    "MABEAM_CONNECT_TIMEOUT": ("connect_timeout", "float"),
    "MABEAM_REQUEST_TIMEOUT": ("request_timeout", "float"),
    "MABEAM_MAX_PAYLOAD": ("max_payload", "int"),
    "MABEAM_EVENTS_MAX_AGE": ("events_max_age", "float"),
    "MABEAM_EVENTS_MAX_MSGS": ("events_max_msgs", "int"),
}


@dataclass(frozen=True, slots=True)
class Config:
    """Settings shared by clients and runners; immutable and valid once built."""

    nats_url: str = DEFAULT_NATS_URL
    """One or more server URLs, comma-separated."""
    prefix: str = DEFAULT_PREFIX
    """The subject prefix `P`; two prefixes on one server are two isolated systems."""
    name: str = "mabeam"
    """The NATS connection name, as shown by the server's monitoring."""
    connect_timeout: float = 2.0
    """Seconds to wait for the first connection."""
    request_timeout: float = 5.0
    """Default seconds a request (call, spawn) waits for its reply."""
    max_payload: int = 1024 * 1024
    """Largest accepted body in bytes (413 above it)."""
    events_max_age: float = 24 * 3600.0
    """Seconds the `P_EVENTS` stream keeps an event."""
    events_max_msgs: int = 1_000_000
    """Most events the `P_EVENTS` stream keeps."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further nats-py connect options (user, password, token, tls ...), passed through."""

    def __post_init__(self) -> None:
        self._check_urls()
        try:
            validate_prefix(self.prefix)
        except BadRequestError as exc:
            raise ConfigError(f"prefix: {exc.message}") from exc
        self._check_positive("connect_timeout", "request_timeout", "events_max_age")
        self._check_positive("max_payload", "events_max_msgs")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from `MABEAM_*` variables, with non-None `overrides` winning."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable, (name, kind) in _ENV.items():
            raw = environ.get(variable)
            if raw is not None and raw != "":
                values[name] = _parse(variable, raw, kind)
        values.update({key: value for key, value in overrides.items() if value is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed, validated again."""
        return replace(self, **changes)

    @property
    def subjects(self) -> Subjects:
        """The subject and bucket names of this config's prefix."""
        return Subjects(self.prefix)

    @property
    def servers(self) -> list[str]:
        """The server URLs as a list."""
        return [url.strip() for url in self.nats_url.split(",")]

    def _check_urls(self) -> None:
        if not isinstance(self.nats_url, str) or not self.nats_url.strip():
            raise ConfigError("nats_url must be a non-empty URL such as nats://127.0.0.1:4222")
        for url in self.servers:
            parts = urlsplit(url)
            if parts.scheme not in _URL_SCHEMES or not parts.hostname:
                raise ConfigError(
                    f"nats_url {url!r} must look like nats://host:port "
                    f"(schemes: {', '.join(_URL_SCHEMES)})"
                )
            try:
                parts.port  # noqa: B018 - urlsplit validates the port lazily
            except ValueError as exc:
                raise ConfigError(f"nats_url {url!r}: {exc}") from exc

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _parse(variable: str, raw: str, kind: str) -> Any:
    if kind == "str":
        return raw
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not a valid {kind}") from None
