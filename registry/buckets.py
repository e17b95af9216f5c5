"""The registry's KV buckets: `mabeam.core.kv.KeyValue` sized for registry records.

`Bucket` holds values of up to `MAX_RECORD_BYTES` unless told otherwise; everything else (the
creation, the revision-exact writes, tombstones, TTLs, watches) is the core's `KeyValue`.
"""

from __future__ import annotations

from mabeam.core.connection import Connection
from mabeam.core.kv import KeyValue
from mabeam.registry.records import MAX_RECORD_BYTES

__all__ = ["Bucket"]


class Bucket(KeyValue):
    """One KV bucket of the registry (`kind` names its keys in error messages)."""

    def __init__(
        self,
        connection: Connection,
        name: str,
        *,
        kind: str,
        expiring: bool = False,
        max_value_size: int = MAX_RECORD_BYTES,
    ) -> None:
        super().__init__(
            connection, name, kind=kind, expiring=expiring, max_value_size=max_value_size
        )
