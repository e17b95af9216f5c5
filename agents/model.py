"""The Agent model: a class with state, `@action`s, `@on_event` handlers and lifecycle hooks.

    class Thermostat(Agent):
        capabilities = ("climate",)

        async def on_start(self, target: float = 20.0) -> None:
            self.target = target

        @action
        async def set_target(self, value: float) -> dict:
            self.target = value
            return {"target": value}

        @on_event("sensors.*.temperature")
        async def on_temp(self, event: Event) -> None:
            ...

Action arguments are validated from the type hints by msgspec (a wrong type is a 400); the
agent's runtime context (`self.id`, `self.call`, `self.publish`, timers ...) comes from the
`AgentContext` mixin, filled in by the host that runs the agent.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_type_hints, overload

import msgspec

from mabeam.agents.context import AgentContext
from mabeam.core.errors import ActionFailedError, BadRequestError, MabeamError
from mabeam.core.names import validate_id, validate_pattern

__all__ = ["DURABILITIES", "ActionSpec", "Agent", "EventHandlerSpec", "action", "on_event"]

ActionFunction = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=ActionFunction)
_ACTION_MARK = "__mabeam_action__"
_BODY_MARK = "__mabeam_body__"
_EVENT_MARK = "__mabeam_events__"
_DURABLE_MARK = "__mabeam_durable_events__"


@overload
def action(fn: F, /) -> F: ...


@overload
def action(
    *, name: str | None = None, body: type[msgspec.Struct] | None = None
) -> Callable[[F], F]: ...


def action(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    body: type[msgspec.Struct] | None = None,
) -> F | Callable[[F], F]:
    """Mark an async method as an action callable over the wire (`P.agent.<id>.<name>`).

    By default the body's keys are the method's keyword arguments, validated from its type
    hints. With `body=SomeStruct`, the whole body is converted to that struct and passed as the
    method's one argument (for actions whose body is a record of its own).
    """

    def mark(function: F) -> F:
        is_async = inspect.iscoroutinefunction(function)  # (a TypeGuard would drop F)
        if not is_async:
            raise TypeError(f"action {function.__qualname__} must be an async def")
        action_name = validate_id(name or function.__name__, "action name")
        if action_name.startswith("_"):
            raise TypeError(f"action name {action_name!r}: names starting with '_' are reserved")
        setattr(function, _ACTION_MARK, action_name)
        if body is not None:
            setattr(function, _BODY_MARK, body)
        return function

    return mark(fn) if fn is not None else mark


def on_event(*patterns: str, durable: bool = False) -> Callable[[ActionFunction], ActionFunction]:
    """Mark an async method as the handler of events matching the topic patterns.

    A plain handler hears what is published while its agent runs (at most once). A `durable`
    one gets every event at least once, from a JetStream consumer that outlives the agent's
    moves and its runner's death, one at a time, and each takes effect once (docs/AGENTS.md
    "Durable event handlers")."""
    for pattern in patterns:
        validate_pattern(pattern)
    if not patterns:
        raise TypeError("on_event needs at least one topic pattern")

    def mark(function: ActionFunction) -> ActionFunction:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"event handler {function.__qualname__} must be an async def")
        if getattr(function, _DURABLE_MARK, durable) != durable:
            raise TypeError(f"event handler {function.__qualname__} is durable for all or none")
        setattr(function, _EVENT_MARK, (*getattr(function, _EVENT_MARK, ()), *patterns))
        setattr(function, _DURABLE_MARK, durable)
        return function

    return mark


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action of an agent type: its name, method and argument schema."""

    name: str
    method_name: str
    arguments: type[msgspec.Struct]
    body_parameter: str | None = None
    """With `@action(body=...)`: the parameter that takes the whole body as one struct."""

    def parse(self, args: dict[str, Any]) -> dict[str, Any]:
        """Validate wire arguments against the type hints; `BadRequestError` when they fail."""
        what = f"action {self.name!r}"
        if self.body_parameter is not None:
            return {self.body_parameter: _convert_struct(self.arguments, args, what)}
        return _convert(self.arguments, args, what)


@dataclass(frozen=True, slots=True)
class EventHandlerSpec:
    """One event handler of an agent type: the method and the patterns it listens to."""

    method_name: str
    patterns: tuple[str, ...]
    durable: bool = False
    """True for `@on_event(..., durable=True)`: at-least-once from a durable consumer."""


def _convert_struct(schema: type[msgspec.Struct], args: dict[str, Any], what: str) -> Any:
    try:
        return msgspec.convert(args, schema, strict=True)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"{what}: {exc}") from exc
    except BadRequestError as exc:
        raise BadRequestError(f"{what}: {exc.message}") from exc


def _convert(schema: type[msgspec.Struct], args: dict[str, Any], what: str) -> dict[str, Any]:
    return msgspec.structs.asdict(_convert_struct(schema, args, what))


def _action_spec(cls: type, attribute: str, function: Callable[..., Any]) -> ActionSpec:
    name: str = getattr(function, _ACTION_MARK)
    body: type[msgspec.Struct] | None = getattr(function, _BODY_MARK, None)
    if body is None:
        return ActionSpec(name, attribute, _arguments_schema(cls, attribute, function))
    parameters = list(inspect.signature(function).parameters)[1:]
    if len(parameters) != 1:
        raise TypeError(f"{cls.__name__}.{attribute}: a body= action takes exactly one argument")
    return ActionSpec(name, attribute, body, parameters[0])


def _arguments_schema(cls: type, method_name: str, function: Callable[..., Any]) -> type:
    """A msgspec Struct whose fields are the method's keyword parameters (after `self`)."""
    hints = get_type_hints(function)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{cls.__name__}.{method_name}: *args / **kwargs are not supported")
        annotation = hints.get(parameter.name, Any)
        if parameter.default is parameter.empty:
            fields.append((parameter.name, annotation))
        else:
            fields.append((parameter.name, annotation, parameter.default))
    return msgspec.defstruct(
        f"{cls.__name__}_{method_name}_args", fields, forbid_unknown_fields=True, kw_only=True
    )


DURABILITIES = ("durable", "coalesced")
"""The values of `Agent.durability`."""


class Agent(AgentContext):
    """Base class of every agent type. Subclass it, add `@action`s; a runner hosts instances."""

    type_name: ClassVar[str] = ""
    """The type name used in spawn requests; defaults to the class name."""
    capabilities: ClassVar[tuple[str, ...]] = ()
    """Capabilities every instance announces in the registry (spawns may add more)."""
    restart_on_error: ClassVar[bool] = False
    """When True, an action that raises crashes the agent and its supervisor restarts it."""
    action_timeout: ClassVar[float] = 5.0
    """Seconds an action may run before it is cancelled with 408."""
    mailbox_size: ClassVar[int] = 1000
    """Messages that may wait in the mailbox before callers get 429."""
    durability: ClassVar[str] = "durable"
    """For a type that snapshots: `"durable"` (the default) sends a reply only once the snapshot
    holding the action's effect is stored in `P_state`, so what was acknowledged survives any
    runner failure; `"coalesced"` replies at once and writes snapshots at most every 50 ms, so a
    runner killed with -9 loses the acknowledged effects of its last 50 ms (faster, for state
    that can be rebuilt). Types that do not snapshot keep nothing either way."""
    remembered_calls: ClassVar[int] = 32
    """How many recent call ids (header `Mabeam-Call-Id`) and their replies an agent keeps, so
    that a repeated call is answered with its first reply instead of running again; part of
    the snapshot of a type that snapshots. 0 remembers none."""
    remembered_for: ClassVar[float] = 30.0
    """Seconds a remembered call is kept at most (it is forgotten at the next call after that):
    retries come within the caller's retry window (the Python client's `call_retry_for`, 10 s,
    plus a timeout: 15 s), and an agent's memory stays what the last half minute's calls need
    instead of growing to `remembered_calls` entries on every agent ever called that often."""
    virtual: ClassVar[bool] = True
    """Whether agents of this type may be called virtually, `P.virtual.<type>.<key>.<action>`
    (activated by their first call, passivated when idle); False refuses such calls with 400."""
    passivate_after: ClassVar[float | None] = None
    """Seconds a virtual agent of this type may stay idle before it is passivated (snapshotted
    and deactivated); None takes the runner's `--passivate-after`, 0 never passivates."""
    concurrent: ClassVar[bool] = False
    """When True, actions run concurrently (up to `mailbox_size`) instead of one at a time:
    for stateless service agents whose actions mostly wait on other agents."""

    __actions__: ClassVar[dict[str, ActionSpec]] = {}
    __event_handlers__: ClassVar[tuple[EventHandlerSpec, ...]] = ()
    __start_arguments__: ClassVar[type[msgspec.Struct]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = validate_id(cls.__dict__.get("type_name") or cls.__name__, "agent type")
        if cls.durability not in DURABILITIES:
            raise BadRequestError(
                f"{cls.__name__}.durability must be one of {', '.join(DURABILITIES)},"
                f" got {cls.durability!r}"
            )
        if (
            isinstance(cls.remembered_calls, bool)
            or not isinstance(cls.remembered_calls, int)
            or (cls.remembered_calls < 0)
        ):
            raise BadRequestError(
                f"{cls.__name__}.remembered_calls must be a whole number >= 0,"
                f" got {cls.remembered_calls!r}"
            )
        if (
            isinstance(cls.remembered_for, bool)
            or not isinstance(cls.remembered_for, int | float)
            or not cls.remembered_for > 0
        ):
            raise BadRequestError(
                f"{cls.__name__}.remembered_for must be a number of seconds > 0,"
                f" got {cls.remembered_for!r}"
            )
        for capability in cls.capabilities:
            validate_id(capability, "capability")
        actions: dict[str, ActionSpec] = {}
        handlers: list[EventHandlerSpec] = []
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                if hasattr(value, _ACTION_MARK):
                    spec = _action_spec(cls, attribute, value)
                    actions[spec.name] = spec
                if hasattr(value, _EVENT_MARK):
                    patterns, durable = getattr(value, _EVENT_MARK), getattr(value, _DURABLE_MARK)
                    handlers.append(EventHandlerSpec(attribute, patterns, durable))
        if any(handler.durable for handler in handlers) and cls.remembered_calls == 0:
            raise BadRequestError(
                f"{cls.__name__} has durable event handlers: remembered_calls must be >= 1 (the"
                " events it handled are remembered so that a redelivery takes effect once)"
            )
        cls.__actions__ = actions
        cls.__event_handlers__ = tuple(handlers)
        cls.__start_arguments__ = _arguments_schema(cls, "on_start", cls.on_start)

    @classmethod
    def parse_start_arguments(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Validate spawn `args` against `on_start`'s type hints."""
        return _convert(cls.__start_arguments__, args, f"spawn args of {cls.type_name!r}")

    on_start: Callable[..., Awaitable[None]]
    """Called once the agent is registered and reachable, with the spawn args as keyword
    arguments validated from its type hints (`async def on_start(self, target: float = 20)`)."""

    async def _start_without_arguments(self) -> None:
        """The `on_start` of a type that does not define one: no spawn args."""

    on_start = _start_without_arguments

    async def on_stop(self, reason: str) -> None:
        """Called when the agent stops (`normal`, `shutdown`, `handover`) before it leaves."""

    def snapshot(self) -> Any:
        """The state to persist after actions that changed it; None means "no snapshots"."""
        return None

    def restore(self, state: Any) -> None:
        """Take back a `snapshot()` state: called after `on_start` on a restart or fail-over."""

    def describe_error(self, error: BaseException) -> MabeamError:
        """The wire error for an exception raised by an action (500 by default)."""
        if isinstance(error, MabeamError):
            return error
        return ActionFailedError(f"{type(error).__name__}: {error}")
