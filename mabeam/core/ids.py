"""Unique ids, cheaply: a random per-process prefix and a counter.

A `uuid4` per id costs a system call and more than the rest of a local call or an event's
publish; an id here is 80 random bits drawn once per process (again in a forked child) and then
a counter in hex, so it stays unique across processes and restarts.
"""

from __future__ import annotations

import itertools
import os
import uuid

__all__ = ["unique_id"]


class _UniqueIds:
    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:20]
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_ids = _UniqueIds()


def unique_id() -> str:
    """An id unique across processes and restarts: 20 random hex digits, then a hex counter."""
    return _ids.next()
