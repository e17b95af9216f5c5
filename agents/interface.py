"""What an agent type accepts, described for any language: the `_describe` reply.

`describe(agent_type)` lists every action with the JSON Schema of its body (msgspec generates
it from the type hints, as strict as the validation it stands for) and every event pattern the
type handles, plus its capabilities and limits. Computed once per type.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mabeam.agents.model import ActionSpec, Agent

__all__ = ["describe", "struct_schema"]


_DESCRIBED: dict[str, tuple[type[Agent], dict[str, Any]]] = {}


def describe(agent_type: type[Agent]) -> dict[str, Any]:
    """The interface of `agent_type`: `{"type", "capabilities", "actions", "events", ...}`."""
    known = _DESCRIBED.get(agent_type.__qualname__)
    if known is None or known[0] is not agent_type:
        known = _DESCRIBED[agent_type.__qualname__] = (agent_type, _interface(agent_type))
    return known[1]


def _interface(agent_type: type[Agent]) -> dict[str, Any]:
    return {
        "type": agent_type.type_name,
        "doc": (agent_type.__doc__ or "").strip(),
        "capabilities": list(agent_type.capabilities),
        "actions": {name: _action(spec) for name, spec in sorted(agent_type.__actions__.items())},
        "events": sorted(
            {p for handler in agent_type.__event_handlers__ for p in handler.patterns}
        ),
        "start_arguments": struct_schema(agent_type.__start_arguments__),
        "virtual": agent_type.virtual,
        "concurrent": agent_type.concurrent,
        "mailbox_size": agent_type.mailbox_size,
        "action_timeout": agent_type.action_timeout,
    }


def _action(spec: ActionSpec) -> dict[str, Any]:
    return {"method": spec.method_name, "arguments": struct_schema(spec.arguments)}


def struct_schema(arguments: type) -> dict[str, Any]:
    """A self-contained JSON Schema (2020-12) of an argument struct, its title its type name."""
    generated = msgspec.json.schema(arguments)
    name = generated["$ref"].rsplit("/", 1)[-1]
    definitions = generated["$defs"]
    schema: dict[str, Any] = dict(definitions.pop(name))
    if definitions:
        schema["$defs"] = definitions
    return schema
