"""The config's authentication and TLS fields as nats-py connect options.

`security_options(config)` builds them; `wants_tls(config)` says whether the config asks for TLS
(a CA, a client certificate, TLS first, or a `tls://` / `wss://` URL), in which case the
connection refuses a server that does not require it.
"""

from __future__ import annotations

import ssl
from typing import Any

from mabeam.core.config import Config
from mabeam.core.errors import ConfigError

__all__ = ["security_options", "wants_tls"]

_TLS_SCHEMES = ("tls", "wss")


def security_options(config: Config) -> dict[str, Any]:
    """The nats-py connect options for the authentication and TLS fields of `config`."""
    options: dict[str, Any] = {}
    if config.user is not None:
        options.update(user=config.user, password=config.password)
    elif config.token is not None:
        options["token"] = config.token
    elif config.nkey_seed_file is not None:
        options["nkeys_seed"] = config.nkey_seed_file
    elif config.creds_file is not None:
        options["user_credentials"] = config.creds_file
    context = _tls_context(config)
    if context is not None:
        options["tls"] = context
    if config.tls_hostname is not None:
        options["tls_hostname"] = config.tls_hostname
    if config.tls_handshake_first:
        options["tls_handshake_first"] = True
    return options


def wants_tls(config: Config) -> bool:
    """True when `config` asks for TLS, so plain text must be refused."""
    return (
        config.tls_ca_file is not None
        or config.tls_cert_file is not None
        or config.tls_handshake_first
        or any(url.partition("://")[0] in _TLS_SCHEMES for url in config.servers)
    )


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_ca_file is None and config.tls_cert_file is None:
        return None  # nats-py verifies against the system's CAs when the server wants TLS
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_ca_file {config.tls_ca_file!r}: {exc}") from exc
    if config.tls_cert_file is not None:
        try:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"tls_cert_file {config.tls_cert_file!r} / tls_key_file "
                f"{config.tls_key_file!r}: {exc}"
            ) from exc
    return context
