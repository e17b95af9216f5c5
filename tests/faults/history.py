"""What a scenario records: operations with every attempt and reply, probes, who served which
reply (seen on the wire by the runners' proxies), the registry's owner over time, and the final
ledgers and snapshots. Plain data; `checker.check` judges it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ReplyKind = Literal["ok", "error", "no_responders"]


@dataclass(frozen=True)
class Reply:
    """One message received on an attempt's own reply subject."""

    received_at: float
    kind: ReplyKind
    code: int | None = None
    body: Any = None

    @property
    def from_agent(self) -> bool:
        """True for an answer sent by a runner (not the server's "no responders" status)."""
        return self.kind != "no_responders"


@dataclass
class Attempt:
    """One publish of a request, with its own reply subject, and what came back on it."""

    reply_subject: str
    sent_at: float
    replies: list[Reply] = field(default_factory=list)


@dataclass
class Operation:
    """An identified increment: `add_message {"message": call_id}` with `Mabeam-Call-Id: call_id`,
    or an event of id `call_id` published to the events stream (acknowledged: the stream's
    ack) for an event ledger agent; retried with the same id until acknowledged or given up."""

    client: str
    seq: int
    agent: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        """The operation's id: the call id header and the message it appends."""
        return f"{self.client}-{self.seq}"

    @property
    def acknowledged(self) -> bool:
        """True when some attempt got a success reply."""
        return any(r.kind == "ok" for a in self.attempts for r in a.replies)


@dataclass
class Probe:
    """A `_ping` or a final read sent to an agent: two answers mean two runners serve it."""

    agent: str
    attempt: Attempt


@dataclass(frozen=True)
class Served:
    """A runner published to a reply subject of ours (seen by its proxy as it went to NATS)."""

    at: float
    runner: str
    reply_subject: str


@dataclass(frozen=True)
class Ownership:
    """A change of an agent's record in `P_agents`: the runner it names (None: deleted)."""

    at: float
    agent: str
    runner: str | None


@dataclass(frozen=True)
class FinalRead:
    """An agent read after the system quiesced: its live ledger and the ledger in its snapshot."""

    agent: str
    ledger: list[Any] | None
    """`get_messages` of the agent; None when it did not answer."""
    snapshot: list[Any] | None
    """The messages in its `P_state` value; None when there is none."""


@dataclass
class History:
    """Everything a scenario observed, in the test process's monotonic clock."""

    operations: list[Operation] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    ownership: list[Ownership] = field(default_factory=list)
    finals: dict[str, FinalRead] = field(default_factory=dict)
