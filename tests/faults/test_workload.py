"""How the workload reads a snapshot back, and how it tells an acknowledgement."""

from __future__ import annotations

from nats.aio.msg import Msg

from tests.faults.wire import classify
from tests.faults.workload import messages_in_snapshot


def test_a_snapshots_messages_are_found_bare_or_inside_an_envelope() -> None:
    assert messages_in_snapshot({"counter": 0, "messages": ["c0-1"]}) == ["c0-1"]
    wrapped = {"epoch": 3, "calls": {"c0-1": {"count": 1}}, "state": {"messages": ["c0-1"]}}
    assert messages_in_snapshot(wrapped) == ["c0-1"]
    assert messages_in_snapshot({"counter": 2}) is None
    assert messages_in_snapshot(["not", "an", "object"]) is None


def test_a_streams_ack_is_success_and_its_refusal_an_error() -> None:
    ack = Msg(None, subject="_FAULTS.e.1", data=b'{"stream":"F_EVENTS","seq":7}')
    refusal = Msg(None, subject="_FAULTS.e.2", data=b'{"error":{"code":503,"err_code":10077}}')
    assert classify(ack).kind == "ok"
    assert (classify(refusal).kind, classify(refusal).code) == ("error", 503)
