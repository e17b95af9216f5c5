"""The acknowledgement a stream answers to a JetStream publish, read into a stream sequence.

A JetStream publish is a request (`Requests`, one wildcard inbox, replies resolved from the read
loop) whose reply is the stream's acknowledgement: `{"stream": ..., "seq": N}`, or an `error`
object. `stream_sequence` reads it with msgspec, mapped like every other nats-py error: a
compare-and-set that lost is `ConflictError`, no stream on the subject `UnavailableError`, no
answer in time `ReplyTimeoutError`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import msgspec
import nats.js.errors

from mabeam.core.error_map import map_nats_error
from mabeam.core.errors import NoRespondersError, UnavailableError
from mabeam.core.messages import Message

__all__ = ["stream_sequence"]


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, Any] | None = None


_ack_decoder = msgspec.json.Decoder(_Ack)


async def stream_sequence(reply: Awaitable[Message]) -> int:
    """The stream sequence acknowledged in `reply`, an awaitable of the publish's reply."""
    try:
        msg = await reply
    except NoRespondersError:
        raise map_nats_error(nats.js.errors.NoStreamResponseError()) from None
    try:
        ack = _ack_decoder.decode(msg.data)
    except msgspec.DecodeError:
        raise UnavailableError(f"unreadable acknowledgement: {msg.data[:80]!r}") from None
    if ack.error is not None:
        raise map_nats_error(nats.js.errors.APIError(**_api_fields(ack.error)))
    return ack.seq


def _api_fields(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": error.get("code"),
        "err_code": error.get("err_code"),
        "description": error.get("description"),
    }
