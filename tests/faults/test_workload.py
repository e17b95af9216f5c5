"""How the workload reads a snapshot back."""

from __future__ import annotations

from tests.faults.workload import messages_in_snapshot


def test_a_snapshots_messages_are_found_bare_or_inside_an_envelope() -> None:
    assert messages_in_snapshot({"counter": 0, "messages": ["c0-1"]}) == ["c0-1"]
    wrapped = {"epoch": 3, "calls": {"c0-1": {"count": 1}}, "state": {"messages": ["c0-1"]}}
    assert messages_in_snapshot(wrapped) == ["c0-1"]
    assert messages_in_snapshot({"counter": 2}) is None
    assert messages_in_snapshot(["not", "an", "object"]) is None
