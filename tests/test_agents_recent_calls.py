"""An agent's memory of its recent call ids: bounded, exact replies, and its snapshot form."""

from __future__ import annotations

import pytest

from mabeam.agents import recent_calls
from mabeam.agents.recent_calls import (
    MAX_REMEMBERED_BYTES,
    MAX_REPLY_BYTES,
    PERSISTED_CALLS,
    RecentCalls,
    Reply,
)
from mabeam.core.errors import BadRequestError, ConflictError, UnknownActionError


def test_a_remembered_reply_is_the_first_one_result_or_error() -> None:
    calls = RecentCalls(limit=8)
    calls.remember("a", Reply.of_result({"counter": 1}))
    calls.remember("a", Reply.of_result({"counter": 2}))  # a repeat never replaces the first
    calls.remember("b", Reply.of_error(UnknownActionError("no action 'fly'")))
    assert calls.get("a").value() == {"counter": 1}
    with pytest.raises(UnknownActionError, match="fly"):
        calls.get("b").value()


def test_the_oldest_calls_are_forgotten_first() -> None:
    calls = RecentCalls(limit=3)
    for index in range(5):
        calls.remember(f"c{index}", Reply.of_result(index))
    assert [call_id in calls for call_id in ("c0", "c1", "c2", "c3", "c4")] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert RecentCalls(limit=0).limit == 0
    nothing = RecentCalls(limit=0)
    nothing.remember("x", Reply.of_result(1))
    assert "x" not in nothing


def test_a_reply_too_large_to_keep_is_refused_on_repeat_not_run_again() -> None:
    calls = RecentCalls(limit=4)
    calls.remember("big", Reply.of_result("x" * (MAX_REPLY_BYTES + 1)))
    assert "big" in calls
    with pytest.raises(ConflictError, match="too large"):
        calls.get("big")


def test_the_memory_travels_with_a_snapshot() -> None:
    calls = RecentCalls(limit=4)
    calls.remember("ok", Reply.of_result({"counter": 3}))
    calls.remember("err", Reply.of_error(UnknownActionError("nope")))
    calls.remember("big", Reply.of_result("x" * (MAX_REPLY_BYTES + 1)))
    restored = RecentCalls(limit=4)
    restored.restore(calls.encode())
    assert restored.get("ok").value() == {"counter": 3}
    assert restored.get("err") == calls.get("err")
    with pytest.raises(ConflictError):
        restored.get("big")
    assert restored.encode() == calls.encode()  # and on to the next owner, unchanged
    smaller = RecentCalls(limit=1)
    smaller.restore(calls.encode())
    assert len(smaller) == 1 and "big" in smaller
    with pytest.raises(BadRequestError, match="remembered calls"):
        restored.restore(b'{"not": "a list"}')


def test_a_snapshot_carries_only_the_most_recent_calls() -> None:
    calls = RecentCalls(limit=64)
    for index in range(PERSISTED_CALLS + 5):
        calls.remember(f"c{index}", Reply.of_result(index))
    restored = RecentCalls(limit=64)
    restored.restore(calls.encode())
    assert len(restored) == PERSISTED_CALLS
    assert "c4" not in restored and f"c{PERSISTED_CALLS + 4}" in restored
    assert restored.get("c5").value() == 5


def test_calls_older_than_keep_for_are_forgotten_at_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(recent_calls.time, "monotonic", lambda: clock[0])
    calls = RecentCalls(limit=8, keep_for=10.0)
    calls.remember("old", Reply.of_result(1))
    clock[0] += 6
    calls.remember("mid", Reply.of_result(2))
    clock[0] += 5  # "old" is 11 s old, "mid" 5 s
    assert "old" in calls  # forgotten lazily, at the next call
    calls.remember("new", Reply.of_result(3))
    assert ("old" in calls, "mid" in calls, "new" in calls) == (False, True, True)
    assert calls.get("mid").value() == 2


def test_the_reply_bodies_kept_are_bounded_in_bytes() -> None:
    calls = RecentCalls(limit=32)
    body = "x" * (MAX_REPLY_BYTES - 2)  # encoded with its quotes: exactly the largest kept
    for index in range(MAX_REMEMBERED_BYTES // MAX_REPLY_BYTES + 2):
        calls.remember(f"c{index}", Reply.of_result(body))
    assert len(calls) == MAX_REMEMBERED_BYTES // MAX_REPLY_BYTES
    assert calls.get(f"c{len(calls) + 1}").value() == body
