"""The one error tree of MABEAM.

Every error raised by our code is a `MabeamError`. Errors that travel on the wire carry the
numeric `code` and the `slug` of PROTOCOL.md's error table, so a reply can be turned back into
the same class on the caller's side (`error_for_code`).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ActionFailedError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DeadlineError",
    "MabeamError",
    "NoRespondersError",
    "NotFoundError",
    "OverloadedError",
    "PermissionError",
    "ReplyTimeoutError",
    "ServerStartError",
    "TooLargeError",
    "UnavailableError",
    "UnknownActionError",
    "UnknownTypeError",
    "error_for_code",
]


class MabeamError(Exception):
    """Raised when anything in MABEAM fails; the root of the error tree."""

    code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MabeamError):
    """Raised when a configuration value (argument, environment, file) is invalid."""

    code = 400
    slug = "bad_config"


class BadRequestError(MabeamError):
    """Raised when input (a name, a body, arguments) fails validation."""

    code = 400
    slug = "bad_request"


class NotFoundError(MabeamError):
    """Raised when a named thing (agent, runner, record) does not exist."""

    code = 404
    slug = "not_found"


class UnknownActionError(NotFoundError):
    """Raised when an agent has no action of the requested name."""

    slug = "unknown_action"


class UnknownTypeError(NotFoundError):
    """Raised when no runner (or not the runner asked) hosts the agent type of a spawn."""

    slug = "unknown_type"


class DeadlineError(MabeamError):
    """Raised when an action or a request runs past its deadline."""

    code = 408
    slug = "timeout"


class ReplyTimeoutError(DeadlineError):
    """Raised when a request got no reply in time: whether its action ran is not known (a
    retry with the same call id is safe; PROTOCOL.md "Safe retries")."""

    slug = "reply_timeout"


class ConflictError(MabeamError):
    """Raised when a write loses a race: a key that exists, or a revision that moved on."""

    code = 409
    slug = "conflict"


class TooLargeError(MabeamError):
    """Raised when a body is above the configured size limit."""

    code = 413
    slug = "too_large"


class OverloadedError(MabeamError):
    """Raised when a bounded resource (mailbox, runner capacity, memory) is full."""

    code = 429
    slug = "overloaded"


class PermissionError(MabeamError):
    """Raised when the NATS server refuses a publish, a request or a subscription by the
    connection's permissions (its "Permissions Violation"); the message names the subject."""

    code = 403
    slug = "forbidden"

    def __init__(self, message: str, subject: str = "") -> None:
        super().__init__(message)
        self.subject = subject


class ActionFailedError(MabeamError):
    """Raised when an agent's handler raised while running an action."""

    code = 500
    slug = "action_failed"


class UnavailableError(MabeamError):
    """Raised when a target is not there to answer: stopping, restarting, or no responders."""

    code = 503
    slug = "unavailable"


class NoRespondersError(UnavailableError):
    """Raised when nothing is subscribed to a request's subject: no such agent, or one that is
    between owners (taken over, restarting)."""

    slug = "no_responders"


class ConnectError(UnavailableError):
    """Raised when the NATS server cannot be reached or the connection is lost."""

    slug = "connect_failed"


class ServerStartError(MabeamError):
    """Raised when an embedded nats-server cannot be found, started or made ready."""

    slug = "server_start_failed"


_WIRE_ERRORS: dict[int, type[MabeamError]] = {
    400: BadRequestError,
    404: UnknownActionError,
    408: DeadlineError,
    409: ConflictError,
    413: TooLargeError,
    429: OverloadedError,
    500: ActionFailedError,
    503: UnavailableError,
}


def _tree(root: type[MabeamError]) -> list[type[MabeamError]]:
    return [root, *(cls for sub in root.__subclasses__() for cls in _tree(sub))]


_WIRE_SLUGS: dict[str, type[MabeamError]] = {cls.slug: cls for cls in _tree(MabeamError)}
"""Every class of the tree by its slug: a reply maps back by slug, so a 404 `not_found` is a
`NotFoundError` and a 404 `unknown_action` an `UnknownActionError` (the code alone decides only
for a slug that is not ours, or none)."""


def error_for_code(code: int, message: str, slug: str | None = None) -> MabeamError:
    """Build the error of our tree that a wire error `code` (and its `slug`) stands for."""
    named = _WIRE_SLUGS.get(slug) if slug is not None else None
    if named is not None and named.code == code:
        return named(message)
    return _WIRE_ERRORS.get(code, MabeamError)(message)
