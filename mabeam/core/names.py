"""Subject names, bucket names and id rules of PROTOCOL.md "Names". No I/O.

`Subjects(prefix)` builds every subject and JetStream name a system uses, so no other module
formats a subject by hand. The `validate_*` functions raise `BadRequestError` with a message that
says which rule failed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from mabeam.core.errors import BadRequestError

__all__ = [
    "CALL_ID_HEADER",
    "ID_PATTERN",
    "Subjects",
    "pattern_covers",
    "validate_call_id",
    "validate_id",
    "validate_pattern",
    "validate_prefix",
    "validate_runner_id",
    "validate_topic",
    "virtual_agent_id",
    "virtual_form",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MAX_ID_CHARS = 128
_RESERVED_RUNNER_IDS = frozenset({"spawn"})  # `P.ctl.spawn.<verb>` is a per-type spawn subject
CALL_ID_HEADER = "Mabeam-Call-Id"
"""The request header naming a call, so that a retry of it runs at most once (PROTOCOL.md,
"Safe retries"); its value follows the id rule."""
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_VIRTUAL_FORM = re.compile(r"^v_(?:h|[0-9]+)_")
# A topic token may be anything NATS accepts in a subject token that is not a wildcard.
_TOPIC_TOKEN = re.compile(r"^[^\s.*>]+$")


def validate_id(value: object, kind: str = "id") -> str:
    """Return `value` if it is a valid agent, runner, type or action name; raise otherwise.

    The names that passed lately are remembered (`_valid_ids`): the types, runners, actions and
    capabilities met again and again pass at a third of the pattern's cost (0.1 against 0.3 µs)."""
    if type(value) is str and value in _valid_ids:
        return value
    checked = _checked_id(value, kind)
    if len(_valid_ids) >= _VALID_IDS_AT_MOST:
        _valid_ids.clear()  # the names that recur are back after a few calls
    _valid_ids.add(checked)
    return checked


def validate_call_id(value: object) -> str:
    """Return `value` if it is a valid call id (the id rule); raise otherwise. Not remembered
    as `validate_id` remembers names: every call has an id of its own."""
    return _checked_id(value, "call id")


def _checked_id(value: object, kind: str) -> str:
    if not isinstance(value, str):
        raise BadRequestError(f"{kind} must be a string, got {type(value).__name__}")
    if not ID_PATTERN.match(value):
        raise BadRequestError(f"{kind} {value!r} must match {ID_PATTERN.pattern}")
    return value


_valid_ids: set[str] = set()
"""Strings that matched `ID_PATTERN` lately (a subclass of str is never taken from here)."""
_VALID_IDS_AT_MOST: Final = 4096


def virtual_agent_id(agent_type: str, key: str) -> str:
    """The agent id of the virtual agent `key` of `agent_type` (PROTOCOL.md "Virtual agents"):
    `v_<length of type>_<type>_<key>`, or `v_h_<40 hex digits of SHA-256("<type>.<key>")>` when
    that is longer than an id may be. The length makes the first form unambiguous, and the
    second never starts like the first."""
    validate_id(agent_type, "agent type")
    validate_id(key, "virtual agent key")
    plain = f"v_{len(agent_type)}_{agent_type}_{key}"
    if len(plain) <= _MAX_ID_CHARS:
        return plain
    return "v_h_" + hashlib.sha256(f"{agent_type}.{key}".encode()).hexdigest()[:40]


def virtual_form(agent_id: str) -> bool:
    """True for an id of the form `virtual_agent_id` gives (`v_<digits>_...` or `v_h_...`):
    reserved for virtual agents, so a spawned agent cannot take a virtual agent's id."""
    return _VIRTUAL_FORM.match(agent_id) is not None


def validate_runner_id(value: object) -> str:
    """Return `value` if it is a valid id for a runner of its own: the id rule, and not `spawn`
    (whose control subjects would be the per-type spawn subjects `P.ctl.spawn.<type>`)."""
    runner_id = validate_id(value, "runner id")
    if runner_id in _RESERVED_RUNNER_IDS:
        raise BadRequestError(f"runner id {runner_id!r} is reserved")
    return runner_id


def validate_prefix(value: object) -> str:
    """Return `value` if it is a valid subject prefix (dot-separated `[A-Za-z0-9_-]` tokens)."""
    if not isinstance(value, str) or not value:
        raise BadRequestError("prefix must be a non-empty string")
    for token in value.split("."):
        if not _TOKEN.match(token):
            raise BadRequestError(
                f"prefix {value!r}: token {token!r} must be one or more of [A-Za-z0-9_-]"
            )
    return value


def validate_topic(value: object) -> str:
    """Return `value` if it is a concrete event topic: dot-separated tokens, no wildcards."""
    tokens = _split_tokens(value, "topic")
    for token in tokens:
        if not _TOPIC_TOKEN.match(token):
            raise BadRequestError(
                f"topic {value!r}: token {token!r} may not contain spaces, '*' or '>'"
            )
    return str(value)


def validate_pattern(value: object) -> str:
    """Return `value` if it is a topic pattern: tokens, `*` for one token, a final `>`."""
    tokens = _split_tokens(value, "pattern")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if token == "*" or (token == ">" and index == last):
            continue
        if token == ">":
            raise BadRequestError(f"pattern {value!r}: '>' may only be the last token")
        if not _TOPIC_TOKEN.match(token):
            raise BadRequestError(
                f"pattern {value!r}: token {token!r} may not contain spaces or partial wildcards"
            )
    return str(value)


def pattern_covers(outer: str, inner: str) -> bool:
    """True when every subject (or topic) that valid pattern `inner` matches also matches valid
    pattern `outer` (`*` one token, a final `>` one or more)."""
    outer_tokens, inner_tokens = outer.split("."), inner.split(".")
    for index, token in enumerate(outer_tokens):
        if token == ">":
            return len(inner_tokens) > index
        if index >= len(inner_tokens) or inner_tokens[index] == ">":
            return False
        if token != "*" and token != inner_tokens[index]:
            return False
    return len(inner_tokens) == len(outer_tokens)


def _split_tokens(value: object, kind: str) -> list[str]:
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{kind} must be a non-empty string")
    tokens = value.split(".")
    if any(token == "" for token in tokens):
        raise BadRequestError(f"{kind} {value!r} has an empty token")
    return tokens


@dataclass(frozen=True, slots=True)
class Subjects:
    """Every subject, stream and bucket name of one system, derived from its prefix."""

    prefix: str = "mabeam"

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    @property
    def events_root(self) -> str:
        """The subject prefix of all events: `P.events`."""
        return f"{self.prefix}.events"

    def event(self, topic: str) -> str:
        """The subject of an event topic (or topic pattern): `P.events.<topic>`."""
        return f"{self.events_root}.{topic}"

    def topic_of(self, subject: str) -> str:
        """The topic of an event subject: the part after `P.events.`."""
        root = self.events_root + "."
        if not subject.startswith(root):
            raise BadRequestError(f"subject {subject!r} is not under {root!r}")
        return subject[len(root) :]

    def agent(self, agent_id: str, action: str) -> str:
        """The request subject of an agent action: `P.agent.<id>.<action>`."""
        return f"{self.prefix}.agent.{agent_id}.{action}"

    def agent_all(self, agent_id: str) -> str:
        """The subscription subject that takes every action of one agent."""
        return f"{self.prefix}.agent.{agent_id}.*"

    def virtual(self, agent_type: str, key: str, action: str) -> str:
        """The subject of an action of a virtual agent: `P.virtual.<type>.<key>.<action>`."""
        return f"{self.prefix}.virtual.{agent_type}.{key}.{action}"

    def virtual_type(self, agent_type: str) -> str:
        """The subscription subject of every virtual call to one type's agents."""
        return f"{self.prefix}.virtual.{agent_type}.*.*"

    @property
    def spawn(self) -> str:
        """The queue-group spawn subject: `P.ctl.spawn`."""
        return f"{self.prefix}.ctl.spawn"

    def spawn_type(self, agent_type: str) -> str:
        """The spawn subject of one agent type, served by its hosts only: `P.ctl.spawn.<type>`."""
        return f"{self.spawn}.{agent_type}"

    @property
    def runners_queue(self) -> str:
        """The queue group runners share for `P.ctl.spawn` and each `P.ctl.spawn.<type>`."""
        return f"{self.prefix}.runners"

    @property
    def runners(self) -> str:
        """The subject every runner answers with its record: `P.ctl.runners`."""
        return f"{self.prefix}.ctl.runners"

    @property
    def types(self) -> str:
        """The subject every runner answers with the interfaces of its types: `P.ctl.types`."""
        return f"{self.prefix}.ctl.types"

    def runner_control(self, runner_id: str, verb: str) -> str:
        """A request to one runner: `P.ctl.<runner_id>.<verb>` (spawn, drain)."""
        return f"{self.prefix}.ctl.{runner_id}.{verb}"

    def bucket(self, name: str) -> str:
        """A KV bucket name: `P_<name>` with the prefix's dots turned into `_`."""
        return f"{self.prefix.replace('.', '_')}_{name}"

    @property
    def events_stream(self) -> str:
        """The JetStream stream that keeps event history: `P_EVENTS`."""
        return self.bucket("EVENTS")

    @property
    def reminders_stream(self) -> str:
        """The JetStream stream of reminder definitions and firings: `P_REMINDERS`."""
        return self.bucket("REMINDERS")

    @property
    def reminders_root(self) -> str:
        """The subject prefix of all reminder subjects: `P.reminders`."""
        return f"{self.prefix}.reminders"

    def reminder_definition(self, agent_id: str, name: str) -> str:
        """The subject holding one reminder's schedule: `P.reminders.def.<agent>.<name>`
        (`*` for a name: all of an agent's)."""
        return f"{self.reminders_root}.def.{agent_id}.{name}"

    def reminder_subjects(self, agent_id: str, name: str) -> str:
        """A reminder's definition and firing subjects at once: `P.reminders.*.<agent>.<name>`
        (`*` for a name: all of an agent's), for one purge that forgets both together."""
        return f"{self.reminders_root}.*.{agent_id}.{name}"

    def reminder_firing(self, agent_id: str, name: str) -> str:
        """The subject the server fires one reminder on: `P.reminders.fire.<agent>.<name>`
        (`*` and `>` as wildcards)."""
        return f"{self.reminders_root}.fire.{agent_id}.{name}"
