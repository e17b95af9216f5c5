"""The `P_EVENTS` JetStream stream that keeps event history (PROTOCOL.md "Events").

It captures the topics of the config's `events_history` (every one, `P.events.>`, by default),
bounded by its `events_max_age` and `events_max_msgs`, with direct get enabled (history reads
use it). Creating it is idempotent: an existing stream is kept, and only its subjects, limits
(and direct get) are updated when they differ, so every process of a system should share one
`events_history`.
"""

from __future__ import annotations

import dataclasses

import structlog

from mabeam.core.connection import Connection
from mabeam.core.errors import ConflictError, NotFoundError
from mabeam.core.jetstream import StreamConfig, StreamInfo, retrying_setup

__all__ = ["ensure_stream", "history_subjects"]

log = structlog.get_logger("mabeam.bus")


async def ensure_stream(connection: Connection) -> None:
    """Create `P_EVENTS` if it is missing, or bring its limits in line with the config (a
    request that goes unanswered is tried again: `retrying_setup`)."""
    name = connection.subjects.events_stream
    await retrying_setup(f"stream {name}", lambda: _ensure(connection, name))


async def _ensure(connection: Connection, name: str) -> None:
    info = await _stream_info(connection, name)
    if info is None:
        info = await _create(connection, name)
    if _needs_update(connection, info.config):
        await _update(connection, info.config)


async def _stream_info(connection: Connection, name: str) -> StreamInfo | None:
    try:
        return await connection.jetstream.stream_info(name)
    except NotFoundError:
        return None


async def _create(connection: Connection, name: str) -> StreamInfo:
    config = StreamConfig(
        name=name,
        subjects=history_subjects(connection),
        max_age=connection.config.events_max_age,
        max_msgs=connection.config.events_max_msgs,
        allow_direct=True,
    )
    try:
        info = await connection.jetstream.add_stream(config)
    except ConflictError:
        # Another client created it a moment ago, with other limits: updated by the caller.
        return await connection.jetstream.stream_info(name)
    log.info("events.stream_created", stream=name)
    return info


def history_subjects(connection: Connection) -> list[str]:
    """The subjects `P_EVENTS` captures: those of the config's `events_history` patterns."""
    return [connection.subjects.event(pattern) for pattern in connection.config.events_history]


def _needs_update(connection: Connection, config: StreamConfig) -> bool:
    wanted_age_ns = round(connection.config.events_max_age * 1e9)
    current_age_ns = round((config.max_age or 0) * 1e9)
    return (
        sorted(config.subjects or []) != sorted(history_subjects(connection))
        or current_age_ns != wanted_age_ns
        or config.max_msgs != connection.config.events_max_msgs
        or not config.allow_direct
    )


async def _update(connection: Connection, current: StreamConfig) -> None:
    config = dataclasses.replace(
        current,
        subjects=history_subjects(connection),
        max_age=connection.config.events_max_age,
        max_msgs=connection.config.events_max_msgs,
        allow_direct=True,
    )
    await connection.jetstream.update_stream(config)
    log.info(
        "events.stream_updated",
        stream=current.name,
        subjects=config.subjects,
        max_age=connection.config.events_max_age,
        max_msgs=connection.config.events_max_msgs,
    )
