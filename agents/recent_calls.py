"""What an agent remembers of its recent calls, so that a repeated call id gets the first reply.

A call may carry the header `Mabeam-Call-Id` (PROTOCOL.md "Safe retries"). The host keeps the
replies of the last `Agent.remembered_calls` identified calls of the last `Agent.remembered_for`
seconds, oldest forgotten first, at most `MAX_REMEMBERED_BYTES` of reply bodies per agent; a
reply body larger than `MAX_REPLY_BYTES` is remembered without its body, and a repeat of that
call gets 409 instead of running again. For a type that snapshots, the `PERSISTED_CALLS` most
recent travel with the snapshot (`encode` / `restore`), so a retry that reaches the agent's next
owner after a fail-over is answered too.
"""

from __future__ import annotations

import itertools
import time
from array import array
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from mabeam.core.codec import encode
from mabeam.core.errors import BadRequestError, ConflictError, MabeamError
from mabeam.core.replies import error_reply, result_of

__all__ = ["MAX_REMEMBERED_BYTES", "MAX_REPLY_BYTES", "PERSISTED_CALLS", "RecentCalls", "Reply"]

MAX_REPLY_BYTES: Final = 1024
"""The largest reply body remembered whole."""
MAX_REMEMBERED_BYTES: Final = 4 * 1024
"""The reply bodies one agent remembers at most, in bytes."""
PERSISTED_CALLS: Final = 16
"""How many of the most recent remembered calls travel with a snapshot."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished call's reply in its wire form: the body, and headers for an error."""

    body: bytes
    headers: dict[str, str] | None = None

    @classmethod
    def of_result(cls, result: Any) -> Reply:
        """The success reply carrying `result`; `BadRequestError` if it is not JSON."""
        return cls(encode(result))

    @classmethod
    def of_error(cls, error: MabeamError) -> Reply:
        """The error reply for `error`."""
        headers, body = error_reply(error)
        return cls(body, headers)

    @property
    def failed(self) -> bool:
        """True for an error reply."""
        return self.headers is not None

    def value(self) -> Any:
        """The result, or raise the error the reply announces."""
        return result_of(self.headers, self.body)


class _Remembered(msgspec.Struct, array_like=True):
    id: str
    headers: dict[str, str] | None
    body: msgspec.Raw
    kept: bool = True


_decoder = msgspec.json.Decoder(list[_Remembered])
_entry_decoder = msgspec.json.Decoder(_Remembered)
_NULL = msgspec.Raw(b"null")


def _entry(call_id: str, reply: Reply | None) -> bytes:
    """One call's entry in the JSON list `RecentCalls.encode` writes."""
    if reply is None:
        return encode(_Remembered(call_id, None, _NULL, kept=False))
    return encode(_Remembered(call_id, reply.headers, msgspec.Raw(reply.body)))


class RecentCalls:
    """The bounded memory of one agent's identified calls: call id → `Reply`.

    Each call is held as its entry of `encode` only (one `bytes`, made once when remembered):
    32 calls with small replies cost an agent about 6 KiB, where a `Reply` beside each entry
    cost 12 KiB. A repeat, which is rare, decodes its entry back into the `Reply`.
    """

    __slots__ = ("_bytes", "_entries", "_sizes", "_times", "keep_for", "limit")

    def __init__(self, limit: int, keep_for: float = 30.0) -> None:
        self.limit = limit
        self.keep_for = keep_for
        self._entries: dict[str, bytes] = {}
        """Call id → its entry of `encode`, oldest first."""
        self._sizes = array("H")
        """The reply body size each entry counts against `MAX_REMEMBERED_BYTES`, same order."""
        self._times = array("d")
        """When each entry was remembered (monotonic seconds), same order."""
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def get(self, call_id: str) -> Reply:
        """The first reply to `call_id` (`ConflictError` when it was too large to keep)."""
        entry = _entry_decoder.decode(self._entries[call_id])
        if not entry.kept:
            raise ConflictError(
                f"call {call_id!r} already ran; its reply was above {MAX_REPLY_BYTES} bytes,"
                " too large to be remembered"
            )
        return Reply(bytes(entry.body), entry.headers)

    def remember(self, call_id: str, reply: Reply) -> None:
        """Keep `reply` as the answer to every repeat of `call_id`; forget the calls remembered
        more than `keep_for` seconds ago, and the oldest beyond the bounds."""
        if self.limit == 0 or call_id in self._entries:
            return
        now = time.monotonic()
        times = self._times
        while times and times[0] < now - self.keep_for:
            self._forget_oldest()
        kept = reply if len(reply.body) <= MAX_REPLY_BYTES else None
        self._add(call_id, _entry(call_id, kept), len(kept.body) if kept is not None else 0, now)
        while len(self._entries) > self.limit or self._bytes > MAX_REMEMBERED_BYTES:
            self._forget_oldest()

    def _add(self, call_id: str, entry: bytes, size: int, now: float) -> None:
        self._entries[call_id] = entry
        self._sizes.append(size)
        self._times.append(now)
        self._bytes += size

    def _forget_oldest(self) -> None:
        del self._entries[next(iter(self._entries))]
        self._bytes -= self._sizes.pop(0)
        self._times.pop(0)

    def encode(self) -> bytes:
        """The `PERSISTED_CALLS` most recent calls as JSON, oldest first: `[[id, headers or
        null, body, kept], ...]` (a reply too large to keep has body null and kept false).

        A snapshot carries only these: the calls whose replies may not have reached their
        callers when a runner dies are those of its last commits; older replies were sent.
        """
        recent = list(itertools.islice(reversed(self._entries.values()), PERSISTED_CALLS))
        return b"[" + b",".join(reversed(recent)) + b"]"

    def restore(self, data: bytes) -> None:
        """Take back what `encode` wrote (a snapshot's); `BadRequestError` if it is not that."""
        try:
            entries = _decoder.decode(data)
        except msgspec.DecodeError as error:
            raise BadRequestError(f"remembered calls: {error}") from error
        self._entries.clear()
        del self._sizes[:]
        del self._times[:]
        self._bytes = 0
        for entry in entries[-self.limit :] if self.limit else ():
            if not entry.kept:
                self._add(entry.id, _entry(entry.id, None), 0, time.monotonic())
            else:
                self.remember(entry.id, Reply(bytes(entry.body), entry.headers))
