"""An AsyncAPI 3.0 document of a running system, for tools and code generators in any language.

`asyncapi_document(subjects, interfaces)` describes, from the interfaces the runners report on
`P.ctl.types` (`list_interfaces`):

- every action of every agent type, on `P.agent.{id}.<action>` and, for the types that may be
  virtual, `P.virtual.<type>.{key}.<action>`: a `send` operation whose request is the action's
  argument schema and whose reply is the result or the service-API error;
- the events: what anyone may publish on `P.events.{topic}`, and the patterns each type handles,
  as CloudEvents in structured mode, MABEAM's default (one JSON object; binary mode, the
  attributes as `ce-` headers, is taken too);
- the runners' control subjects: spawns, the runner listing, the type listing, drains and
  rebalancing moves.

Each action's schema keeps what msgspec generated (JSON Schema, which AsyncAPI's default schema
format accepts); the definitions a schema shares through `$defs` move to `components.schemas`,
named `<type>.<definition>`, and its references follow them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import version
from typing import Any, Final
from urllib.parse import urlsplit

from mabeam.agents.control import SpawnRequest
from mabeam.agents.interface import struct_schema
from mabeam.agents.rebalance import MoveRequest
from mabeam.core.names import Subjects
from mabeam.registry.records import AgentRecord, RunnerRecord

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION: Final = "3.0.0"

_REPLY: Final = "reply"
_ANY: Final[dict[str, Any]] = {"description": "any JSON value"}
_ERROR_BODY: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "the slug (docs/PROTOCOL.md)"},
                "message": {"type": "string"},
            },
        }
    },
}
_ERROR_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "Nats-Service-Error-Code": {"type": "string", "description": "the HTTP-like code"},
        "Nats-Service-Error": {"type": "string", "description": "a message for people"},
    },
}
_CALL_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "Mabeam-Call-Id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,128}$",
            "description": "names the call: a repeat with the same id runs once (safe retries)",
        },
        "traceparent": {"type": "string", "description": "W3C trace context"},
    },
}
_CLOUDEVENT_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["content-type"],
    "properties": {"content-type": {"const": "application/cloudevents+json"}},
    "description": "CloudEvents 1.0, NATS binding, structured mode (MABEAM publishes it by "
    "default); binary mode, the attributes as `ce-` headers and the data as the body, is "
    'taken too (docs/PROTOCOL.md "Events")',
}
_CLOUDEVENT_ATTRIBUTES: Final[dict[str, Any]] = {
    "specversion": {"const": "1.0"},
    "id": {"type": "string"},
    "source": {"type": "string", "description": "/agents/<id>, /runners/<id>, ..."},
    "type": {"type": "string", "description": "the topic"},
    "time": {"type": "string", "format": "date-time"},
    "datacontenttype": {"const": "application/json"},
    "traceparent": {"type": "string", "description": "W3C trace context"},
}


def asyncapi_document(
    subjects: Subjects, interfaces: Mapping[str, Mapping[str, Any]], *, server: str
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the system under `subjects.prefix` whose runners host the
    types of `interfaces` (type name → `_describe` reply), served by the NATS at the URL
    `server` (only its host and port are written)."""
    document = _Document(subjects)
    document.add_replies()
    for name, interface in interfaces.items():
        document.add_type(name, interface)
    document.add_events(interfaces)
    document.add_control(sorted(interfaces))
    url = urlsplit(server if "://" in server else f"nats://{server}")
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"MABEAM system {subjects.prefix}",
            "version": version("mabeam"),
            "description": "Agents, events and runner control of a MABEAM system on NATS "
            "(docs/PROTOCOL.md is the contract).",
        },
        "servers": {"nats": {"host": f"{url.hostname}:{url.port or 4222}", "protocol": "nats"}},
        "defaultContentType": "application/json",
        "channels": document.channels,
        "operations": document.operations,
        "components": {"schemas": document.schemas},
    }


class _Document:
    """The channels, operations and shared schemas of one document, as they are added."""

    def __init__(self, subjects: Subjects) -> None:
        self.subjects = subjects
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}

    def add_replies(self) -> None:
        """The reply channel every request answers on: the requester's inbox."""
        self.channels[_REPLY] = {
            "address": None,
            "description": "the reply subject (an inbox) that came with the request",
            "messages": {
                "result": {"name": "result", "payload": _ANY},
                "error": {"name": "error", "headers": _ERROR_HEADERS, "payload": _ERROR_BODY},
            },
        }

    def add_type(self, name: str, interface: Mapping[str, Any]) -> None:
        """The actions of one agent type, by id and (unless it refuses) by virtual key."""
        virtual = interface.get("virtual", True)
        doc = str(interface.get("doc") or f"an agent of type {name}")
        for action, spec in interface["actions"].items():
            payload = self._hoisted(name, spec["arguments"])
            self._request(
                f"agent.{name}.{action}",
                f"{self.subjects.prefix}.agent.{{id}}.{action}",
                {"id": {"description": f"the id of an agent of type {name}: {doc}"}},
                payload,
                f"call `{action}` ({spec['method']}) on an agent of type {name}",
            )
            if not virtual:
                continue
            self._request(
                f"virtual.{name}.{action}",
                f"{self.subjects.prefix}.virtual.{name}.{{key}}.{action}",
                {"key": {"description": f"the key of a virtual agent of type {name}"}},
                payload,
                f"call `{action}` on the virtual agent of type {name} with this key "
                "(activated by its first call)",
            )

    def add_events(self, interfaces: Mapping[str, Mapping[str, Any]]) -> None:
        """Publishing any event, and receiving the patterns each type's handlers listen to."""
        prefix = self.subjects.prefix
        self._channel(
            "events",
            f"{prefix}.events.{{topic}}",
            {"topic": {"description": "one or more tokens; subscribers may use * and >"}},
            _event_message("event", _ANY),
        )
        self.operations["publish.event"] = {
            "action": "send",
            "channel": _ref("channels", "events"),
            "summary": "publish an event (a CloudEvent, structured or binary mode)",
        }
        for name, interface in interfaces.items():
            for pattern in interface["events"]:
                channel = f"events.{name}.{_token(pattern)}"
                self._channel(
                    channel, f"{prefix}.events.{pattern}", {}, _event_message("event", _ANY)
                )
                self.operations[f"receive.{channel}"] = {
                    "action": "receive",
                    "channel": _ref("channels", channel),
                    "summary": f"agents of type {name} handle events on `{pattern}`",
                }

    def add_control(self, types: list[str]) -> None:
        """The runners' control subjects (docs/PROTOCOL.md "Runners and spawning")."""
        prefix = self.subjects.prefix
        spawn = self._hoisted("control", struct_schema(SpawnRequest))
        record = self._hoisted("control", struct_schema(AgentRecord))
        runner = self._hoisted("control", struct_schema(RunnerRecord))
        empty = {"type": "object", "description": "`{}`"}
        type_param = {"type": {"description": "an agent type", "enum": types} if types else {}}
        runner_param = {"runner": {"description": "a runner id"}}
        self._request("ctl.spawn", f"{prefix}.ctl.spawn", {}, spawn, "spawn an agent", record)
        self._request(
            "ctl.spawn.type",
            f"{prefix}.ctl.spawn.{{type}}",
            type_param,
            spawn,
            "spawn an agent on a runner that hosts its type",
            record,
        )
        self._request(
            "ctl.runner.spawn",
            f"{prefix}.ctl.{{runner}}.spawn",
            runner_param,
            spawn,
            "spawn an agent on this runner",
            record,
        )
        self._request(
            "ctl.runners",
            f"{prefix}.ctl.runners",
            {},
            empty,
            "every runner answers with its record",
            runner,
        )
        self._request(
            "ctl.types",
            f"{prefix}.ctl.types",
            {},
            empty,
            "every runner answers with the interfaces of its types",
            {"type": "object", "required": ["runner", "types"]},
        )
        self._request(
            "ctl.runner.drain",
            f"{prefix}.ctl.{{runner}}.drain",
            runner_param,
            empty,
            "drain this runner: it hands its agents over and exits",
            {"type": "object", "properties": {"draining": {"const": True}}},
        )
        self._request(
            "ctl.runner.adopt",
            f"{prefix}.ctl.{{runner}}.adopt",
            runner_param,
            self._hoisted("control", struct_schema(MoveRequest)),
            "runner to runner: adopt an agent the sender released (live rebalancing)",
            record,
        )

    def _request(
        self,
        channel: str,
        address: str,
        parameters: dict[str, Any],
        payload: dict[str, Any],
        summary: str,
        result: dict[str, Any] | None = None,
    ) -> None:
        message: dict[str, Any] = {"name": "request", "headers": _CALL_HEADERS, "payload": payload}
        self._channel(channel, address, parameters, message)
        replies = [_ref("channels", _REPLY, "messages", "error")]
        if result is None:
            replies.insert(0, _ref("channels", _REPLY, "messages", "result"))
        else:
            self.channels[channel]["messages"]["reply"] = {"name": "reply", "payload": result}
            replies.insert(0, _ref("channels", channel, "messages", "reply"))
        self.operations[f"call.{channel}"] = {
            "action": "send",
            "channel": _ref("channels", channel),
            "summary": summary,
            "messages": [_ref("channels", channel, "messages", message["name"])],
            "reply": {"channel": _ref("channels", _REPLY), "messages": replies},
        }

    def _channel(
        self, channel: str, address: str, parameters: dict[str, Any], message: dict[str, Any]
    ) -> None:
        self.channels[channel] = {"address": address, "messages": {message["name"]: message}}
        if parameters:
            self.channels[channel]["parameters"] = parameters

    def _hoisted(self, owner: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        """`schema` with its `$defs` moved to `components.schemas` as `<owner>.<name>`."""
        local = dict(schema)
        definitions = local.pop("$defs", {})
        renamed = {
            f"#/$defs/{name}": f"#/components/schemas/{owner}.{name}" for name in definitions
        }
        for name, definition in definitions.items():
            self.schemas[f"{owner}.{name}"] = _with_refs(definition, renamed)
        result: dict[str, Any] = _with_refs(local, renamed)
        return result


def _event_message(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvent in structured mode whose `data` follows the schema `data`; the other
    members are its extensions (strings)."""
    payload = {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {**_CLOUDEVENT_ATTRIBUTES, "data": data},
        "additionalProperties": {"type": "string", "description": "an extension attribute"},
    }
    return {"name": name, "headers": _CLOUDEVENT_HEADERS, "payload": payload}


def _with_refs(node: Any, renamed: Mapping[str, str]) -> Any:
    """A copy of the JSON `node` whose `$ref`s point where `renamed` says."""
    if isinstance(node, dict):
        return {
            key: renamed.get(value, value) if key == "$ref" else _with_refs(value, renamed)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_with_refs(item, renamed) for item in node]
    return node


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(_escaped(path))}


def _escaped(path: tuple[str, ...]) -> Iterator[str]:
    """JSON-pointer tokens (RFC 6901)."""
    for token in path:
        yield token.replace("~", "~0").replace("/", "~1")


def _token(pattern: str) -> str:
    """A channel-id-safe spelling of an event pattern (`*` and `>` spelled out)."""
    return pattern.replace("*", "any").replace(">", "all")
