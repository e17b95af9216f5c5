"""The host of one agent: its subscription, mailbox, timers, supervision and lifecycle.

An `AgentHost` owns one `Agent` instance at a time. Messages reach it on `P.agent.<id>.*` (or
through `deliver` on the local fast path) and are run one at a time by its mailbox. `_ping` and
`_info` are answered at once; `_stop` and `_restart` wait their turn like any action. A crash
goes to the supervisor, which restarts the agent from its last snapshot or gives up.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from mabeam.agents.context import MessageContext, current_message
from mabeam.agents.coordination.election import Campaign, CampaignRequest, LeaderTerm
from mabeam.agents.deadlines import deadline
from mabeam.agents.mailbox import Envelope, EnvelopeKind, Mailbox
from mabeam.agents.model import Agent, EventHandlerSpec
from mabeam.agents.supervisor import RestartPolicy, Supervisor
from mabeam.agents.timers import Timer
from mabeam.core.codec import decode_object, encode
from mabeam.core.connection import nats_errors
from mabeam.core.errors import (
    BadRequestError,
    DeadlineError,
    MabeamError,
    OverloadedError,
    UnavailableError,
    UnknownActionError,
)
from mabeam.core.names import validate_id
from mabeam.core.replies import error_reply

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from mabeam.agents.observer import RunnerObserver
    from mabeam.agents.runtime import Runtime
    from mabeam.bus.event import Event
    from mabeam.registry.records import AgentRecord

__all__ = ["REFUSED", "AgentHost", "HostState"]

TRACEPARENT = "traceparent"
REFUSED = "(refused)"
"""The action label of messages refused before they reached the agent (bad body, too large,
mailbox full, agent not running): their names are not trusted as metric labels."""
_IMMEDIATE = frozenset({"_ping", "_info"})
_QUEUED_CONTROL = frozenset({"_stop", "_restart", "_campaign"})


class HostState(enum.Enum):
    """Where a hosted agent is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


class AgentHost:
    """Runs one agent for a runner; the agent's `AgentServices`."""

    def __init__(
        self,
        runtime: Runtime,
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
        self._subject_prefix = runtime.subjects.agent(self.agent_id, "")
        self._subscription: NatsSubscription | None = None
        self._event_subscriptions: list[Any] = []
        self._timers: set[Timer] = set()
        self._campaigns: dict[str, Campaign] = {}
        self._snapshots = type(self).uses_snapshots(agent_type)

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

    async def start(self, state: Any = None) -> None:
        """Make the agent reachable and run `on_start`; a failure is a crash."""
        args = self.agent_type.parse_start_arguments(dict(self.record.args))
        with nats_errors():
            self._subscription = await self.runtime.nc.subscribe(
                self.runtime.subjects.agent_all(self.agent_id), cb=self._on_message
            )
        await self._start_instance(args, state)

    async def _start_instance(self, args: dict[str, Any], state: Any) -> None:
        agent = self.agent_type()
        agent._bind(self)
        self.agent = agent
        async with asyncio.timeout(self.agent_type.action_timeout):
            await agent.on_start(**args)
        if state is not None:
            agent.restore(state)
        for spec in self.agent_type.__event_handlers__:
            await self._subscribe_events(spec)
        self.state = HostState.RUNNING

    async def _subscribe_events(self, spec: EventHandlerSpec) -> None:
        for pattern in spec.patterns:
            subscription = await self.runtime.bus.subscribe(
                pattern, self._event_feeder(spec.method_name)
            )
            self._event_subscriptions.append(subscription)

    def _event_feeder(self, method_name: str) -> Callable[[Event], None]:
        def feed(event: Event) -> None:
            if self.state is HostState.RUNNING:
                envelope = Envelope(EnvelopeKind.EVENT, method_name, payload=event)
                if not self.mailbox.offer(envelope):
                    self._drop_event(event)

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
        campaigns, self._campaigns = self._campaigns, {}
        for campaign in campaigns.values():
            await campaign.stop()
        await self._unsubscribe_events()
        agent, self.agent = self.agent, None
        if agent is not None and reason != "crash":
            try:
                async with asyncio.timeout(self.agent_type.action_timeout):
                    await agent.on_stop(reason)
            except Exception:
                self.log.exception("agent.on_stop_failed", reason=reason)

    async def stop(self, reason: str = "normal", *, finish_queue: bool = False) -> None:
        """Stop the agent and leave its subject.

        With `finish_queue` (a drain), no new message gets in and the queued ones still run;
        otherwise (a `_stop`) the messages queued behind the stop are refused with 503.
        """
        if self.state in (HostState.STOPPING, HostState.STOPPED):
            return
        if finish_queue and self.state is HostState.RUNNING:
            await self._leave_subject(finish_pending=True)
            await self._unsubscribe_events()
            await self.mailbox.wait_idle()
        self.state = HostState.STOPPING
        await self._refuse_pending(f"agent {self.agent_id} is stopping")
        if self._snapshots and reason in ("shutdown", "handover"):
            await self.runtime.snapshots.flush(self)
        await self._teardown_instance(reason)
        await self._leave_subject()
        self.state = HostState.STOPPED

    async def _leave_subject(self, *, finish_pending: bool = False) -> None:
        """Unsubscribe from `P.agent.<id>.*`; with `finish_pending`, messages already
        delivered to this process still reach the mailbox (a drain loses no call)."""
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        try:
            with nats_errors():
                if finish_pending:
                    await subscription.drain()  # type: ignore[no-untyped-call]
                else:
                    await subscription.unsubscribe()
        except MabeamError as error:
            self.log.warning("agent.unsubscribe_failed", error=error.message)

    async def _refuse_pending(self, why: str) -> None:
        for envelope in self.mailbox.take_all():
            await self._send_error(envelope, UnavailableError(why))

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
        await self.runtime.agent_crashed(self, reason, will_restart=delay is not None)
        if delay is None:
            await self._give_up()
            return
        await asyncio.sleep(delay)
        await self._restart_instance()

    async def _give_up(self) -> None:
        self.state = HostState.CRASHED
        await self._leave_subject()

    async def _restart_instance(self) -> None:
        try:
            await self._start_from_snapshot()
        except Exception as exc:
            await self.crash(exc)
            return
        await self.runtime.agent_restarted(self)

    async def _start_from_snapshot(self) -> None:
        state = await self.runtime.snapshots.load(self.agent_id) if self._snapshots else None
        args = self.agent_type.parse_start_arguments(dict(self.record.args))
        await self._start_instance(args, state)
        self.restarts += 1

    async def restart(self) -> None:
        """Replace the instance with a new one resumed from the last snapshot (`_restart`)."""
        await self._teardown_instance("restart")
        await self._start_from_snapshot()

    # ----------------------------------------------------------------- messages in

    async def _on_message(self, msg: Msg) -> None:
        action = msg.subject[len(self._subject_prefix) :]
        try:
            validate_id(action, "action name")
            if action in _IMMEDIATE:
                await self._answer_now(action, msg.reply)
                return
            args = decode_object(msg.data, max_size=self.runtime.config.max_payload)
            reply = msg.reply or None
            self.deliver(
                Envelope(EnvelopeKind.ACTION, action, args, reply=reply, headers=msg.headers)
            )
        except MabeamError as error:
            # Refused before it ran (400, 413, 429, 503): counted under one bounded label.
            self.runtime.observer.action_done(self.agent_type.type_name, REFUSED, error.slug, 0.0)
            await self._reply_wire_error(msg.reply, error)

    def deliver(self, envelope: Envelope) -> None:
        """Queue an envelope, or raise what a wire caller would get: 503 or 429.

        Reserved actions behave as on the wire: `_ping` and `_info` are answered at once (a
        local call's future gets the reply), `_stop`, `_restart`, `_campaign` wait their turn.
        """
        if envelope.name in _IMMEDIATE and envelope.future is not None:
            envelope.future.set_result(self._immediate_reply(envelope.name))
            return
        if envelope.name in _QUEUED_CONTROL:
            envelope.kind = EnvelopeKind.CONTROL
        if self.state is not HostState.RUNNING:
            raise UnavailableError(f"agent {self.agent_id} is {self.state.value}")
        if not self.mailbox.offer(envelope):
            self.runtime.observer.mailbox_full(self.agent_type.type_name)
            raise OverloadedError(
                f"mailbox of agent {self.agent_id} is full ({self.mailbox.capacity} messages)"
            )

    async def _answer_now(self, action: str, reply: str) -> None:
        if not reply:
            return
        value = self._immediate_reply(action)
        await self.runtime.nc.publish(reply, encode(value))

    def _immediate_reply(self, action: str) -> dict[str, Any]:
        return self.ping() if action == "_ping" else self.info()

    def ping(self) -> dict[str, Any]:
        """The `_ping` reply."""
        return {"id": self.agent_id, "status": self.state.value}

    def info(self) -> dict[str, Any]:
        """The `_info` reply: the registry record plus mailbox and counters."""
        return {
            **self.runtime.record_dict(self.record),
            "mailbox": len(self.mailbox),
            "processed": self.processed,
            "failed": self.failed,
            "restarts": self.restarts,
        }

    # ----------------------------------------------------------------- processing

    async def _process(self, envelope: Envelope) -> None:
        if self.state is not HostState.RUNNING:
            await self._send_error(
                envelope, UnavailableError(f"agent {self.agent_id} is {self.state.value}")
            )
            return
        # Every line logged while handling the message names the agent, action and trace.
        context = MessageContext(self.agent_id, envelope.name, _traceparent(envelope))
        token = current_message.set(context)
        try:
            if envelope.kind is EnvelopeKind.ACTION:
                await self._run_action(envelope)
            elif envelope.kind is EnvelopeKind.CONTROL:
                await self._run_control(envelope)
            else:
                await self._run_callback(envelope)
        finally:
            current_message.reset(token)

    async def _run_action(self, envelope: Envelope) -> None:
        spec = self.agent_type.__actions__.get(envelope.name)
        if spec is None:
            error = UnknownActionError(f"agent {self.agent_id} has no action {envelope.name!r}")
            await self._finish(envelope, "unknown", 0.0, error=error)
            return
        started = time.perf_counter()
        try:
            kwargs = spec.parse(envelope.args)
            method = getattr(self.agent, spec.method_name)
            async with deadline(self.agent_type.action_timeout):
                result = await method(**kwargs)
        except BadRequestError as invalid:
            await self._finish(envelope, "bad_request", started, error=invalid)
        except TimeoutError:
            limit = self.agent_type.action_timeout
            late = DeadlineError(f"action {envelope.name!r} ran past its deadline of {limit}s")
            await self._finish(envelope, "timeout", started, error=late)
        except Exception as exc:
            self.failed += 1
            assert self.agent is not None
            await self._finish(envelope, "error", started, error=self.agent.describe_error(exc))
            if self.agent_type.restart_on_error:
                self.runtime.start_task(self.crash(exc))
        else:
            self.processed += 1
            await self._finish(envelope, "ok", started, result=result)
            if self._snapshots:
                self.runtime.snapshots.mark_dirty(self)

    async def _finish(
        self,
        envelope: Envelope,
        outcome: str,
        started: float,
        *,
        result: Any = None,
        error: MabeamError | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started if started else 0.0
        self.runtime.observer.action_done(
            self.agent_type.type_name, envelope.name, outcome, elapsed
        )
        if error is not None:
            await self._send_error(envelope, error)
        else:
            await self._send_result(envelope, result)

    async def _run_callback(self, envelope: Envelope) -> None:
        try:
            async with deadline(self.agent_type.action_timeout):
                if envelope.kind is EnvelopeKind.EVENT:
                    await getattr(self.agent, envelope.name)(envelope.payload)
                else:
                    await envelope.payload()
        except Exception as exc:
            self.failed += 1
            self.log.exception(
                "agent.handler_failed", kind=envelope.kind.value, handler=envelope.name
            )
            if self.agent_type.restart_on_error:
                self.runtime.start_task(self.crash(exc))
            return
        if self._snapshots:
            self.runtime.snapshots.mark_dirty(self)

    async def _run_control(self, envelope: Envelope) -> None:
        try:
            if envelope.name == "_stop":
                await self.runtime.stop_agent(self.agent_id)
                result: Any = {"id": self.agent_id, "stopped": True}
            elif envelope.name == "_restart":
                result = await self.runtime.restart_agent(self)
            else:
                result = await self._campaign(envelope.args)
        except MabeamError as error:
            await self._send_error(envelope, error)
            return
        await self._send_result(envelope, result)

    async def _campaign(self, args: dict[str, Any]) -> dict[str, Any]:
        """`_campaign`: join the election of a group for as long as this agent lives."""
        try:
            request = msgspec.convert(args, CampaignRequest)
        except msgspec.ValidationError as error:
            raise BadRequestError(f"_campaign: {error}") from error
        if request.group not in self._campaigns:
            elections = await self.runtime.elections()
            self._campaigns[request.group] = Campaign(
                elections, request.group, self.agent_id, request.ttl, self._announce_term
            ).start()
        leading = self._campaigns[request.group].leading
        return {"group": request.group, "candidate": self.agent_id, "leading": leading}

    async def _announce_term(self, term: LeaderTerm) -> None:
        await self.publish(f"election.{term.group}", msgspec.to_builtins(term))

    # ----------------------------------------------------------------- replies out

    async def _send_result(self, envelope: Envelope, result: Any) -> None:
        if envelope.future is not None:
            if not envelope.future.done():
                envelope.future.set_result(result)
            return
        if envelope.reply is None:
            return
        try:
            body = encode(result)
        except BadRequestError as error:
            await self._send_error(envelope, error)
            return
        await self.runtime.publish_reply(envelope.reply, body)

    async def _send_error(self, envelope: Envelope, error: MabeamError) -> None:
        if envelope.future is not None:
            if not envelope.future.done():
                envelope.future.set_exception(error)
            return
        if envelope.reply is None:
            if envelope.kind is EnvelopeKind.ACTION:
                self.log.warning("agent.cast_failed", action=envelope.name, error=error.message)
            return
        headers, body = error_reply(error)
        await self.runtime.publish_reply(envelope.reply, body, headers)

    async def _reply_wire_error(self, reply: str, error: MabeamError) -> None:
        if not reply:
            self.log.warning("agent.bad_cast", error=error.message)
            return
        headers, body = error_reply(error)
        await self.runtime.nc.publish(reply, body, headers=headers)

    # ----------------------------------------------------------------- AgentServices

    @property
    def registry(self) -> Any:
        """The runner's registry."""
        return self.runtime.registry

    @property
    def observer(self) -> RunnerObserver:
        """The runner's observer (metrics, logs)."""
        return self.runtime.observer

    async def call(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any:
        """Call another agent (see `Calls`), passing on the current traceparent."""
        return await self.runtime.caller.call(
            agent_id, action, args, timeout=timeout, call_id=call_id, headers=_trace_headers()
        )

    async def cast(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> None:
        """Cast to another agent, passing on the current traceparent."""
        await self.runtime.caller.cast(
            agent_id, action, args, call_id=call_id, headers=_trace_headers()
        )

    async def publish(self, topic: str, data: Any) -> None:
        """Publish an event with source `/agents/<id>`."""
        await self.runtime.bus.publish(
            topic, data, source=f"/agents/{self.agent_id}", traceparent=_current_traceparent()
        )

    async def spawn(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn an agent anywhere (or on `runner=`)."""
        return await self.runtime.spawn_remote(agent_type, **options)

    async def stop_agent(self, agent_id: str) -> None:
        """Stop this agent after the current message, or another one by `_stop`."""
        if agent_id == self.agent_id:
            if not self.mailbox.offer(Envelope(EnvelopeKind.CONTROL, "_stop")):
                raise OverloadedError(f"mailbox of agent {self.agent_id} is full")
        else:
            await self.call(agent_id, "_stop")

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


def _traceparent(envelope: Envelope) -> str | None:
    return envelope.headers.get(TRACEPARENT) if envelope.headers else None


def _current_traceparent() -> str | None:
    message = current_message.get()
    return message.traceparent if message is not None else None


def _trace_headers() -> dict[str, str] | None:
    traceparent = _current_traceparent()
    return {TRACEPARENT: traceparent} if traceparent else None
