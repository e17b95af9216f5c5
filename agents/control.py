"""The runner control protocol from the caller's side: spawn requests and runner discovery.

`SpawnRequest` is the wire body of `P.ctl.spawn` / `P.ctl.<runner>.spawn`; `request_spawn` sends
one and, when a runner of the queue group answers 429 (full or under memory pressure), tries
again so another runner can take it. `list_runners` gathers every runner's reply to
`P.ctl.runners` until a short quiet time.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mabeam.agents.supervisor import RestartPolicy
from mabeam.core.codec import decode, encode
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, OverloadedError
from mabeam.core.gather import gather_replies
from mabeam.core.names import validate_id
from mabeam.core.replies import result_of

__all__ = ["SpawnRequest", "list_runners", "parse_spawn_request", "request_spawn"]

_SPAWN_ATTEMPTS = 4


class SpawnRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body of a spawn request (PROTOCOL.md "Runners and spawning")."""

    type: str
    id: str | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    capabilities: list[str] = msgspec.field(default_factory=list)
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    restart: str = RestartPolicy.PERMANENT.value

    def validated(self) -> SpawnRequest:
        """Return self after checking every name; `BadRequestError` names the bad field."""
        validate_id(self.type, "agent type")
        if self.id is not None:
            validate_id(self.id, "agent id")
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
) -> dict[str, Any]:
    """Ask a runner (any, or the named one) to spawn; return the new agent's record."""
    request.validated()
    subjects = connection.subjects
    if runner is not None:
        subject = subjects.runner_control(validate_id(runner, "runner id"), "spawn")
        return await _spawn_once(connection, subject, request, timeout)
    for _ in range(_SPAWN_ATTEMPTS - 1):
        try:
            return await _spawn_once(connection, subjects.spawn, request, timeout)
        except OverloadedError:
            continue  # the queue group may pick a runner with room next time
    return await _spawn_once(connection, subjects.spawn, request, timeout)


async def _spawn_once(
    connection: Connection, subject: str, request: SpawnRequest, timeout: float | None
) -> dict[str, Any]:
    reply = await connection.request(subject, encode(request), timeout=timeout)
    record: dict[str, Any] = result_of(reply.headers, reply.data)
    return record


async def list_runners(connection: Connection, *, quiet: float = 0.1) -> list[dict[str, Any]]:
    """Every live runner's record, gathered from `P.ctl.runners` until `quiet` s pass silently
    (ten times that for the first reply)."""
    replies = await gather_replies(
        connection, connection.subjects.runners, b"{}", timeout=quiet * 10, quiet=quiet
    )
    records = [result_of(msg.headers, msg.data) for msg in replies]
    return sorted(records, key=lambda record: str(record.get("id")))
