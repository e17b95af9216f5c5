"""The io.nats.micro.v1 response rules that the `nats` CLI checks, as JSON Schemas.

Written from ADR-32 and the rules the CLI enforces (the CLI itself is not installable here):
names of `[A-Za-z0-9_-]`, a semantic version, an RFC 3339 start time, string-valued metadata,
a string description, integer counts, and no `null` where the CLI wants a value.
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
_SEMVER = {
    "type": "string",
    "pattern": r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$",
}
_METADATA = {"type": "object", "additionalProperties": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"


def _response(kind: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "name", "id", "version", "metadata", *required],
        "properties": {
            "type": {"const": f"io.nats.micro.v1.{kind}_response"},
            "name": _NAME,
            "id": {"type": "string", "minLength": 1},
            "version": _SEMVER,
            "metadata": _METADATA,
            **extra,
        },
    }


_INFO_ENDPOINT = {
    "type": "object",
    "required": ["name", "subject", "queue_group", "metadata"],
    "properties": {
        "name": _NAME,
        "subject": {"type": "string", "minLength": 1},
        "queue_group": {"type": "string"},
        "metadata": _METADATA,
    },
}
_STATS_ENDPOINT = {
    "type": "object",
    "required": [
        "name",
        "subject",
        "num_requests",
        "num_errors",
        "last_error",
        "processing_time",
        "average_processing_time",
        "data",
    ],
    "properties": {
        "name": _NAME,
        "subject": {"type": "string", "minLength": 1},
        "num_requests": _COUNT,
        "num_errors": _COUNT,
        "last_error": {"type": "string"},
        "processing_time": _COUNT,
        "average_processing_time": _COUNT,
        "data": {"type": "object"},
    },
}

MICRO_SCHEMAS: dict[str, dict[str, Any]] = {
    "PING": _response("ping", {}, []),
    "INFO": _response(
        "info",
        {
            "description": {"type": "string"},
            "endpoints": {"type": "array", "minItems": 1, "items": _INFO_ENDPOINT},
        },
        ["description", "endpoints"],
    ),
    "STATS": _response(
        "stats",
        {
            "started": {"type": "string", "pattern": _RFC3339},
            "endpoints": {"type": "array", "minItems": 1, "items": _STATS_ENDPOINT},
        },
        ["started", "endpoints"],
    ),
}
"""The schema of each verb's response."""
