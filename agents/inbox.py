"""The wire side of an agent's inbox: a NATS message on `P.agent.<id>.<action>` decoded once.

`decode_message` turns a message into an `Envelope` (action name checked, body decoded within the
size limit, the `Mabeam-Call-Id` header checked) or raises the error the caller gets at once:
400 for a bad name, body or call id, 413 for a body above the limit.
"""

from __future__ import annotations

from typing import Final

from mabeam.agents.mailbox import Envelope, EnvelopeKind
from mabeam.core.codec import decode_object
from mabeam.core.messages import Message
from mabeam.core.names import CALL_ID_HEADER, validate_call_id, validate_id

__all__ = ["IMMEDIATE", "QUEUED_CONTROL", "call_id_of", "decode_message"]

IMMEDIATE: Final = frozenset({"_ping", "_info", "_describe"})
"""Reserved actions answered at once, even while the agent is busy."""
QUEUED_CONTROL: Final = frozenset({"_stop", "_restart", "_campaign"})
"""Reserved actions that wait their turn in the mailbox."""


def decode_message(message: Message, action: str, max_payload: int) -> Envelope:
    """The envelope of a wire message for `action` (the subject's last token)."""
    validate_id(action, "action name")
    headers = message.headers or None
    if headers is not None and CALL_ID_HEADER in headers:
        validate_call_id(headers[CALL_ID_HEADER])
    if action in IMMEDIATE:
        return Envelope(EnvelopeKind.CONTROL, action, reply=message.reply or None)
    args = decode_object(message.data, max_size=max_payload)
    kind = EnvelopeKind.CONTROL if action in QUEUED_CONTROL else EnvelopeKind.ACTION
    return Envelope(kind, action, args, reply=message.reply or None, headers=headers)


def call_id_of(envelope: Envelope) -> str | None:
    """The call id an envelope carries, if any."""
    headers = envelope.headers
    return headers.get(CALL_ID_HEADER) if headers else None
