"""The checker on handmade histories: a clean one passes, each violation is found and counted."""

from __future__ import annotations

from tests.faults.checker import check, owners_between
from tests.faults.history import (
    Attempt,
    FinalRead,
    History,
    Operation,
    Ownership,
    Probe,
    Reply,
    Served,
)

OK = Reply(1.0, "ok", None, {"count": 1})


def op(client: str, seq: int, agent: str, *replies: Reply) -> Operation:
    """An operation with one attempt that got `replies`."""
    subject = f"in.{client}.{seq}"
    return Operation(client, seq, agent, [Attempt(subject, 0.5, list(replies))])


def clean() -> History:
    """Two acknowledged ops on a1, owned by r1 throughout, served by r1, stored and snapshotted."""
    history = History(
        operations=[op("c0", 0, "a1", OK), op("c0", 1, "a1", OK)],
        ownership=[Ownership(0.0, "a1", "r1")],
        served=[Served(0.9, "r1", "in.c0.0"), Served(0.9, "r1", "in.c0.1")],
    )
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1"], ["c0-0", "c0-1"])
    return history


def test_a_clean_history_has_no_finding() -> None:
    report = check(clean())
    assert report.findings == []
    assert (report.operations, report.acknowledged, report.attempts) == (2, 2, 2)
    assert "found: nothing" in report.summary()


def test_an_acknowledged_op_missing_from_the_ledger_is_lost() -> None:
    history = clean()
    history.finals["a1"] = FinalRead("a1", ["c0-0"], ["c0-0"])
    assert check(history).counts == {"lost": 1, "stale_snapshot": 1}


def test_an_unacknowledged_op_may_be_missing_or_present() -> None:
    history = clean()
    history.operations.append(op("c0", 2, "a1", Reply(1.0, "no_responders", 503)))
    assert check(history).findings == []
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1", "c0-2"], ["c0-0", "c0-1", "c0-2"])
    assert check(history).findings == []


def test_an_op_applied_twice_is_duplicated() -> None:
    history = clean()
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1", "c0-1"], ["c0-0", "c0-1", "c0-1"])
    assert check(history).counts == {"duplicated": 1}


def test_a_message_nobody_sent_to_that_agent_is_a_phantom() -> None:
    history = clean()
    history.operations.append(op("c1", 0, "a2", OK))
    history.finals["a2"] = FinalRead("a2", ["c1-0"], ["c1-0"])
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1", "c1-0"], ["c0-0", "c0-1", "c1-0"])
    assert check(history).counts == {"phantom": 1}


def test_an_agent_that_does_not_answer_the_final_read_is_unreadable() -> None:
    history = clean()
    history.finals["a1"] = FinalRead("a1", None, ["c0-0", "c0-1"])
    assert check(history).counts == {"unreadable": 1}


def test_two_answers_to_one_attempt_are_a_double_reply() -> None:
    history = clean()
    history.operations[0].attempts[0].replies.append(Reply(1.2, "ok", None, {"count": 1}))
    history.probes.append(Probe("a1", Attempt("in.p.1", 0.5, [OK, OK])))
    assert check(history).counts == {"double_reply": 2}


def test_the_servers_no_responders_status_is_not_an_answer() -> None:
    history = clean()
    history.operations[0].attempts[0].replies.insert(0, Reply(0.6, "no_responders", 503))
    assert check(history).findings == []


def test_a_reply_from_a_runner_the_registry_does_not_name_is_a_non_owner_reply() -> None:
    history = clean()
    history.ownership.append(Ownership(5.0, "a1", "r2"))
    history.served.append(Served(8.0, "r1", "in.c0.1"))
    report = check(history)
    assert report.counts == {"non_owner_reply": 1}
    assert report.findings[0].detail == (
        "r1 answered in.c0.1 (asked at -7.500 s) while the registry named r2;"
        " its owners: r1 at -8.000 s, r2 at -3.000 s"
    )


def test_a_new_owner_answering_just_before_the_watch_sees_its_record_is_tolerated() -> None:
    history = clean()
    history.ownership.append(Ownership(5.0, "a1", "r2"))
    history.served.append(Served(4.8, "r2", "in.c0.1"))
    assert check(history, grace=0.5).findings == []
    assert check(history, grace=0.1).counts == {"non_owner_reply": 1}


def test_a_snapshot_behind_the_live_ledger_is_stale() -> None:
    history = clean()
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1"], ["c0-0"])
    assert check(history).counts == {"stale_snapshot": 1}
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1"], None)
    assert check(history).counts == {"stale_snapshot": 2}


def test_a_snapshot_with_all_acknowledged_ops_but_other_content_differs() -> None:
    history = clean()
    history.finals["a1"] = FinalRead("a1", ["c0-0", "c0-1"], ["c0-1", "c0-0"])
    report = check(history)
    assert report.counts == {"stale_snapshot": 1}
    assert "differs" in report.findings[0].detail


def test_owners_between_takes_the_owner_at_the_start_and_every_change_inside() -> None:
    timeline = [Ownership(0.0, "a", "r1"), Ownership(2.0, "a", "r2"), Ownership(4.0, "a", None)]
    assert owners_between(timeline, 1.0, 1.5) == {"r1"}
    assert owners_between(timeline, 1.0, 2.5) == {"r1", "r2"}
    assert owners_between(timeline, 3.0, 5.0) == {"r2", None}
    assert owners_between(timeline, -2.0, -1.0) == set()
