"""The NATS service API (ADR-32): a service that answers `$SRV.PING|INFO|STATS`.

`MicroService` answers the three verbs on `$SRV.<verb>`, `$SRV.<verb>.<name>` and
`$SRV.<verb>.<name>.<id>` in the io.nats.micro.v1 schema, built with nats-py's own
`nats.micro` response types and subject rule, so `nats micro ls|info|stats` list it. Its
`Endpoint`s are counters, not subscriptions: the owner subscribes the endpoint's subject itself
and calls `begin()` when a request arrives and `end()` when it has answered.

Where nats-py's `nats.micro.Service` does not fit, and why this module keeps only its types:
- its endpoints await their handler inside the subscription callback, and nats-py delivers one
  subscription's messages one at a time, so one slow spawn would hold up every spawn behind it
  (a runner serves spawns concurrently, and counts a request's processing time up to its reply);
- every endpoint gets a queue group (`q` when none is given), but `P.ctl.runners` must reach
  every runner;
- its error replies carry the service-error headers only, while MABEAM's carry a JSON body too;
- its INFO says `"description": null` and an endpoint's `"metadata": null` when none is given,
  and its STATS `"data": null`, which the `nats` CLI's schema check refuses; here they are
  always a string and objects.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nats.micro.service import (
    NAME_REGEX,
    SEMVER_REGEX,
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
    ServiceVerb,
    control_subject,
)

from mabeam.core.codec import encode
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, MabeamError
from mabeam.core.messages import Message, Subscription
from mabeam.core.resource import AsyncResource

__all__ = ["Endpoint", "MicroService", "ping_subject", "verb_subjects"]

EndpointData = Callable[[], dict[str, Any]]
"""What an endpoint adds to its STATS entry as `data` (a JSON object)."""


class Endpoint:
    """One endpoint of a `MicroService`: its subject and its request, error and time counts."""

    __slots__ = (
        "data",
        "errors",
        "last_error",
        "metadata",
        "name",
        "processing_ns",
        "queue_group",
        "requests",
        "subject",
    )

    def __init__(
        self,
        name: str,
        subject: str,
        *,
        queue_group: str = "",
        metadata: dict[str, str] | None = None,
        data: EndpointData | None = None,
    ) -> None:
        self.name = _check_name(name, "endpoint name")
        self.subject = subject
        self.queue_group = queue_group
        self.metadata = dict(metadata or {})
        self.data = data
        self.requests = 0
        self.errors = 0
        self.processing_ns = 0
        self.last_error = ""

    def begin(self) -> int:
        """Count a request that arrived; the start time to hand to `end`."""
        self.requests += 1
        return time.perf_counter_ns()

    def end(self, started: int, error: MabeamError | None = None) -> None:
        """Count the time since `started`, and the error the request was answered with."""
        self.processing_ns += time.perf_counter_ns() - started
        if error is not None:
            self.errors += 1
            self.last_error = f"{error.code}:{error.message}"

    def count(self, *, requests: int, errors: int, processing_ns: int) -> None:
        """Set the counts at once (for an endpoint whose traffic is counted elsewhere)."""
        self.requests, self.errors, self.processing_ns = requests, errors, processing_ns

    def info(self) -> EndpointInfo:
        """Its INFO entry."""
        return EndpointInfo(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            metadata=self.metadata,
        )

    def stats(self) -> EndpointStats:
        """Its STATS entry (its `data` first: that may update the counts)."""
        data = self.data() if self.data is not None else {}
        return EndpointStats(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            num_requests=self.requests,
            num_errors=self.errors,
            last_error=self.last_error,
            processing_time=self.processing_ns,
            average_processing_time=self.processing_ns // self.requests if self.requests else 0,
            data=data,
        )


def verb_subjects(name: str, service_id: str) -> list[str]:
    """The nine subjects a service answers: each verb alone, with its name, with name and id."""
    return [
        control_subject(verb, name=kind, id=instance)
        for verb in ServiceVerb
        for kind, instance in ((None, None), (name, None), (name, service_id))
    ]


def ping_subject(name: str, service_id: str) -> str:
    """The subject one instance answers PING on: `$SRV.PING.<name>.<id>`."""
    return control_subject(ServiceVerb.PING, name=name, id=service_id)


class MicroService(AsyncResource):
    """An ADR-32 service over one `Connection`: `await service.start()`, `await service.close()`.

    `name` matches `^[A-Za-z0-9_-]+$` (shared by every instance of the service), `service_id` is
    this instance's (unique among them), `version` is a semantic version.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        name: str,
        service_id: str,
        version: str,
        description: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if not SEMVER_REGEX.match(version):
            raise BadRequestError(f"service version {version!r} is not a semantic version")
        self.connection = connection
        self.name = _check_name(name, "service name")
        self.id = service_id
        self.version = version
        self.description = description
        self.metadata = dict(metadata or {})
        self.endpoints: list[Endpoint] = []
        self.started = datetime.now(UTC).replace(tzinfo=None)
        self._subscriptions: list[Subscription] = []

    def add(self, endpoint: Endpoint) -> Endpoint:
        """Announce `endpoint` (its owner subscribes its subject); returns it."""
        self.endpoints.append(endpoint)
        return endpoint

    async def start(self) -> MicroService:
        """Answer the verbs from now on (in place once this returns)."""
        if not self._subscriptions:
            handlers = {"PING": self._on_ping, "INFO": self._on_info, "STATS": self._on_stats}
            for subject in verb_subjects(self.name, self.id):
                verb = subject.split(".")[1]
                self._subscriptions.append(await self.connection.subscribe(subject, handlers[verb]))
            await self.connection.flush()
        return self

    async def close(self) -> None:
        """Stop answering; safe twice."""
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            with contextlib.suppress(MabeamError):  # a closed connection has none left
                await subscription.unsubscribe()

    def ping(self) -> dict[str, Any]:
        """The PING response."""
        return ServicePing(
            id=self.id, name=self.name, version=self.version, metadata=self.metadata
        ).to_dict()

    def info(self) -> dict[str, Any]:
        """The INFO response."""
        return ServiceInfo(
            id=self.id,
            name=self.name,
            version=self.version,
            description=self.description,
            endpoints=[endpoint.info() for endpoint in self.endpoints],
            metadata=self.metadata,
        ).to_dict()

    def stats(self) -> dict[str, Any]:
        """The STATS response."""
        return ServiceStats(
            id=self.id,
            name=self.name,
            version=self.version,
            started=self.started,
            endpoints=[endpoint.stats() for endpoint in self.endpoints],
            metadata=self.metadata,
        ).to_dict()

    async def _on_ping(self, msg: Message) -> None:
        await self._answer(msg, self.ping)

    async def _on_info(self, msg: Message) -> None:
        await self._answer(msg, self.info)

    async def _on_stats(self, msg: Message) -> None:
        await self._answer(msg, self.stats)

    async def _answer(self, msg: Message, response: Callable[[], dict[str, Any]]) -> None:
        if msg.reply:
            with contextlib.suppress(MabeamError):  # the connection is gone: nobody to answer
                await self.connection.publish(msg.reply, encode(response()))


def _check_name(name: str, what: str) -> str:
    if not NAME_REGEX.match(name):
        raise BadRequestError(f"{what} {name!r} must be one or more of [A-Za-z0-9_-]")
    return name
