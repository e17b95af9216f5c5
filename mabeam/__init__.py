"""MABEAM on NATS: a multi-agent platform whose backbone is NATS.

The public API is exported lazily, so `import mabeam.bus` does not load the whole system.
"""

from __future__ import annotations

import importlib
from typing import Any

from mabeam.core.websocket import defer_aiohttp

defer_aiohttp()  # before anything imports nats-py: no aiohttp at start-up (see the module)

__version__ = "0.1.0"

# public name → defining module
_EXPORTS: dict[str, str] = {
    "connect": "mabeam.client",
    "Client": "mabeam.client",
    "Agent": "mabeam.agents.model",
    "action": "mabeam.agents.model",
    "on_event": "mabeam.agents.model",
    "Event": "mabeam.bus.event",
    "Runner": "mabeam.agents.runner",
    "RunnerSettings": "mabeam.agents.runner",
    "Config": "mabeam.core.config",
    "MabeamError": "mabeam.core.errors",
    "ConfigError": "mabeam.core.errors",
    "BadRequestError": "mabeam.core.errors",
    "NotFoundError": "mabeam.core.errors",
    "UnknownActionError": "mabeam.core.errors",
    "UnknownTypeError": "mabeam.core.errors",
    "DeadlineError": "mabeam.core.errors",
    "ReplyTimeoutError": "mabeam.core.errors",
    "NoRespondersError": "mabeam.core.errors",
    "ConflictError": "mabeam.core.errors",
    "TooLargeError": "mabeam.core.errors",
    "OverloadedError": "mabeam.core.errors",
    "PermissionError": "mabeam.core.errors",
    "ActionFailedError": "mabeam.core.errors",
    "UnavailableError": "mabeam.core.errors",
    "ConnectError": "mabeam.core.errors",
    "ServerStartError": "mabeam.core.errors",
    "EmbeddedServer": "mabeam.core.embedded_server",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mabeam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
