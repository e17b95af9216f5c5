"""The last N events on a pattern, read from `P_EVENTS` with batched direct gets.

JetStream has no "last N matching a filter" request, but a batched direct get
(`{"seq": s, "next_by_subj": filter, "batch": k}`, nats-server 2.11+, ADR-31) answers with the
first match at or after `s` and, in its `Nats-Num-Pending` header, how many more match after
it. So a one-message request counts the matches from any sequence on (a "probe"); the count
only falls as the sequence grows, and the server counts fastest near the end. The read is:

1. find the last match (`last_by_subj` takes wildcards); none means no history;
2. gallop back from it: probe a window of `N` sequences, then wider ones (grown by the
   density seen, 2x to 16x) until at least `N` match or the window holds the whole stream;
3. narrow that window down to a start from which `N` to `2 N` match, alternating an
   interpolation guess (one probe when matches are spread evenly) with bisection (log2 bound);
4. fetch the matches from there in one batch (more if `max_bytes` cuts it), keep the last `N`.

Wildcards are matched by the server, so the result is exact for any pattern: typically three
or four round trips, and the work stays near the end of the stream, whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from mabeam.bus.event import Event, decode_event
from mabeam.bus.event_counters import BusStats
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, MabeamError, TooLargeError
from mabeam.core.jetstream import DirectAnswer
from mabeam.core.messages import Message

__all__ = ["Probe", "find_start", "read_last"]

Probe = Callable[[int], Awaitable[tuple[int, int] | None]]
"""Given a sequence: the first matching sequence at or after it and the matches from there."""


async def read_last(
    connection: Connection, pattern: str, last: int, stats: BusStats
) -> list[Event]:
    """The last `last` events on `pattern` in `P_EVENTS`, oldest first.

    Stored messages that are not valid events are counted as invalid and left out.
    """
    if last <= 0:
        return []
    reader = _DirectReader(connection, connection.subjects.event(pattern))
    end = await reader.last_match()
    if end is None:
        return []
    start, count = await find_start(reader.probe, end, last)
    messages = await reader.fetch(start, count)
    return _decode_all(connection, messages[-last:], stats)


async def find_start(probe: Probe, end: int, last: int) -> tuple[int, int]:
    """A matching sequence from which `last` to `2 * last` messages match, and that count.

    `end` is the last matching sequence. When fewer than `last` match in all, the first match
    and their number. If the stream changes meanwhile the search still ends, maybe with more.
    """
    high, window = end + 1, last  # fewer than `last` match from `high` on: none
    while True:
        guess = max(1, end + 1 - window)
        found = await probe(guess)
        count = 0 if found is None else found[1]
        if found is not None and count >= last:
            return await _narrow(probe, found[0], count, high, last)
        if guess == 1:
            return found if found is not None else (end, 0)
        high = guess
        growth = 1.5 * last / count if count else math.inf
        window = int(window * min(max(growth, 2.0), 16.0))


async def _narrow(probe: Probe, low: int, low_count: int, high: int, last: int) -> tuple[int, int]:
    """Search between `low` (`low_count` >= `last` match from it) and `high` (fewer match)."""
    interpolate = True
    while low_count > 2 * last and high - low >= 2:
        if interpolate:  # aim for 1.5 * last matches if they are spread evenly
            guess = high - math.ceil((high - low) * 1.5 * last / low_count)
        else:
            guess = (low + high) // 2
        guess = min(max(guess, low + 1), high - 1)
        interpolate = not interpolate
        found = await probe(guess)
        if found is None or found[1] < last:
            high = guess
        else:
            low, low_count = found
    return low, low_count


def _decode_all(connection: Connection, messages: list[Message], stats: BusStats) -> list[Event]:
    stream = connection.subjects.events_stream
    events: list[Event] = []
    for msg in messages:
        headers = msg.headers or {}
        subject = headers.get("Nats-Subject", "")
        stored = (f"{stream}-{headers.get('Nats-Sequence')}", headers.get("Nats-Time-Stamp", ""))
        try:
            event = decode_event(
                subject,
                connection.subjects.topic_of(subject),
                msg.headers,
                msg.data,
                max_size=connection.config.max_payload,
                stored=stored,
            )
        except (BadRequestError, TooLargeError) as exc:
            stats.count_invalid(subject, len(msg.data), exc)
            continue
        events.append(event)
    return events


class _DirectReader:
    """Direct get requests on `P_EVENTS` for one subject filter."""

    def __init__(self, connection: Connection, subject_filter: str) -> None:
        self._connection = connection
        self._filter = subject_filter

    async def probe(self, sequence: int) -> tuple[int, int] | None:
        """The first match at or after `sequence`, and how many match from there on."""
        answer = await self._request({"seq": sequence, "next_by_subj": self._filter, "batch": 1})
        if not answer.messages:
            return None
        headers = answer.messages[0].headers or {}
        return int(headers["Nats-Sequence"]), int(headers["Nats-Num-Pending"]) + 1

    async def last_match(self) -> int | None:
        """The sequence of the last matching message, None when nothing matches."""
        answer = await self._request({"last_by_subj": self._filter})
        if not answer.messages:
            return None
        return int((answer.messages[0].headers or {})["Nats-Sequence"])

    async def fetch(self, start: int, count: int) -> list[Message]:
        """Up to `count` matching messages from `start` on, in as many batches as it takes."""
        messages: list[Message] = []
        while len(messages) < count:
            answer = await self._request(
                {"seq": start, "next_by_subj": self._filter, "batch": count - len(messages)}
            )
            messages += answer.messages
            if not answer.messages or answer.pending == 0:
                break
            start = int((answer.messages[-1].headers or {})["Nats-Sequence"]) + 1
        return messages

    async def _request(self, body: dict[str, Any]) -> DirectAnswer:
        connection = self._connection
        try:
            return await connection.jetstream.direct_get(connection.subjects.events_stream, body)
        except MabeamError as exc:
            raise type(exc)(f"event history: {exc.message}") from exc
