"""Durable event handlers: `@on_event(..., durable=True)` (docs/AGENTS.md "Durable event handlers").

A durable handler's events come from a JetStream consumer of `P_EVENTS` named after the agent
and the handler (`consumer_name`). The consumer outlives the agent's moves and its runner's
death: the agent's next copy, on any runner, binds to it and goes on where the last one stopped.
One event is in flight at a time (`max_ack_pending` 1, so their order is kept). The host answers
the event's envelope as it answers a call, so for a durable agent the answer, which acks the
event, waits for the snapshot that holds its effect. The agent remembers each event it handled
(by source and id) among its recent calls, which travel with its snapshot: an event delivered
again after a kill -9 between the commit and the ack takes effect once. An agent gone for good
takes its consumers with it.
"""

from __future__ import annotations

import hashlib
from typing import Final

import structlog

from mabeam.agents.model import Agent
from mabeam.agents.recent_calls import Reply
from mabeam.bus.durable import DurableOptions
from mabeam.bus.event import Event
from mabeam.core.connection import Connection
from mabeam.core.errors import MabeamError, NotFoundError
from mabeam.core.names import ID_PATTERN

__all__ = ["AGENT_DELIVERY", "HANDLED", "consumer_name", "delete_consumers", "event_key"]

log = structlog.get_logger("mabeam.agents")

AGENT_DELIVERY: Final = DurableOptions(max_deliver=20, ack_wait=5.0, max_ack_pending=1)
"""How an agent's durable consumer delivers: one event at a time, again after 5 s without an
ack (an owner that died), 20 deliveries at most (a handler that keeps failing, or moves)."""
HANDLED: Final = Reply(b"null")
"""What an agent remembers of an event it handled."""


def consumer_name(agent_id: str, method_name: str, index: int) -> str:
    """The durable consumer of pattern `index` of the handler `method_name` of `agent_id`:
    `agent_<length of id>_<id>_<method>_<index>` (the length keeps it unambiguous), or
    `agent_h_` and 40 hex digits of its SHA-256 when that is not a valid id."""
    name = f"agent_{len(agent_id)}_{agent_id}_{method_name}_{index}"
    if ID_PATTERN.match(name):
        return name
    return "agent_h_" + hashlib.sha256(name.encode()).hexdigest()[:40]


def consumer_names(agent_type: type[Agent], agent_id: str) -> list[str]:
    """The durable consumers of every durable handler of an agent."""
    return [
        consumer_name(agent_id, spec.method_name, index)
        for spec in agent_type.__event_handlers__
        if spec.durable
        for index in range(len(spec.patterns))
    ]


def event_key(event: Event) -> str:
    """The key an agent remembers a handled event by (CloudEvents: source and id are unique)."""
    return f"event {event.source} {event.id}"


async def delete_consumers(connection: Connection, agent_type: type[Agent], agent_id: str) -> None:
    """Delete the durable consumers of an agent gone for good (a failure is logged: the agent
    is gone all the same, and an agent spawned later with its id would resume them)."""
    stream = connection.subjects.events_stream
    for name in consumer_names(agent_type, agent_id):
        try:
            await connection.jetstream.delete_consumer(stream, name)
        except NotFoundError:
            continue
        except MabeamError as error:
            log.warning(
                "agent.consumer_not_deleted", agent=agent_id, consumer=name, error=error.message
            )
