"""Durable reminders: JetStream message schedules (ADR-51) that run an agent's action when due.

`self.remind(name, after=|at=|every=|cron=, action=, args=)` stores one definition, a message on
`P.reminders.def.<agent>.<name>` of the stream `P_REMINDERS` carrying the header `Nats-Schedule`
and `Nats-Schedule-Target: P.reminders.fire.<agent>.<name>`. The server keeps one schedule per
subject (a new definition replaces the old; a purge forgets it) and, when it is due, stores a
copy of the definition on the target subject. We run no scheduler of our own.

Every runner binds to the one durable consumer `reminders` of `P_REMINDERS` (filtered on the
firing subjects, one deliver group): each firing reaches one runner, which hands it to the
`Route`, by default a call of the reminder's action on its agent wherever it lives, with the
call id `reminder-<stream sequence of the firing>`. The firing is acked only once the call has
answered, which for a type that snapshots durably means its effect is stored; a firing that
reaches no agent (between owners) is delivered again later, and its repeat carries the same call
id, so the agent's remembered calls answer it without running the action twice.

The stream keeps one message per subject, so the firings of a periodic reminder that nobody
could take (every runner down) replace each other: after downtime it fires once, not a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from mabeam.agents.virtual_calls import VirtualAgent
from mabeam.core.codec import encode
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    MabeamError,
    NotFoundError,
    ReplyTimeoutError,
    UnavailableError,
    UnknownActionError,
    UnknownTypeError,
)
from mabeam.core.jetstream import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    StorageType,
    StreamConfig,
    retrying_setup,
)
from mabeam.core.messages import Message, Subscription, settle, unsubscribe_all
from mabeam.core.names import validate_id
from mabeam.core.numbers import is_number
from mabeam.core.tasks import cancel_and_wait

if TYPE_CHECKING:
    from mabeam.agents.calls import Caller
    from mabeam.agents.model import Agent
    from mabeam.core.names import Subjects
    from mabeam.registry.registry import Registry

__all__ = [
    "CONSUMER",
    "SCHEDULE_HEADER",
    "SERVER_NEEDED",
    "TARGET_HEADER",
    "Reminder",
    "Reminders",
    "Route",
    "call_owner",
    "define",
    "schedule_of",
    "server_version_of",
]

log = structlog.get_logger("mabeam.reminders")

SCHEDULE_HEADER: Final = "Nats-Schedule"
"""ADR-51: the schedule of a definition (`@at <RFC 3339>`, `@every <duration>`, or cron)."""
TARGET_HEADER: Final = "Nats-Schedule-Target"
"""ADR-51: the subject (of the same stream) the server stores each firing on."""
CONSUMER: Final = "reminders"
"""The durable consumer (and its deliver group) all runners share for the firings."""
ACK_WAIT: Final = 6.0
"""Seconds a firing taken by a runner that died waits before it is delivered again (a runner
still working on one tells the server so every third of it)."""
RETRY_DELAY: Final = 1.0
"""Seconds before a firing that reached no agent is delivered again."""
UNHOSTED_DELAY: Final = 10.0
"""Seconds before a firing for a type that no runner hosts is delivered again: no host of a type
is most often a deploy between its old runners and its new ones, and a dropped firing would be
lost for good, so it waits (without spinning) up to `MAX_DELIVERIES` deliveries, then it is
given up."""
MAX_DELIVERIES: Final = 100
"""Deliveries of one firing that reached no agent before it is given up (terminated, logged):
more than any take-over needs, and a bound for an action that keeps answering 503."""
MAX_ACK_PENDING: Final = 1000
"""Firings delivered and not yet acknowledged, at most, across all runners."""
MAX_LISTED: Final = 1000
"""The most reminders of one agent read back (listed in `_info`)."""
SERVER_NEEDED: Final = (2, 12)
"""The first nats-server version with message schedules (`@at`; `@every` and cron: 2.14)."""
CRON_FIELDS: Final = 6
"""A cron schedule's fields: seconds, minutes, hours, day of month, month, day of week."""


class Reminder(msgspec.Struct, kw_only=True):
    """One reminder's definition, the body of its definition and of each of its firings."""

    agent: str
    type: str
    name: str
    action: str
    schedule: str
    """The `Nats-Schedule` value."""
    args: dict[str, Any] = {}
    key: str | None = None
    """A virtual agent's key: its firings go through `P.virtual`, which reactivates it."""

    def pending(self, now: datetime.datetime) -> bool:
        """False for a one-shot (`@at`) reminder whose time has passed (the server drops its
        definition once it fired)."""
        if not self.schedule.startswith("@at "):
            return True
        return datetime.datetime.fromisoformat(self.schedule[4:]) > now

    def listed(self) -> dict[str, Any]:
        """The reminder as `_info` lists it."""
        return {
            "name": self.name,
            "action": self.action,
            "args": self.args,
            "schedule": self.schedule,
        }


Route = Callable[[Reminder, str], Awaitable[Any]]
"""Runs a firing's action on its agent, given the reminder and the firing's call id; returns
once the effect is stored. Raises `UnavailableError` or `ReplyTimeoutError` when the agent could
not be reached (the firing comes again), `NotFoundError` when it is gone for good (dropped),
and the error of the action's reply when it ran and failed (the firing took effect)."""


def _seconds(value: object, what: str) -> float:
    if not is_number(value):
        raise BadRequestError(f"reminder {what} must be a number of seconds, got {value!r}")
    return float(value)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moment(at: object) -> datetime.datetime:
    if isinstance(at, str):
        try:
            at = datetime.datetime.fromisoformat(at)
        except ValueError as error:
            raise BadRequestError(f"reminder at={at!r} is not an ISO 8601 time") from error
    if not isinstance(at, datetime.datetime):
        raise BadRequestError(f"reminder at= must be a datetime or ISO 8601 string, got {at!r}")
    if at.tzinfo is None:
        raise BadRequestError(f"reminder at={at.isoformat()!r} needs a time zone")
    return at


def schedule_of(
    *, after: object = None, at: object = None, every: object = None, cron: object = None
) -> str:
    """The `Nats-Schedule` value of exactly one of `after` (seconds from now), `at` (an aware
    datetime or ISO 8601 string), `every` (whole seconds, at least 1) or `cron` (six fields,
    seconds first); `BadRequestError` saying what is wrong otherwise."""
    given = [
        key
        for key, value in (("after", after), ("at", at), ("every", every), ("cron", cron))
        if value is not None
    ]
    if len(given) != 1:
        raise BadRequestError(
            f"a reminder needs exactly one of after=, at=, every=, cron= (got {given or 'none'})"
        )
    now = datetime.datetime.now(datetime.UTC)
    if after is not None:
        seconds = _seconds(after, "after=")
        if seconds <= 0:
            raise BadRequestError(f"reminder after= must be positive, got {after!r}")
        return f"@at {_rfc3339(now + datetime.timedelta(seconds=seconds))}"
    if at is not None:
        return f"@at {_rfc3339(_moment(at))}"
    if every is not None:
        seconds = _seconds(every, "every=")
        if seconds < 1 or seconds != int(seconds):
            raise BadRequestError(f"reminder every= must be whole seconds >= 1, got {every!r}")
        return f"@every {int(seconds)}s"
    if not isinstance(cron, str) or len(cron.split()) != CRON_FIELDS:
        raise BadRequestError(
            f"reminder cron= must be {CRON_FIELDS} fields (seconds first), got {cron!r}"
        )
    return " ".join(cron.split())


def define(
    agent_type: type[Agent],
    agent_id: str,
    name: str,
    schedule: str,
    action: str,
    args: dict[str, Any] | None,
    *,
    key: str | None = None,
) -> Reminder:
    """A reminder of `agent_id` checked against its type: a valid name, an action it has and
    arguments that action takes (the errors a call would get, raised now)."""
    validate_id(name, "reminder name")
    spec = agent_type.__actions__.get(action) if isinstance(action, str) else None
    if spec is None:
        raise UnknownActionError(
            f"reminder {name!r}: agent type {agent_type.type_name!r} has no action {action!r}"
        )
    if args is not None and not isinstance(args, dict):
        raise BadRequestError(f"reminder {name!r}: args must be an object, got {args!r}")
    spec.parse(dict(args or {}))
    return Reminder(
        agent=agent_id,
        type=agent_type.type_name,
        name=name,
        action=action,
        schedule=schedule,
        args=dict(args or {}),
        key=key,
    )


def call_owner(caller: Caller, subjects: Subjects, registry: Registry) -> Route:
    """The default `Route`: call the action on the agent's owner (`P.agent.<id>.<action>`)
    with the firing's call id; a virtual agent's through `P.virtual`, which reactivates it when
    it was passivated. This is the one place that says where a firing goes."""

    async def route(reminder: Reminder, call_id: str) -> None:
        if reminder.key is not None:
            agent = VirtualAgent(caller, subjects, reminder.type, reminder.key, registry=registry)
            await agent.call(reminder.action, reminder.args, call_id=call_id)
            return
        if registry.agents.get(reminder.agent) is None:
            raise NotFoundError(f"agent {reminder.agent} is gone")
        await caller.call(reminder.agent, reminder.action, reminder.args, call_id=call_id)

    return route


_decoder = msgspec.json.Decoder(Reminder)


def server_version_of(version: str) -> tuple[int, int]:
    """(major, minor) of a server version such as `2.12.1-RC.2`; (0, 0) when unreadable."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


class Reminders:
    """The reminders of one system as one runner sees them: it defines and forgets them, and
    takes its share of the firings."""

    def __init__(
        self,
        connection: Connection,
        route: Route,
        unhosted: Callable[[str], None] = lambda _type: None,
    ) -> None:
        self._connection = connection
        self.route = route
        """Where firings go (see `call_owner`)."""
        self._unhosted = unhosted
        """Told the type of each firing that found no runner hosting it."""
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.unsupported: str | None = None
        """Why reminders are off (a server without message schedules), None while they work."""

    @property
    def _stream(self) -> str:
        return self._connection.subjects.reminders_stream

    async def ensure_stream(self) -> None:
        """Create `P_REMINDERS` unless it exists (idempotent across runners)."""
        subjects = self._connection.subjects
        config = StreamConfig(
            name=self._stream,
            subjects=[f"{subjects.reminders_root}.>"],
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
            allow_msg_schedules=True,
            allow_direct=True,
        )
        try:
            await self._connection.jetstream.stream_info(self._stream)
        except NotFoundError:
            with contextlib.suppress(ConflictError):  # another runner created it just now
                await self._connection.jetstream.add_stream(config)

    async def start(self) -> None:
        """Make sure of the stream and the consumer, and take firings; on a server too old to
        schedule messages, log it and leave reminders off (`set` answers 503)."""
        version = str(self._connection.server_info.get("version", ""))
        if server_version_of(version) < SERVER_NEEDED:
            self.unsupported = (
                f"reminders need nats-server {'.'.join(map(str, SERVER_NEEDED))} or later"
                f" (message schedules); this one is {version or 'of unknown version'}"
            )
            log.error("reminders.unsupported", reason=self.unsupported)
            return
        await retrying_setup(f"stream {self._stream}", self.ensure_stream)
        info = await retrying_setup(f"consumer {CONSUMER}", self._ensure_consumer)
        self._subscription = await self._connection.jetstream.bind(
            self._stream, CONSUMER, info.config, self._on_firing
        )

    async def _ensure_consumer(self) -> ConsumerInfo:
        """The shared consumer, created unless it exists; runners that start together race to
        create it, and the losers (refused: the name is in use) bind to the winner's."""
        jetstream = self._connection.jetstream
        try:
            return await jetstream.consumer_info(self._stream, CONSUMER)
        except NotFoundError:
            pass
        config = ConsumerConfig(
            name=CONSUMER,
            durable_name=CONSUMER,
            deliver_subject=self._connection.new_inbox(),
            deliver_group=CONSUMER,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=self._connection.subjects.reminder_firing("*", "*"),
        )
        try:
            return await jetstream.add_consumer(self._stream, config)
        except MabeamError as lost:
            try:
                return await jetstream.consumer_info(self._stream, CONSUMER)
            except NotFoundError:
                raise lost from None

    async def close(self) -> None:
        """Take no more firings; those in flight are given up (delivered again elsewhere)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await unsubscribe_all([subscription], log, "reminders.unsubscribe_failed")
        await cancel_and_wait(*self._tasks)

    async def set(self, reminder: Reminder) -> None:
        """Store the definition (replacing one of the same name); the server schedules it."""
        if self.unsupported is not None:
            raise UnavailableError(self.unsupported)
        subjects = self._connection.subjects
        await self._connection.jetstream.publish(
            subjects.reminder_definition(reminder.agent, reminder.name),
            encode(reminder),
            headers={
                SCHEDULE_HEADER: reminder.schedule,
                TARGET_HEADER: subjects.reminder_firing(reminder.agent, reminder.name),
            },
        )

    async def forget(self, agent_id: str, name: str) -> None:
        """Drop the definition and a firing not yet taken, in one purge: neither outlives the
        other, and it is one round trip."""
        subjects = self._connection.subjects.reminder_subjects(agent_id, name)
        await self._connection.jetstream.purge(self._stream, subjects)

    async def forget_all(self, agent_id: str) -> None:
        """Drop every reminder of an agent that is gone for good, and its firings not yet
        taken (one purge of the stream, by pattern)."""
        if self.unsupported is None:
            await self.forget(agent_id, "*")

    async def of_agent(self, agent_id: str) -> dict[str, Reminder]:
        """The stored reminders of one agent, by name (one direct get)."""
        if self.unsupported is not None:
            return {}
        pattern = self._connection.subjects.reminder_definition(agent_id, "*")
        answer = await self._connection.jetstream.direct_get(
            self._stream, {"multi_last": [pattern], "batch": MAX_LISTED}
        )
        found: dict[str, Reminder] = {}
        for message in answer.messages:
            try:
                reminder = _decoder.decode(message.data)
            except msgspec.DecodeError:
                continue  # written by a foreign client: not ours to list
            found[reminder.name] = reminder
        return found

    # ----------------------------------------------------------------- firings

    async def _on_firing(self, msg: Message) -> None:
        task = asyncio.get_running_loop().create_task(self._fire(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, msg: Message) -> None:
        try:
            reminder = _decoder.decode(msg.data)
        except msgspec.DecodeError as error:
            log.error("reminder.unreadable", subject=msg.subject, error=str(error))
            await settle(msg.term())
            return
        call_id = f"reminder-{msg.metadata.sequence.stream}"
        working = asyncio.get_running_loop().create_task(_keep_in_progress(msg))
        try:
            await self.route(reminder, call_id)
        except (UnavailableError, ReplyTimeoutError) as unreachable:
            log.info(
                "reminder.unreachable",
                agent=reminder.agent,
                name=reminder.name,
                error=unreachable.message,
            )
            if msg.metadata.num_delivered < MAX_DELIVERIES:
                await settle(msg.nak(delay=RETRY_DELAY))
                return
            log.error("reminder.given_up", agent=reminder.agent, name=reminder.name)
            await settle(msg.term())
            return
        except UnknownTypeError as unhosted:
            await self._unhosted_firing(msg, reminder, unhosted)
            return
        except NotFoundError as gone:
            log.warning(
                "reminder.dropped", agent=reminder.agent, name=reminder.name, error=gone.message
            )
            await settle(msg.term())
            return
        except MabeamError as failed:  # the action ran and failed: that firing took effect
            log.warning(
                "reminder.action_failed",
                agent=reminder.agent,
                name=reminder.name,
                error=failed.message,
            )
        finally:
            working.cancel()
        await settle(msg.ack())

    async def _unhosted_firing(
        self, msg: Message, reminder: Reminder, error: UnknownTypeError
    ) -> None:
        """A firing for a type no runner hosts: logged, counted, and delivered again after
        `UNHOSTED_DELAY` (a host may be on its way), until `MAX_DELIVERIES`."""
        self._unhosted(reminder.type)
        given_up = msg.metadata.num_delivered >= MAX_DELIVERIES
        log.error(
            "reminder.no_host",
            agent=reminder.agent,
            type=reminder.type,
            name=reminder.name,
            error=error.message,
            deliveries=msg.metadata.num_delivered,
            given_up=given_up,
        )
        await settle(msg.term() if given_up else msg.nak(delay=UNHOSTED_DELAY))


async def _keep_in_progress(msg: Message) -> None:
    """Tell the server a firing is still being worked on, so it is not delivered again."""
    while True:
        await asyncio.sleep(ACK_WAIT / 3)
        await settle(msg.in_progress())
