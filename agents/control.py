"""The runner control protocol from the caller's side: spawn requests and runner discovery.

`SpawnRequest` is the wire body of `P.ctl.spawn`, `P.ctl.spawn.<type>` and `P.ctl.<runner>.spawn`.
`request_spawn` sends one to the hosts of its type, least loaded first when a `Placement` ranks
them, and then to `P.ctl.spawn.<type>`; a host that answers 429 (full or under memory pressure),
503 (draining) or is gone makes way for the next (`send_spawn`, which a runner also uses to
forward a spawn it should not serve). `list_runners` gathers every runner's reply to
`P.ctl.runners` until a short quiet time, and `list_interfaces` their replies to `P.ctl.types`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from mabeam.agents.placement import Placement
from mabeam.agents.supervisor import RestartPolicy
from mabeam.core.codec import decode, encode
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    BadRequestError,
    MabeamError,
    NoRespondersError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
    UnknownTypeError,
)
from mabeam.core.gather import gather_replies
from mabeam.core.messages import Message
from mabeam.core.names import validate_id, virtual_agent_id, virtual_form
from mabeam.core.replies import error_of, result_of

__all__ = [
    "TRY_ELSEWHERE",
    "SpawnRequest",
    "list_interfaces",
    "list_runners",
    "parse_spawn_request",
    "request_spawn",
    "send_spawn",
]

_SPAWN_ATTEMPTS = 4
TRY_ELSEWHERE = (OverloadedError, UnavailableError, UnknownTypeError)
"""Spawn refusals after which nothing was spawned and another host may take the request."""


class SpawnRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of a spawn request (PROTOCOL.md "Runners and spawning")."""

    type: str
    id: str | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    capabilities: list[str] = msgspec.field(default_factory=list)
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    restart: str = RestartPolicy.PERMANENT.value
    key: str | None = None
    """Set for the activation of a virtual agent: its key (its id is then the virtual id)."""

    def validated(self) -> SpawnRequest:
        """Return self after checking every name; `BadRequestError` names the bad field."""
        validate_id(self.type, "agent type")
        if self.key is not None:
            expected = virtual_agent_id(self.type, self.key)
            if self.id not in (None, expected):
                raise BadRequestError(f"the virtual agent {self.key!r} has the id {expected!r}")
            self.id = expected
            if self.restart != RestartPolicy.PERMANENT.value:
                raise BadRequestError("a virtual agent is permanent")
        if self.id is not None:
            validate_id(self.id, "agent id")
            if self.key is None and virtual_form(self.id):
                raise BadRequestError(
                    f"agent id {self.id!r} has the form of a virtual agent's id (v_<n>_<type>_<key>"
                    " or v_h_<hex>): reserved for virtual agents, which need no spawn"
                )
        for capability in self.capabilities:
            validate_id(capability, "capability")
        RestartPolicy.parse(self.restart)
        return self


def parse_spawn_request(body: bytes, *, max_size: int) -> SpawnRequest:
    """Decode and validate a spawn request from the wire."""
    raw = decode(body, max_size=max_size)
    try:
        request = msgspec.convert(raw, SpawnRequest)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"spawn request: {exc}") from exc
    return request.validated()


async def request_spawn(
    connection: Connection,
    request: SpawnRequest,
    *,
    runner: str | None = None,
    timeout: float | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Ask a runner (the named one, or a host of the type) to spawn; return the agent's record.

    Without `runner`: the hosts that `placement` ranks first (from this process's replica), then
    the type's own subject, whose runners are its hosts; a host that is full, draining or gone
    makes way for the next. A type that no runner hosts is `UnknownTypeError`, at once; a named
    runner that is not running, `NotFoundError`.
    """
    request.validated()
    subjects = connection.subjects
    body = encode(request)
    if runner is not None:
        subject = subjects.runner_control(validate_id(runner, "runner id"), "spawn")
        try:
            reply = await _request(connection, subject, body, timeout)
        except NoRespondersError:
            message = f"runner {runner!r} is not running: nothing answers {subject}"
            raise NotFoundError(message) from None
    else:
        hosts = placement.ranked(request.type)[: _SPAWN_ATTEMPTS - 1] if placement else []
        reply = await send_spawn(
            connection,
            body,
            request.type,
            hosts=hosts,
            by_type=_SPAWN_ATTEMPTS - len(hosts),
            placement=placement,
            timeout=timeout,
        )
    record: dict[str, Any] = result_of(reply.headers, reply.data)
    return record


async def send_spawn(
    connection: Connection,
    body: bytes,
    agent_type: str,
    *,
    hosts: Sequence[str],
    by_type: int,
    placement: Placement | None = None,
    timeout: float | None = None,
) -> Message:
    """Send an encoded spawn request to each runner of `hosts` in turn, then up to `by_type`
    times to `P.ctl.spawn.<type>`, until a reply other than a refusal that leaves the spawn to
    another runner (429, 503, 404 `unknown_type`, no responders); return that reply as it came.

    Raises the last refusal when every attempt was refused, and `UnknownTypeError` when nothing
    serves the type's subject. A timeout is raised at once: the spawn may have happened.
    """
    subjects = connection.subjects
    attempts: list[tuple[str, str | None]] = [
        (subjects.runner_control(host, "spawn"), host) for host in hosts
    ]
    attempts += [(subjects.spawn_type(agent_type), None)] * by_type
    refusal: MabeamError | None = None
    for subject, host in attempts:
        if placement is not None and host is not None:
            placement.sent(host)
        try:
            reply = await _request(connection, subject, body, timeout)
        except NoRespondersError as gone:
            if host is None:  # nothing serves the type's subject: no runner hosts the type
                raise UnknownTypeError(f"no runner hosts agent type {agent_type!r}") from gone
            refusal = gone  # the host left since its record was written
            continue
        refused = error_of(reply.headers, reply.data)
        if not isinstance(refused, TRY_ELSEWHERE):
            return reply
        refusal = refused
    raise refusal or UnknownTypeError(f"no runner hosts agent type {agent_type!r}")


async def _request(
    connection: Connection, subject: str, body: bytes, timeout: float | None
) -> Message:
    return await connection.request(subject, body, timeout=timeout)


async def list_runners(connection: Connection, *, quiet: float = 0.1) -> list[dict[str, Any]]:
    """Every live runner's record, gathered from `P.ctl.runners` until `quiet` s pass silently
    (ten times that for the first reply)."""
    replies = await gather_replies(
        connection, connection.subjects.runners, b"{}", timeout=quiet * 10, quiet=quiet
    )
    records = [result_of(msg.headers, msg.data) for msg in replies]
    return sorted(records, key=lambda record: str(record.get("id")))


async def list_interfaces(connection: Connection, *, quiet: float = 0.1) -> dict[str, Any]:
    """The interface (the `_describe` reply) of every agent type a live runner hosts, by type
    name, gathered from `P.ctl.types` like `list_runners`. Runners that host the same type
    describe it alike; the first reply of each type is kept."""
    replies = await gather_replies(
        connection, connection.subjects.types, b"{}", timeout=quiet * 10, quiet=quiet
    )
    interfaces: dict[str, Any] = {}
    for msg in replies:
        for name, interface in result_of(msg.headers, msg.data)["types"].items():
            interfaces.setdefault(name, interface)
    return dict(sorted(interfaces.items()))
