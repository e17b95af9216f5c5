"""Configuration from arguments and environment, validated on construction.

`Config.from_env(**overrides)` reads `MABEAM_*` variables and lets explicit arguments (from the
CLI or the API) win over them. Every field is checked; a bad value is a `ConfigError` that names
the field and the rule.

Authentication takes one of: `user` with `password`, `token`, `nkey_seed_file` or `creds_file`.
TLS takes `tls_ca_file` (the CA that signed the server's certificate), `tls_cert_file` with
`tls_key_file` (a client certificate, for servers that verify clients), `tls_hostname` and
`tls_handshake_first`. Files must exist and be readable when the config is built. Passwords and
tokens never appear in `repr()`, and URLs are shown with their password masked (`display_url`).
`inbox_prefix` gives the connection private reply subjects (`_INBOX_<name>.>`), so that the
server's permissions can keep every other identity from reading its replies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import SplitResult, urlsplit

from mabeam.core.errors import BadRequestError, ConfigError
from mabeam.core.names import Subjects, validate_pattern, validate_prefix
from mabeam.core.numbers import is_number

__all__ = ["DEFAULT_NATS_URL", "DEFAULT_PREFIX", "Config", "redact_url"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "mabeam"
_URL_SCHEMES = ("nats", "tls", "ws", "wss")
_MASK = "***"
_SECRET_FIELDS = frozenset({"password", "token"})
_SECRET_EXTRA = frozenset({"password", "token", "nkeys_seed_str"})
_FILE_FIELDS = (
    "nkey_seed_file",
    "creds_file",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
)
# A user nkey seed: base32 of prefix bytes, 32 key bytes and a checksum, starting "SU".
_USER_SEED = re.compile(r"SU[A-Z2-7]{56}")
_CREDS = re.compile(
    r"-+BEGIN NATS USER JWT-+\s*\S+\s*-+END NATS USER JWT-+.*"
    r"-+BEGIN USER NKEY SEED-+\s*SU[A-Z2-7]{56}\s*-+END USER NKEY SEED-+",
    re.DOTALL,
)
_MAX_KEY_FILE = 64 * 1024  # seeds and creds files are a few hundred bytes
_EVENT_MODES = ("structured", "binary")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# Environment variable → (field name, parser).
_ENV: dict[str, tuple[str, str]] = {
    "MABEAM_NATS_URL": ("nats_url", "str"),
    "MABEAM_PREFIX": ("prefix", "str"),
    "MABEAM_CONNECT_TIMEOUT": ("connect_timeout", "float"),
    "MABEAM_REQUEST_TIMEOUT": ("request_timeout", "float"),
    "MABEAM_CALL_RETRY_FOR": ("call_retry_for", "float"),
    "MABEAM_MAX_PAYLOAD": ("max_payload", "int"),
    "MABEAM_EVENTS_MAX_AGE": ("events_max_age", "float"),
    "MABEAM_EVENTS_MAX_MSGS": ("events_max_msgs", "int"),
    "MABEAM_EVENTS_MODE": ("events_mode", "str"),
    "MABEAM_EVENTS_HISTORY": ("events_history", "list"),
    "MABEAM_USER": ("user", "str"),
    "MABEAM_PASSWORD": ("password", "str"),
    "MABEAM_TOKEN": ("token", "str"),
    "MABEAM_NKEY_SEED_FILE": ("nkey_seed_file", "str"),
    "MABEAM_CREDS_FILE": ("creds_file", "str"),
    "MABEAM_TLS_CA_FILE": ("tls_ca_file", "str"),
    "MABEAM_TLS_CERT_FILE": ("tls_cert_file", "str"),
    "MABEAM_TLS_KEY_FILE": ("tls_key_file", "str"),
    "MABEAM_TLS_HOSTNAME": ("tls_hostname", "str"),
    "MABEAM_TLS_HANDSHAKE_FIRST": ("tls_handshake_first", "bool"),
    "MABEAM_INBOX_PREFIX": ("inbox_prefix", "str"),
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
    """Default seconds a request (call, spawn) waits for its reply; for a call, each attempt."""
    call_retry_for: float = 10.0
    """Seconds a call keeps retrying (with its call id) while its agent is unreachable, i.e.
    between owners during a fail-over, which takes about 5 s with 1 s heartbeats; 0 disables
    retries (PROTOCOL.md "Safe retries")."""
    max_payload: int = 1024 * 1024
    """Largest accepted body in bytes (413 above it)."""
    events_max_age: float = 24 * 3600.0
    """Seconds the `P_EVENTS` stream keeps an event."""
    events_max_msgs: int = 1_000_000
    """Most events the `P_EVENTS` stream keeps."""
    events_mode: str = "structured"
    """The CloudEvents content mode events are published in: `structured` (one JSON body, the
    fast mode) or `binary` (attributes in `ce-` headers); receivers take both."""
    events_history: tuple[str, ...] = (">",)
    """The topic patterns the `P_EVENTS` stream captures (history and durable subscriptions
    exist only for them); every topic by default (PROTOCOL.md "Events" gives the cost)."""
    user: str | None = None
    """User name for user/password authentication (needs `password`)."""
    password: str | None = None
    """Password of `user`; never shown by `repr()`."""
    token: str | None = None
    """Authentication token; never shown by `repr()`."""
    nkey_seed_file: str | None = None
    """File holding the user's nkey seed (`SU...`) for nkey authentication."""
    creds_file: str | None = None
    """A `.creds` file (user JWT and nkey seed) for decentralized JWT authentication."""
    tls_ca_file: str | None = None
    """PEM file of the CA(s) that signed the server's certificate (default: the system's)."""
    tls_cert_file: str | None = None
    """PEM client certificate, for servers that verify clients (needs `tls_key_file`)."""
    tls_key_file: str | None = None
    """PEM private key of `tls_cert_file`."""
    tls_hostname: str | None = None
    """The name the server's certificate must carry (default: the URL's host)."""
    tls_handshake_first: bool = False
    """Start TLS before the server's INFO (servers with `handshake_first`)."""
    inbox_prefix: str | None = None
    """The prefix of this connection's reply subjects (nats-py's `inbox_prefix`; `_INBOX` when
    None): give each identity its own, e.g. `_INBOX_client`, and allow it only that one."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Further nats-py connect options, passed through as they are (they win over the above)."""

    def __post_init__(self) -> None:
        self._check_urls()
        try:
            validate_prefix(self.prefix)
        except BadRequestError as exc:
            raise ConfigError(f"prefix: {exc.message}") from exc
        self._check_positive("connect_timeout", "request_timeout", "events_max_age")
        self._check_positive("max_payload", "events_max_msgs")
        self._check_not_negative("call_retry_for")
        self._check_events()
        self._check_auth()
        self._check_files()
        self._check_tls()
        self._check_inbox_prefix()

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

    @property
    def display_url(self) -> str:
        """`nats_url` with any password in it masked, for logs and messages."""
        return ", ".join(redact_url(url) for url in self.servers)

    @property
    def auth_method(self) -> str | None:
        """How this config authenticates, in words for messages (no secrets); None: it does not."""
        if self.user is not None:
            return f"user {self.user!r} with a password"
        if self.token is not None:
            return "a token"
        if self.nkey_seed_file is not None:
            return f"the nkey seed in {self.nkey_seed_file}"
        if self.creds_file is not None:
            return f"the credentials in {self.creds_file}"
        return None

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={self._shown(f.name)!r}" for f in fields(self))
        return f"Config({shown})"

    def _shown(self, name: str) -> Any:
        value = getattr(self, name)
        if name in _SECRET_FIELDS and value is not None:
            return _MASK
        if name == "nats_url":
            return self.display_url
        if name == "extra":
            return {key: _MASK if key in _SECRET_EXTRA else item for key, item in value.items()}
        return value

    def _check_urls(self) -> None:
        if not isinstance(self.nats_url, str) or not self.nats_url.strip():
            raise ConfigError("nats_url must be a non-empty URL such as nats://127.0.0.1:4222")
        for url in self.servers:
            parts = urlsplit(url)
            if parts.scheme not in _URL_SCHEMES or not parts.hostname:
                raise ConfigError(
                    f"nats_url {redact_url(url)!r} must look like nats://host:port "
                    f"(schemes: {', '.join(_URL_SCHEMES)})"
                )
            try:
                parts.port  # noqa: B018 - urlsplit validates the port lazily
            except ValueError as exc:
                raise ConfigError(f"nats_url {redact_url(url)!r}: {exc}") from exc

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")

    def _check_not_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not is_number(value) or not value >= 0:
                raise ConfigError(f"{name} must be a number of 0 or more, got {value!r}")

    def _check_events(self) -> None:
        if self.events_mode not in _EVENT_MODES:
            raise ConfigError(
                f"events_mode must be one of {', '.join(_EVENT_MODES)}, got {self.events_mode!r}"
            )
        history = self.events_history
        if isinstance(history, str) or not isinstance(history, tuple) or not history:
            raise ConfigError(
                f"events_history must be a non-empty tuple of topic patterns, got {history!r}"
            )
        for pattern in history:
            try:
                validate_pattern(pattern)
            except BadRequestError as exc:
                raise ConfigError(f"events_history: {exc.message}") from exc

    def _check_auth(self) -> None:
        for name in ("user", "password", "token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{name} must be a non-empty string")
        if (self.user is None) != (self.password is None):
            given, missing = ("user", "password") if self.password is None else ("password", "user")
            raise ConfigError(f"{given} is set but {missing} is not: give both or neither")
        methods = [
            name
            for name in ("user", "token", "nkey_seed_file", "creds_file")
            if getattr(self, name) is not None
        ]
        if len(methods) > 1:
            raise ConfigError(
                f"choose one way to authenticate, not {' and '.join(methods)}: user/password, "
                "token, nkey_seed_file or creds_file"
            )

    def _check_files(self) -> None:
        for name in _FILE_FIELDS:
            _check_readable_file(name, getattr(self, name))
        if self.nkey_seed_file is not None and not _USER_SEED.fullmatch(
            _read_text(self.nkey_seed_file).strip()
        ):
            raise ConfigError(
                f"nkey_seed_file {self.nkey_seed_file!r} does not hold a user nkey seed (SU...)"
            )
        if self.creds_file is not None and not _CREDS.search(_read_text(self.creds_file)):
            raise ConfigError(
                f"creds_file {self.creds_file!r} is not a NATS credentials file "
                "(a user JWT block and a user nkey seed block)"
            )

    def _check_tls(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls_cert_file and tls_key_file go together: give both or neither")
        if self.tls_hostname is not None and (
            not isinstance(self.tls_hostname, str) or not self.tls_hostname
        ):
            raise ConfigError("tls_hostname must be a non-empty string")
        if not isinstance(self.tls_handshake_first, bool):
            raise ConfigError(
                f"tls_handshake_first must be true or false, got {self.tls_handshake_first!r}"
            )

    def _check_inbox_prefix(self) -> None:
        if self.inbox_prefix is None:
            return
        try:
            validate_prefix(self.inbox_prefix)
        except BadRequestError as exc:
            raise ConfigError(f"inbox_prefix: {exc.message}") from exc


def redact_url(url: str) -> str:
    """`url` with the password (or token) of its user part replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = _MASK if parts.password is None else f"{parts.username}:{_MASK}"
    return SplitResult(
        parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment
    ).geturl()


def _check_readable_file(name: str, path: object) -> None:
    if path is None:
        return
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{name} must be a file path, got {path!r}")
    if not os.path.isfile(path):
        raise ConfigError(f"{name} {path!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name} {path!r} is not readable")


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.read(_MAX_KEY_FILE)


def _parse(variable: str, raw: str, kind: str) -> Any:
    if kind == "str":
        return raw
    if kind == "list":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind == "bool":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"{variable}={raw!r} is not true or false (1/0, yes/no, on/off)")
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not a valid {kind}") from None
