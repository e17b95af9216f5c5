"""Scatter-gather: one action sent to many agents in parallel, replies gathered by a deadline.

Never one participant after another: every call starts at once and all share one deadline, so a
round costs the slowest reply (or the timeout), not the sum. A participant that errs or does not
answer in time is `missing`, with the reason kept for the caller's logs. The deadline holds for
a call's retries too (a participant between owners is retried only until the round ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mabeam.agents.calls import Calls
from mabeam.core.errors import BadRequestError, MabeamError
from mabeam.core.names import validate_id
from mabeam.core.timeouts import deadline

__all__ = ["Gathered", "participants_of", "scatter"]

MAX_PARTICIPANTS = 10_000


@dataclass(slots=True)
class Gathered:
    """The replies of one round, in the order they arrived, and who did not answer."""

    replies: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


async def scatter(
    caller: Calls,
    participants: Sequence[str],
    action: str,
    args: dict[str, Any],
    timeout: float,
) -> Gathered:
    """Call `action` on every participant at once; gather replies until `timeout` seconds."""
    gathered = Gathered()

    async def ask(agent_id: str) -> None:
        try:
            async with deadline(timeout):
                gathered.replies[agent_id] = await caller.call(
                    agent_id, action, args, timeout=timeout
                )
        except MabeamError as error:
            gathered.missing[agent_id] = error.message
        except TimeoutError:
            gathered.missing[agent_id] = f"no reply within the round's {timeout}s"

    await asyncio.gather(*(ask(agent_id) for agent_id in participants))
    return gathered


def participants_of(
    participants: Sequence[str] | None, capability: str | None, registry: Any
) -> list[str]:
    """The participant ids: the given list, or every running agent with `capability`."""
    if (participants is None) == (capability is None):
        raise BadRequestError("give either participants (a list of ids) or a capability")
    if participants is not None:
        ids = [validate_id(agent_id, "participant id") for agent_id in participants]
        if len(set(ids)) != len(ids):
            raise BadRequestError("participants name some agent twice")
    else:
        validate_id(capability, "capability")
        found = registry.agents.find(capability=capability, status="running")
        ids = sorted(record.id for record in found)
    if not ids:
        raise BadRequestError("a protocol needs at least one participant")
    if len(ids) > MAX_PARTICIPANTS:
        raise BadRequestError(f"at most {MAX_PARTICIPANTS} participants, got {len(ids)}")
    return ids
