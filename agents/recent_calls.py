"""What an agent remembers of its recent calls, so that a repeated call id gets the first reply.

A call may carry the header `Mabeam-Call-Id` (PROTOCOL.md "Safe retries"). The host keeps the
replies of the last `Agent.remembered_calls` identified calls, oldest forgotten first, at most
`MAX_REMEMBERED_BYTES` of reply bodies per agent; a reply body larger than `MAX_REPLY_BYTES` is
remembered without its body, and a repeat of that call gets 409 instead of running again. For a
type that snapshots, the `PERSISTED_CALLS` most recent travel with the snapshot (`encode` /
`restore`), so a retry that reaches the agent's next owner after a fail-over is answered too.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
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
_NULL = msgspec.Raw(b"null")


def _entry(call_id: str, reply: Reply | None) -> bytes:
    """One call's entry in the JSON list `RecentCalls.encode` writes."""
    if reply is None:
        return encode(_Remembered(call_id, None, _NULL, kept=False))
    return encode(_Remembered(call_id, reply.headers, msgspec.Raw(reply.body)))


class RecentCalls:
    """The bounded memory of one agent's identified calls: call id → `Reply`."""

    __slots__ = ("_bytes", "_encoded", "_replies", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._replies: OrderedDict[str, Reply | None] = OrderedDict()
        self._encoded: dict[str, bytes] = {}
        """Each remembered call's entry of `encode`, made once when it is remembered."""
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._replies)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._replies

    def get(self, call_id: str) -> Reply:
        """The first reply to `call_id` (`ConflictError` when it was too large to keep)."""
        reply = self._replies[call_id]
        if reply is None:
            raise ConflictError(
                f"call {call_id!r} already ran; its reply was above {MAX_REPLY_BYTES} bytes,"
                " too large to be remembered"
            )
        return reply

    def remember(self, call_id: str, reply: Reply) -> None:
        """Keep `reply` as the answer to every repeat of `call_id`."""
        if self.limit == 0 or call_id in self._replies:
            return
        kept = reply if len(reply.body) <= MAX_REPLY_BYTES else None
        self._replies[call_id] = kept
        self._encoded[call_id] = _entry(call_id, kept)
        self._bytes += len(kept.body) if kept is not None else 0
        while len(self._replies) > self.limit or self._bytes > MAX_REMEMBERED_BYTES:
            oldest_id, oldest = self._replies.popitem(last=False)
            del self._encoded[oldest_id]
            self._bytes -= len(oldest.body) if oldest is not None else 0

    def encode(self) -> bytes:
        """The `PERSISTED_CALLS` most recent calls as JSON, oldest first: `[[id, headers or
        null, body, kept], ...]` (a reply too large to keep has body null and kept false).

        A snapshot carries only these: the calls whose replies may not have reached their
        callers when a runner dies are those of its last commits; older replies were sent.
        """
        recent = list(itertools.islice(reversed(self._encoded.values()), PERSISTED_CALLS))
        return b"[" + b",".join(reversed(recent)) + b"]"

    def restore(self, data: bytes) -> None:
        """Take back what `encode` wrote (a snapshot's); `BadRequestError` if it is not that."""
        try:
            entries = _decoder.decode(data)
        except msgspec.DecodeError as error:
            raise BadRequestError(f"remembered calls: {error}") from error
        self._replies.clear()
        self._encoded.clear()
        self._bytes = 0
        for entry in entries[-self.limit :] if self.limit else ():
            if not entry.kept:
                self._replies[entry.id] = None
                self._encoded[entry.id] = _entry(entry.id, None)
            else:
                self.remember(entry.id, Reply(bytes(entry.body), entry.headers))
