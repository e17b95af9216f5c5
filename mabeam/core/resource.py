"""`AsyncResource`: the one `async with` protocol of MABEAM's connections, buses and runners.

Entering awaits `start()` and gives what it returns (the resource, ready); leaving awaits
`close()`, whatever ended the block. `start()` does nothing by default, for resources that are
ready once built (a connection from `Connection.open`, an event bus); `close()` must be safe to
call twice, and after a failed `start()`, as nats-py's clients are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource(ABC):
    """A resource that `async with` starts and closes; subclasses implement `close()` (safe
    twice) and, when they need one, `start()`."""

    __slots__ = ()

    async def start(self) -> Self:
        """Make the resource ready and return it; a no-op for a resource ready once built."""
        return self

    @abstractmethod
    async def close(self) -> None:
        """Release everything the resource holds; safe to call twice."""

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
