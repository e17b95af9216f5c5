"""The checker: a pure function from a recorded `History` to the violations it contains.

What it checks, and from which observation:
- `lost`: an acknowledged operation is not in its agent's final ledger (`get_messages`).
- `duplicated`: an operation appears more than once in its agent's ledger.
- `phantom`: the ledger holds a message that no client ever sent to that agent.
- `unreadable`: the agent did not answer the final read, so nothing of it can be checked.
- `double_reply`: one attempt (one reply subject) got more than one answer from runners.
- `non_owner_reply`: a runner published a reply for an agent while the registry named another
  owner, give or take `grace` seconds (the registry watch and the proxies' taps are two paths);
  a 503 refusal ("not served here, try again") is no reply (the taps leave it out).
- `stale_snapshot`: after quiescing, the agent's `P_state` snapshot lacks an acknowledged
  operation, or differs from the live ledger.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from tests.faults.history import History, Ownership, Served

Kind = Literal[
    "lost",
    "duplicated",
    "phantom",
    "unreadable",
    "double_reply",
    "non_owner_reply",
    "stale_snapshot",
]

GRACE = 0.5
"""Seconds of slack between the registry watch and the wire taps when judging an owner."""


@dataclass(frozen=True)
class Finding:
    """One violation: its kind, the agent, and what exactly was seen."""

    kind: Kind
    agent: str
    detail: str


@dataclass
class Report:
    """The findings of one history, and the workload's figures."""

    findings: list[Finding] = field(default_factory=list)
    operations: int = 0
    acknowledged: int = 0
    attempts: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Findings per kind."""
        return dict(Counter(f.kind for f in self.findings))

    def summary(self) -> str:
        """One line: the workload and the findings per kind."""
        found = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())) or "nothing"
        return (
            f"{self.operations} ops ({self.acknowledged} acknowledged, {self.attempts} "
            f"attempts); found: {found}"
        )


def check(history: History, *, grace: float = GRACE) -> Report:
    """Every violation of the guarantees that `history` shows."""
    report = Report(
        operations=len(history.operations),
        acknowledged=sum(op.acknowledged for op in history.operations),
        attempts=sum(len(op.attempts) for op in history.operations),
    )
    report.findings += _ledger_findings(history)
    report.findings += _double_replies(history)
    report.findings += _non_owner_replies(history, grace)
    return report


def _ledger_findings(history: History) -> list[Finding]:
    findings: list[Finding] = []
    sent: dict[str, set[str]] = {}
    acked: dict[str, list[str]] = {}
    for op in history.operations:
        sent.setdefault(op.agent, set()).add(op.call_id)
        if op.acknowledged:
            acked.setdefault(op.agent, []).append(op.call_id)
    for agent in sorted(set(sent) | set(history.finals)):
        final = history.finals.get(agent)
        if final is None or final.ledger is None:
            findings.append(Finding("unreadable", agent, "no answer to get_messages"))
            continue
        counts = Counter(str(m) for m in final.ledger)
        for message, n in sorted(counts.items()):
            if message not in sent.get(agent, set()):
                findings.append(Finding("phantom", agent, f"{message!r} was never sent here"))
            elif n > 1:
                findings.append(Finding("duplicated", agent, f"{message!r} appears {n} times"))
        for call_id in acked.get(agent, []):
            if call_id not in counts:
                findings.append(Finding("lost", agent, f"acknowledged {call_id!r} is missing"))
        findings += _snapshot_findings(agent, final.ledger, final.snapshot, acked.get(agent, []))
    return findings


def _snapshot_findings(
    agent: str, ledger: list[object], snapshot: list[object] | None, acked: list[str]
) -> list[Finding]:
    stored = {str(m) for m in snapshot or []}
    missing = [call_id for call_id in acked if call_id not in stored]
    findings = [
        Finding("stale_snapshot", agent, f"snapshot lacks acknowledged {c!r}") for c in missing
    ]
    if not missing and [str(m) for m in snapshot or []] != [str(m) for m in ledger]:
        findings.append(Finding("stale_snapshot", agent, "snapshot differs from the live ledger"))
    return findings


def _double_replies(history: History) -> list[Finding]:
    requests = [(op.agent, a) for op in history.operations for a in op.attempts]
    requests += [(probe.agent, probe.attempt) for probe in history.probes]
    findings = []
    for agent, attempt in requests:
        answers = [r for r in attempt.replies if r.from_agent]
        if len(answers) > 1:
            findings.append(
                Finding(
                    "double_reply", agent, f"{attempt.reply_subject} got {len(answers)} answers"
                )
            )
    return findings


def _non_owner_replies(history: History, grace: float) -> list[Finding]:
    agent_of = {a.reply_subject: op.agent for op in history.operations for a in op.attempts}
    agent_of |= {probe.attempt.reply_subject: probe.agent for probe in history.probes}
    timelines: dict[str, list[Ownership]] = {}
    for change in sorted(history.ownership, key=lambda c: c.at):
        timelines.setdefault(change.agent, []).append(change)
    sent_at = {a.reply_subject: a.sent_at for op in history.operations for a in op.attempts}
    findings = []
    for served in history.served:
        agent = agent_of.get(served.reply_subject)
        if agent is None:
            continue
        timeline = timelines.get(agent, [])
        owners = owners_between(timeline, served.at - grace, served.at + grace)
        if served.runner not in owners:
            findings.append(_non_owner(agent, served, owners, timeline, sent_at))
    return findings


def owners_between(timeline: list[Ownership], start: float, end: float) -> set[str | None]:
    """The runners that a time-ordered record history names at some moment in [start, end]."""
    owners: set[str | None] = set()
    current: str | None = None
    for change in timeline:
        if change.at <= start:
            current = change.runner
        elif change.at <= end:
            owners.add(change.runner)
    if timeline and timeline[0].at <= start:
        owners.add(current)
    return owners


def _non_owner(
    agent: str,
    served: Served,
    owners: set[str | None],
    timeline: list[Ownership],
    sent_at: dict[str, float],
) -> Finding:
    """The finding, with its times relative to the reply (a rare one must explain itself)."""
    named = ", ".join(sorted(str(o) for o in owners)) or "nobody"
    changes = ", ".join(f"{change.runner} at {change.at - served.at:+.3f} s" for change in timeline)
    sent = sent_at.get(served.reply_subject)
    asked = "" if sent is None else f" (asked at {sent - served.at:+.3f} s)"
    return Finding(
        "non_owner_reply",
        agent,
        f"{served.runner} answered {served.reply_subject}{asked} while the registry named"
        f" {named}; its owners: {changes or 'none recorded'}",
    )
