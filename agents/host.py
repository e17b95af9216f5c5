"""The host of one agent: its subscription, mailbox, timers, supervision and lifecycle.

An `AgentHost` owns one `Agent` instance at a time. Messages reach it on `P.agent.<id>.*`
(decoded once by `inbox.decode_message`) or through `deliver` on the local fast path, and are
run one at a time by its mailbox. `_ping`, `_info` and `_describe` are answered at once; `_stop`,
`_restart` and `_campaign` wait their turn like any action. Every reply leaves through the
host's `Replier` (held for the commit when the type is durable). A repeated call id is
answered from the agent's `RecentCalls` without running again. Nothing is served while the
runner's lease is not valid. A crash goes to the supervisor, which restarts the agent from its
last snapshot or gives up.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from mabeam.agents.context import MessageContext, current_message
from mabeam.agents.coordination.campaigns import Campaigns
from mabeam.agents.coordination.election import LeaderTerm
from mabeam.agents.durable_events import AGENT_DELIVERY, HANDLED, consumer_name, event_key
from mabeam.agents.inbox import IMMEDIATE, QUEUED_CONTROL, call_id_of, decode_message
from mabeam.agents.interface import describe
from mabeam.agents.mailbox import Envelope, EnvelopeKind, Mailbox
from mabeam.agents.model import Agent, EventHandlerSpec
from mabeam.agents.recent_calls import RecentCalls, Reply
from mabeam.agents.replier import Outgoing, Replier, set_local_result
from mabeam.agents.services import TRACEPARENT, HostServices
from mabeam.agents.supervisor import RestartPolicy, Supervisor
from mabeam.agents.timers import Timer
from mabeam.core.codec import encode
from mabeam.core.errors import (
    ActionFailedError,
    BadRequestError,
    ConflictError,
    DeadlineError,
    MabeamError,
    OverloadedError,
    UnavailableError,
    UnknownActionError,
)
from mabeam.core.messages import Message, Subscription

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from mabeam.agents.host_ports import HostRuntime
    from mabeam.agents.snapshots import Stored
    from mabeam.bus.event import Event
    from mabeam.registry.records import AgentRecord

__all__ = ["REFUSED", "AgentHost", "HostState"]

REFUSED = "(refused)"
"""The action label of messages refused before they reached the agent (bad body, too large,
mailbox full, agent not running): their names are not trusted as metric labels."""
_NO_CALLS = b"[]"


class HostState(enum.Enum):
    """Where a hosted agent is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


class AgentHost(HostServices):
    """Runs one agent for a runner; the agent's `AgentServices`."""

    runtime: HostRuntime[AgentHost]
    """The runner, as far as a host needs it (`mabeam.agents.host_ports`)."""

    def __init__(
        self,
        runtime: HostRuntime[AgentHost],
        agent_type: type[Agent],
        record: AgentRecord,
        revision: int,
    ) -> None:
        self.runtime = runtime
        self.agent_type = agent_type
        self.agent_id = record.id
        self.record = record
        self.revision = revision
        self.state = HostState.STARTING
        self.agent: Agent | None = None
        self.mailbox = Mailbox(
            agent_type.mailbox_size, self._process, concurrent=agent_type.concurrent
        )
        self.supervisor = Supervisor(RestartPolicy.parse(record.restart), runtime.intensity)
        self.processed = 0
        self.failed = 0
        self.restarts = 0
        self.events_dropped = 0
        self.last_active = time.monotonic()
        """When a message was last delivered (monotonic seconds): idle virtual agents passivate."""
        self._incarnation = runtime.lease_incarnation()
        self._snapshots = type(self).uses_snapshots(agent_type)
        self._durable = self._snapshots and agent_type.durability == "durable"
        self.replier = Replier(
            runtime.publish_reply,
            lambda: self.log,
            serving=self._serving,
            durable=self._durable,
            on_held=self._changed,
            on_released=runtime.reply_released,
        )
        self._calls: RecentCalls | None = None
        self._running_calls: dict[str, list[Envelope]] = {}
        self._subject_prefix = runtime.subjects.agent(self.agent_id, "")
        self._subscription: Subscription | None = None
        self._leaving: asyncio.Task[None] | None = None
        self._event_subscriptions: list[Any] = []
        self._timers: set[Timer] = set()
        self._campaigns = Campaigns(self.agent_id, runtime.elections, self._announce_term)

    @functools.cached_property
    def log(self) -> FilteringBoundLogger:
        """A logger bound to the agent's id and type (built when first used: binding costs more
        than a whole spawn's worth of other bookkeeping, and most agents never log)."""
        logger: FilteringBoundLogger = structlog.get_logger("mabeam.agent")
        return logger.bind(agent=self.agent_id, type=self.agent_type.type_name)

    @staticmethod
    def uses_snapshots(agent_type: type[Agent]) -> bool:
        """True when the agent type overrides `snapshot()`."""
        return agent_type.snapshot is not Agent.snapshot

    # ----------------------------------------------------------------- lifecycle

    async def start(self, stored: Stored | None = None) -> None:
        """Make the agent reachable and run `on_start`; a failure is a crash."""
        args = self.agent_type.parse_start_arguments(dict(self.record.args))
        await self._take_subject()
        await self._start_instance(args, stored)

    async def _take_subject(self) -> None:
        """Subscribe to `P.agent.<id>.*`."""
        self._subscription = await self.runtime.connection.subscribe_inline(
            self.runtime.subjects.agent_all(self.agent_id), self._on_message
        )

    async def _start_instance(self, args: dict[str, Any], stored: Stored | None) -> None:
        agent = self.agent_type()
        agent._bind(self)
        self.agent = agent
        async with asyncio.timeout(self.agent_type.action_timeout):
            await agent.on_start(**args)
        if stored is not None:
            if stored.state is not None:
                agent.restore(stored.state)
            if stored.calls:
                self._restore_calls(stored.calls)
        for spec in self.agent_type.__event_handlers__:
            await self._subscribe_events(spec)
        self.state = HostState.RUNNING

    def _restore_calls(self, data: bytes) -> None:
        try:
            self._recent_calls().restore(data)
        except BadRequestError as error:  # written by a foreign client: start with none
            self.log.warning("agent.remembered_calls_unreadable", error=error.message)

    async def _subscribe_events(self, spec: EventHandlerSpec) -> None:
        bus = self.runtime.bus
        for index, pattern in enumerate(spec.patterns):
            if spec.durable:
                subscription = await bus.subscribe(
                    pattern,
                    self._durable_feeder(spec.method_name),
                    durable=consumer_name(self.agent_id, spec.method_name, index),
                    delivery=AGENT_DELIVERY,
                )
            else:
                subscription = await bus.subscribe(pattern, self._event_feeder(spec.method_name))
            self._event_subscriptions.append(subscription)

    def _event_feeder(self, method_name: str) -> Callable[[Event], None]:
        def feed(event: Event) -> None:
            if self.state is HostState.RUNNING:
                envelope = Envelope(EnvelopeKind.EVENT, method_name, payload=event)
                if not self.mailbox.offer(envelope):
                    self._drop_event(event)

        return feed

    def _durable_feeder(self, method_name: str) -> Callable[[Event], Awaitable[None]]:
        """The handler of a durable consumer: it returns (and the event is acked) once the
        event's effect is stored; `UnavailableError` has it delivered again after a pause."""

        async def feed(event: Event) -> None:
            if self.state is not HostState.RUNNING:
                raise UnavailableError(f"agent {self.agent_id} is not running on this runner")
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            envelope = Envelope(EnvelopeKind.EVENT, method_name, payload=event, future=done)
            if not self.mailbox.offer(envelope):
                raise UnavailableError(f"the mailbox of agent {self.agent_id} is full")
            await done

        return feed

    async def _unsubscribe_events(self) -> None:
        subscriptions, self._event_subscriptions = self._event_subscriptions, []
        for subscription in subscriptions:
            await subscription.unsubscribe()

    def _drop_event(self, event: Event) -> None:
        """A full mailbox: count the drop, and log the first of each run of drops."""
        self.runtime.observer.event_dropped(self.agent_type.type_name)
        self.events_dropped += 1
        if self.events_dropped == 1 or self.events_dropped % 1000 == 0:
            self.log.warning("agent.events_dropped", topic=event.topic, dropped=self.events_dropped)

    async def _teardown_instance(self, reason: str) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self._campaigns.stop()
        await self._unsubscribe_events()
        await self._settle_held(reason)
        agent, self.agent = self.agent, None
        if agent is not None and reason != "crash":
            try:
                async with asyncio.timeout(self.agent_type.action_timeout):
                    await agent.on_stop(reason)
            except Exception:
                self.log.exception("agent.on_stop_failed", reason=reason)

    async def _settle_held(self, reason: str) -> None:
        """Replies still waiting for a commit: stored and sent, or refused when this runner is
        no longer the agent's owner (nothing may be written for it then)."""
        if not self.replier.held:
            return
        if reason == "lost":
            why = UnavailableError(f"agent {self.agent_id} moved to another runner")
            await self.replier.refuse(self.replier.take_held(), why)
        else:
            await self.runtime.snapshots.commit(self)

    async def stop(self, reason: str = "normal", *, finish_queue: bool = False) -> None:
        """Stop the agent and leave its subject.

        With `finish_queue` (a drain), no new message gets in and the queued ones still run;
        otherwise (a `_stop`) the messages queued behind the stop are refused with 503, and so
        are those the server sent before it had the unsubscription: the subject is left in the
        background, and `left()` waits until it is. A copy `lost` to another owner leaves at
        once and answers none of them: they may have reached that owner too.
        """
        if self.state in (HostState.STOPPING, HostState.STOPPED):
            return
        if reason == "lost":
            self.replier.fence()
        if finish_queue and self.state is HostState.RUNNING:
            await self._leave_subject(finish_pending=True)
            await self._unsubscribe_events()
            await self.mailbox.wait_idle()
        self.state = HostState.STOPPING
        await self._refuse_pending(f"agent {self.agent_id} is stopping")
        if self._snapshots and reason in ("shutdown", "handover", "passivate"):
            await self.runtime.snapshots.commit(self)
        await self._teardown_instance(reason)
        if reason == "lost":
            await self._leave_subject()
        elif self._subscription is not None:
            self._leaving = self.runtime.start_task(self._leave_subject(finish_pending=True))
        self.state = HostState.STOPPED

    async def left(self) -> None:
        """Wait until a stopped agent has left its subject: no message reaches it any more, so
        an agent of the same id may subscribe on this connection without sharing its calls."""
        if self._leaving is not None:
            await asyncio.shield(self._leaving)

    async def _leave_subject(self, *, finish_pending: bool = False) -> None:
        """Unsubscribe from `P.agent.<id>.*`; with `finish_pending`, messages already
        delivered to this process still reach `receive` (to the mailbox in a drain, refused
        with 503 once stopping), so none is dropped unanswered."""
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        try:
            if finish_pending:
                await subscription.drain()
            else:
                await subscription.unsubscribe()
        except MabeamError as error:
            self.log.warning("agent.unsubscribe_failed", error=error.message)

    async def _refuse_pending(self, why: str) -> None:
        """Answer 503 to what waits: the queued messages, and repeats of calls still running."""
        repeats = [envelope for waiting in self._running_calls.values() for envelope in waiting]
        self._running_calls.clear()
        for envelope in [*self.mailbox.take_all(), *repeats]:
            await self.replier.error(envelope, UnavailableError(why))

    async def crash(self, error: BaseException) -> None:
        """Hand a crash to the supervisor: restart from the last snapshot, or give up."""
        if self.state in (HostState.STOPPING, HostState.STOPPED, HostState.CRASHED):
            return
        reason = f"{type(error).__name__}: {error}"
        self.log.error("agent.crashed", reason=reason)
        self.state = HostState.RESTARTING
        await self._refuse_pending(f"agent {self.agent_id} is restarting")
        await self._teardown_instance("crash")
        delay = self.supervisor.on_crash()
        if delay is None:
            await self._give_up()  # off its subject before the registry hears of it
            await self.runtime.agent_crashed(self, reason, will_restart=False)
            return
        await self.runtime.agent_crashed(self, reason, will_restart=True)
        await asyncio.sleep(delay)
        await self._restart_instance()

    async def crashed_on_start(self, error: BaseException) -> None:
        """A start after a take-over or a move that raised (or whose snapshot could not be
        read): a crash, handed to the supervisor like any other. The agent's subject is taken
        first, so calls meanwhile get 503 `restarting` and a restart is reachable."""
        if self._subscription is None:
            await self._take_subject()
        await self.crash(error)

    async def _give_up(self) -> None:
        """Past the restart intensity. An agent kept `crashed` in the registry stays on its
        subject, so that calls fail at once and `_restart` or `_stop` reach it
        (`_while_crashed`); a temporary or virtual one leaves it, as the runner forgets it."""
        self.state = HostState.CRASHED
        if self.record.virtual or self.supervisor.policy is RestartPolicy.TEMPORARY:
            await self._leave_subject()

    async def _restart_instance(self) -> None:
        try:
            await self._start_from_snapshot()
        except Exception as exc:
            await self.crash(exc)
            return
        await self.runtime.agent_restarted(self)

    async def _start_from_snapshot(self) -> None:
        stored = await self.runtime.snapshots.load(self.agent_id) if self._snapshots else None
        args = self.agent_type.parse_start_arguments(dict(self.record.args))
        self._calls = None
        await self._start_instance(args, stored)
        self.restarts += 1

    async def restart(self) -> None:
        """Replace the instance with a new one resumed from the last snapshot (`_restart`)."""
        await self._teardown_instance("restart")
        await self._start_from_snapshot()

    # ----------------------------------------------------------------- snapshots

    def snapshot_now(self) -> tuple[bytes, bytes] | None:
        """The encoded snapshot and remembered calls (None while there is no instance)."""
        if self.agent is None:
            return None
        calls = self._calls.encode() if self._calls is not None else _NO_CALLS
        return encode(self.agent.snapshot()), calls

    async def ownership_lost(self) -> None:
        """Another runner wrote this agent's snapshot: it owns the agent now; stop here."""
        self.runtime.start_task(self.runtime.yield_agent(self))

    async def holds_record(self) -> bool:
        """True when the agent's record, read from KV now, still names this runner at the epoch
        this copy was started under (nobody took it over)."""
        return await self.runtime.holds_record(self)

    def _serving(self) -> bool:
        """True while this copy may answer: the runner holds the lease it was started under."""
        return self.runtime.serving(self._incarnation)

    def _changed(self) -> None:
        """The agent may have changed its state, or holds replies: get its snapshot written."""
        if self._snapshots:
            self.runtime.snapshots.mark_dirty(self, durable=self._durable)

    # ----------------------------------------------------------------- messages in

    def _on_message(self, msg: Message) -> None:
        self.receive(msg, msg.subject[len(self._subject_prefix) :])

    def receive(self, msg: Message, action: str) -> None:
        """Take a wire message for `action` (from `P.agent.<id>.*`, or routed from
        `P.virtual.<type>.<key>.*`): queue it, or answer it in a task of its own (a reserved
        action answered at once, a refusal). Called from the connection's read loop (an inline
        subscription), so it never waits.

        A copy that this runner may no longer serve (its lease lapsed: the check starts the
        fence) answers nothing, as if it had unsubscribed already: the message may have reached
        the agent's next owner too, and a call gets one answer."""
        try:
            self.runtime.check_serving(self._incarnation)
        except UnavailableError as error:
            self.runtime.observer.action_done(self.agent_type.type_name, REFUSED, error.slug, 0.0)
            return
        try:
            envelope = decode_message(msg, action, self.runtime.config.max_payload)
            if envelope.name in IMMEDIATE:
                self.runtime.start_task(self._answer_now(msg, envelope))
                return
            self._enqueue(envelope)
        except MabeamError as error:
            self._refuse(msg, error)

    async def _answer_now(self, msg: Message, envelope: Envelope) -> None:
        try:
            await self.replier.now(envelope, await self._immediate_reply(envelope.name))
        except MabeamError as error:
            self._refuse(msg, error)

    def _refuse(self, msg: Message, error: MabeamError) -> None:
        """Answer a message refused before it ran (400, 413, 429, 503), counted under one
        bounded label."""
        self.runtime.observer.action_done(self.agent_type.type_name, REFUSED, error.slug, 0.0)
        self.runtime.start_task(self.replier.error_to(msg.reply, error))

    def deliver(self, envelope: Envelope) -> None:
        """Queue an envelope, or raise what a wire caller would get: 503 or 429.

        Reserved actions behave as on the wire: `_ping` and `_info` are answered at once (a
        local call's future gets the reply), `_stop`, `_restart`, `_campaign` wait their turn.
        """
        self.runtime.check_serving(self._incarnation)
        self._enqueue(envelope)

    def _enqueue(self, envelope: Envelope) -> None:
        """`deliver` once the lease was checked."""
        self.last_active = time.monotonic()
        if envelope.name in IMMEDIATE and envelope.future is not None:
            self.runtime.start_task(self._answer_locally(envelope.name, envelope.future))
            return
        if envelope.name in QUEUED_CONTROL:
            envelope.kind = EnvelopeKind.CONTROL
        if self.state is not HostState.RUNNING:
            if self.state is HostState.CRASHED:
                self._while_crashed(envelope)
                return
            raise UnavailableError(f"agent {self.agent_id} is {self.state.value}")
        if not self.mailbox.offer(envelope):
            self.runtime.observer.mailbox_full(self.agent_type.type_name)
            raise OverloadedError(
                f"mailbox of agent {self.agent_id} is full ({self.mailbox.capacity} messages)"
            )

    def _while_crashed(self, envelope: Envelope) -> None:
        """A message for an agent its supervisor gave up on: `_restart` starts it again,
        `_stop` removes it, anything else fails at once (500: no retry can help)."""
        if envelope.name == "_restart":
            self.state = HostState.RESTARTING  # a second `_restart` meanwhile waits (503)
            self.runtime.start_task(self._revive(envelope))
        elif envelope.name == "_stop":
            self.runtime.start_task(self._run_control(envelope))
        else:
            raise ActionFailedError(
                f"agent {self.agent_id} crashed and its supervisor gave up: "
                "_restart starts it again from its snapshot, _stop removes it"
            )

    async def _revive(self, envelope: Envelope) -> None:
        """`_restart` of a crashed agent: a new instance from its snapshot, with a fresh
        restart budget; if it fails to start, it stays crashed and the caller gets 500."""
        self.supervisor.reset()
        try:
            result = await self.runtime.restart_agent(self)
        except Exception as exc:
            await self._teardown_instance("crash")
            self.state = HostState.CRASHED
            failed = ActionFailedError(f"agent {self.agent_id} did not restart: {exc}")
            await self.replier.error(envelope, failed)
            return
        await self.replier.now(envelope, result)

    async def _immediate_reply(self, action: str) -> dict[str, Any]:
        if action == "_ping":
            return self.ping()
        if action == "_info":
            return {**self.info(), "reminders": await self._reminders_listed()}
        return describe(self.agent_type)

    async def _reminders_listed(self) -> list[dict[str, Any]] | None:
        """This agent's reminders still to come, read from `P_REMINDERS`; None if unreadable."""
        try:
            stored = await self.runtime.reminders.of_agent(self.agent_id)
        except MabeamError as error:
            self.log.warning("agent.reminders_unreadable", error=error.message)
            return None
        now = datetime.datetime.now(datetime.UTC)
        return [reminder.listed() for reminder in stored.values() if reminder.pending(now)]

    async def _answer_locally(self, action: str, future: asyncio.Future[Any]) -> None:
        reply = await self._immediate_reply(action)
        if not future.done():
            set_local_result(future, reply)

    def ping(self) -> dict[str, Any]:
        """The `_ping` reply."""
        return {"id": self.agent_id, "status": self.state.value}

    def info(self) -> dict[str, Any]:
        """The `_info` reply but its `reminders`: the registry record, mailbox and counters."""
        return {
            **self.runtime.record_dict(self.record),
            "mailbox": len(self.mailbox),
            "processed": self.processed,
            "failed": self.failed,
            "restarts": self.restarts,
        }

    # ----------------------------------------------------------------- processing

    async def _process(self, envelope: Envelope) -> None:
        runtime = self.runtime
        if self.state is not HostState.RUNNING or not runtime.serving(self._incarnation):
            status = self.state.value if self.state is not HostState.RUNNING else "fenced"
            await self.replier.error(
                envelope, UnavailableError(f"agent {self.agent_id} is {status}")
            )
            return
        runtime.send_released()  # before this handler may block the loop: Runtime.send_released
        # Every line logged while handling the message names the agent, action and trace.
        context = MessageContext(self.agent_id, envelope.name, _traceparent(envelope))
        token = current_message.set(context)
        runtime.handling = context
        try:
            kind = envelope.kind
            if kind is EnvelopeKind.ACTION:
                await self._run_action(envelope)
            elif kind is EnvelopeKind.CONTROL:
                await self._run_control(envelope)
            else:
                await self._run_callback(envelope)
        finally:
            runtime.handling = None
            current_message.reset(token)

    async def _run_action(self, envelope: Envelope) -> None:
        call_id = call_id_of(envelope)
        if call_id is not None and await self._answered_before(envelope, call_id):
            return
        spec = self.agent_type.__actions__.get(envelope.name)
        if spec is None:
            unknown = UnknownActionError(f"agent {self.agent_id} has no action {envelope.name!r}")
            await self._finish(envelope, call_id, "unknown", 0.0, error=unknown)
            return
        started = time.perf_counter()
        try:
            kwargs = spec.parse(envelope.args)
            method = getattr(self.agent, spec.method_name)
            with self.mailbox.deadline(self.agent_type.action_timeout):
                result = await method(**kwargs)
        except BadRequestError as invalid:
            await self._finish(envelope, call_id, "bad_request", started, error=invalid)
        except TimeoutError:
            limit = self.agent_type.action_timeout
            late = DeadlineError(f"action {envelope.name!r} ran past its deadline of {limit}s")
            await self._finish(envelope, call_id, "timeout", started, error=late)
        except Exception as exc:
            self.failed += 1
            assert self.agent is not None
            failure = self.agent.describe_error(exc)
            await self._finish(envelope, call_id, "error", started, error=failure)
            if self.agent_type.restart_on_error:
                self.runtime.start_task(self.crash(exc))
        else:
            self.processed += 1
            await self._finish(envelope, call_id, "ok", started, result=result)

    async def _answered_before(self, envelope: Envelope, call_id: str) -> bool:
        """A repeated call id: answer with the first reply, or wait for the first to finish."""
        if self._calls is not None and call_id in self._calls:
            try:
                outgoing = Outgoing(envelope, reply=self._calls.get(call_id))
            except ConflictError as too_large:
                outgoing = Outgoing(envelope, error=too_large)
            await self.replier.send(outgoing)
            return True
        waiting = self._running_calls.get(call_id)
        if waiting is not None:
            waiting.append(envelope)
            return True
        self._running_calls[call_id] = []
        return False

    async def _finish(
        self,
        envelope: Envelope,
        call_id: str | None,
        outcome: str,
        started: float,
        *,
        result: Any = None,
        error: MabeamError | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started if started else 0.0
        reply: Reply | None = None
        if call_id is not None or envelope.wants_reply:  # a cast without an id: nothing goes back
            reply = _reply_of(envelope.name, result, error, self.runtime.config.max_payload)
            if error is None and reply.failed:
                outcome = "error"
        self.runtime.observer.action_done(
            self.agent_type.type_name, envelope.name, outcome, elapsed
        )
        if reply is None:
            await self.replier.send(Outgoing(envelope, result=result, error=error))
        else:
            await self._answer_all(envelope, call_id, reply)
        self._changed()

    async def _answer_all(self, envelope: Envelope, call_id: str | None, reply: Reply) -> None:
        """Send `reply` to `envelope` and to every repeat of its call id that waited for it."""
        waiting: tuple[Envelope, ...] = (envelope,)
        if call_id is not None:
            self._recent_calls().remember(call_id, reply)
            waiting += tuple(self._running_calls.pop(call_id, []))
        for caller in waiting:
            await self.replier.send(Outgoing(caller, reply=reply))

    def _recent_calls(self) -> RecentCalls:
        if self._calls is None:
            agent_type = self.agent_type
            self._calls = RecentCalls(agent_type.remembered_calls, agent_type.remembered_for)
        return self._calls

    async def _run_callback(self, envelope: Envelope) -> None:
        if envelope.future is not None:
            await self._run_durable_event(envelope)
        elif await self._handle(envelope) is None:
            self._changed()

    async def _run_durable_event(self, envelope: Envelope) -> None:
        """Run a durable handler's event once: one handled before (a redelivery) is answered
        without running again; the answer, which acks it, waits for its effect's commit."""
        key = event_key(envelope.payload)
        if self._calls is None or key not in self._calls:
            failure = await self._handle(envelope)
            if failure is not None:
                await self.replier.error(envelope, failure)  # delivered again, at once
                return
            self._recent_calls().remember(key, HANDLED)
        await self.replier.result(envelope, None)
        self._changed()

    async def _handle(self, envelope: Envelope) -> MabeamError | None:
        """Run an event's handler or a timer's callback within the action timeout; a failure
        is counted, logged (and crashes the agent when its type says so) and returned."""
        try:
            with self.mailbox.deadline(self.agent_type.action_timeout):
                if envelope.kind is EnvelopeKind.EVENT:
                    await getattr(self.agent, envelope.name)(envelope.payload)
                else:
                    await envelope.payload()
        except Exception as exc:
            assert self.agent is not None
            failure = self.agent.describe_error(exc)
            self.failed += 1
            self.log.exception(
                "agent.handler_failed", kind=envelope.kind.value, handler=envelope.name
            )
            if self.agent_type.restart_on_error:
                self.runtime.start_task(self.crash(exc))
            return failure
        return None

    async def _run_control(self, envelope: Envelope) -> None:
        try:
            if envelope.name == "_stop":
                await self.runtime.stop_agent(self.agent_id)
                result: Any = {"id": self.agent_id, "stopped": True}
            elif envelope.name == "_restart":
                result = await self.runtime.restart_agent(self)
            else:
                result = await self._campaigns.join(envelope.args)
        except MabeamError as error:
            await self.replier.error(envelope, error)
            return
        await self.replier.now(envelope, result)

    async def _announce_term(self, term: LeaderTerm) -> None:
        await self.publish(f"election.{term.group}", msgspec.to_builtins(term))

    # ----------------------------------------------------------------- timers

    def schedule(
        self, seconds: float, callback: Callable[[], Awaitable[Any]], repeat: bool
    ) -> Timer:
        """Arm a timer whose ticks go through the mailbox."""
        timer = Timer(seconds, callback, repeat=repeat, fire=self._on_timer).start()
        self._timers.add(timer)
        return timer

    def _on_timer(self, timer: Timer) -> None:
        if not timer.repeat:
            self._timers.discard(timer)
        if self.state is HostState.RUNNING and not self.mailbox.offer(
            Envelope(EnvelopeKind.TIMER, "timer", payload=timer.callback)
        ):
            self.log.warning("agent.timer_dropped", reason="mailbox full")


def _reply_of(action: str, result: Any, error: MabeamError | None, limit: int) -> Reply:
    """The reply of a finished action, encoded once for every caller waiting for it: 500 when
    the result cannot be sent (not JSON, or above the connection's `max_payload`): the action
    ran, and the caller learns why its result cannot reach it (not a timeout, then a retry)."""
    if error is not None:
        return Reply.of_error(error)
    try:
        reply = Reply.of_result(result)
    except BadRequestError as unencodable:
        failure = f"action {action!r} returned a result that is not JSON: {unencodable.message}"
        return Reply.of_error(ActionFailedError(failure))
    if len(reply.body) > limit:
        failure = (
            f"action {action!r} returned {len(reply.body):,} bytes, above the limit of "
            f"{limit:,} (max_payload)"
        )
        return Reply.of_error(ActionFailedError(failure))
    return reply


def _traceparent(envelope: Envelope) -> str | None:
    return envelope.headers.get(TRACEPARENT) if envelope.headers else None
