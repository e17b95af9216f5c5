"""Barriers on KV compare-and-set: n parties wait until all have arrived, or time out.

The key `barrier-<name>` in `P_locks` holds `{"parties", "arrived", "generation"}`. Arriving is a
compare-and-set that adds one; the party that completes the count releases everyone at once (the
value says `arrived == parties`), and the next arrival after a release opens a new generation, so
a barrier can be used round after round. Waiting is a watch on the key that ends with the call:
no polling, nothing left behind (the key expires an hour after its last use).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import msgspec

from mabeam.agents.coordination.election import validate_group
from mabeam.core import codec
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConflictError, DeadlineError
from mabeam.registry.buckets import Bucket

__all__ = ["BarrierRequest", "Barriers"]

_KEEP: Final = 3600.0
"""Seconds a barrier's key lives after its last write."""


class BarrierRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `barrier` coordinator action's body."""

    name: str
    parties: int
    timeout: float = 10.0

    def __post_init__(self) -> None:
        validate_group(self.name)
        if not 1 <= self.parties <= 100_000:
            raise BadRequestError(f"parties must be within 1..100000, got {self.parties}")
        if not 0 < self.timeout <= 3600:
            raise BadRequestError(f"timeout must be within (0, 3600] seconds, got {self.timeout}")


class _State(msgspec.Struct, kw_only=True):
    parties: int
    arrived: int
    generation: int


class Barriers:
    """Arrive at, and wait on, the barriers of one system."""

    def __init__(self, connection: Connection) -> None:
        self._bucket = Bucket(connection, "locks", kind="barrier", expiring=True)
        self._ready = False

    async def arrive(self, request: BarrierRequest) -> dict[str, Any]:
        """Arrive and wait for the others: `{"released": true, "arrived": n}`, or 408."""
        if not self._ready:
            await self._bucket.ensure()
            self._ready = True
        key = f"barrier-{request.name}"
        async with self._bucket.changes_of(key) as changed:
            generation = await self._arrive(key, request.parties)
            try:
                async with asyncio.timeout(request.timeout):
                    while True:
                        changed.clear()
                        state = await self._read(key)
                        if (
                            state is None
                            or state.generation > generation
                            or (state.generation == generation and state.arrived >= state.parties)
                        ):
                            return {"released": True, "arrived": request.parties}
                        await changed.wait()
            except TimeoutError:
                state = await self._read(key)
                arrived = state.arrived if state and state.generation == generation else 0
                raise DeadlineError(
                    f"barrier {request.name!r}: {arrived} of {request.parties} parties "
                    f"arrived within {request.timeout}s"
                ) from None

    async def _arrive(self, key: str, parties: int) -> int:
        """Add this party by compare-and-set; return the generation it joined."""
        while True:
            entry = await self._bucket.get(key)
            state = msgspec.json.decode(entry.value, type=_State) if entry else None
            if state is not None and state.parties != parties and state.arrived < state.parties:
                raise BadRequestError(
                    f"barrier {key[8:]!r} is waiting for {state.parties} parties, not {parties}"
                )
            if state is None or state.arrived >= state.parties:
                generation = state.generation + 1 if state else 1
                new = _State(parties=parties, arrived=1, generation=generation)
            else:
                new = _State(
                    parties=parties, arrived=state.arrived + 1, generation=state.generation
                )
            try:
                if entry is None:
                    await self._bucket.create(key, codec.encode(new), ttl=_KEEP)
                else:
                    await self._bucket.update(
                        key, codec.encode(new), revision=entry.revision, ttl=_KEEP
                    )
            except ConflictError:
                continue  # another party arrived at the same moment: read again
            return new.generation

    async def _read(self, key: str) -> _State | None:
        entry = await self._bucket.get(key)
        return msgspec.json.decode(entry.value, type=_State) if entry else None
