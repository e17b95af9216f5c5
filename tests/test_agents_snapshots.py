"""Snapshot writes are fenced: an owner that was replaced can never overwrite its successor, and
replies held for a commit are released on the ack or refused when the write was fenced off."""

from __future__ import annotations

from collections.abc import Awaitable

import structlog

from mabeam.agents.mailbox import Envelope, EnvelopeKind
from mabeam.agents.replier import Replier
from mabeam.agents.snapshots import CALLS_HEADER, SnapshotStore
from mabeam.core.codec import decode, encode
from mabeam.core.connection import Connection
from mabeam.core.errors import ReplyTimeoutError
from mabeam.registry.buckets import Bucket
from mabeam.testing import eventually

log = structlog.get_logger("test")


class Owner:
    """One runner's copy of an agent, as the store sees it."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.state = 0
        self.acts = 1
        self.lost = False
        self.owned = True  # what the registry record says, as `holds_record` reads it
        self.sent: list[tuple[str, bytes, dict[str, str] | None]] = []
        self.released = 0  # releases heard, as the runtime hears them (Runtime.send_released)
        self.replier = Replier(
            self._publish,
            lambda: log,
            serving=lambda: True,
            durable=True,
            on_released=self._released,
        )

    def _released(self) -> None:
        self.released += 1

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str] | None) -> None:
        self.sent.append((subject, body, headers))

    def snapshot_now(self) -> tuple[bytes, bytes]:
        return encode({"n": self.state}), encode([[f"c{self.acts}", None, {"n": 1}, True]])

    async def ownership_lost(self) -> None:
        self.lost = True

    async def holds_record(self) -> bool:
        return self.owned

    async def act(self, value: int, reply: str) -> None:
        self.state = value
        self.acts += 1
        await self.replier.result(Envelope(EnvelopeKind.ACTION, "set", reply=reply), value)


class AckLost(Bucket):
    """The real bucket, except that its next compare-and-set write is stored but reported as
    timed out: an ack lost with the connection, or one that came too late."""

    lose_next = False

    async def send_update(
        self, key: str, value: bytes, *, revision: int, headers: dict[str, str] | None = None
    ) -> Awaitable[int]:
        ack = await super().send_update(key, value, revision=revision, headers=headers)
        if not self.lose_next:
            return ack
        self.lose_next = False
        await ack  # stored
        return _timed_out()


async def _timed_out() -> int:
    raise ReplyTimeoutError("the ack of a stored write did not come")


async def _store(connection: Connection, bucket: Bucket | None = None) -> SnapshotStore:
    bucket = bucket or Bucket(connection, "state", kind="snapshot", expiring=True)
    await bucket.ensure()
    return SnapshotStore(bucket)


async def test_a_replaced_owner_cannot_overwrite_its_successor(connection: Connection) -> None:
    old_store, new_store = await _store(connection), await _store(connection)
    old, new = Owner("a1"), Owner("a1")
    assert await old_store.load("a1") is None
    await old.act(1, "r.1")
    assert old.sent == []  # held until the snapshot holding its effect is stored
    await old_store.commit(old)
    assert [subject for subject, _, _ in old.sent] == ["r.1"] and old.released == 1

    claimed = await new_store.claim("a1")  # the successor adopts it: the old owner is fenced
    assert claimed is not None and claimed.state == {"n": 1}
    assert claimed.calls == b'[["c2",null,{"n":1},true]]'

    await old.act(2, "r.2")
    await old_store.commit(old)
    subject, _, headers = old.sent[-1]
    assert subject == "r.2" and headers is not None and headers["Nats-Service-Error-Code"] == "503"
    assert old.lost and old.released == 1  # a refusal is no release

    new.state = claimed.state["n"]
    await new.act(3, "r.3")
    await new_store.commit(new)
    assert [subject for subject, _, _ in new.sent] == ["r.3"]
    entry = await Bucket(connection, "state", kind="snapshot").get("a1")
    assert entry is not None and decode(entry.value) == {"n": 3}
    assert entry.headers is not None and CALLS_HEADER in entry.headers


async def test_claiming_an_agent_without_a_snapshot_fences_a_first_write(
    connection: Connection,
) -> None:
    old_store, new_store = await _store(connection), await _store(connection)
    old = Owner("a2")
    assert await old_store.load("a2") is None
    assert await new_store.claim("a2") is None  # writes an empty value: "no state yet"
    await old.act(5, "r.5")
    await old_store.commit(old)
    assert old.lost and old.sent[-1][2] is not None


async def test_an_unchanged_snapshot_is_not_written_again(connection: Connection) -> None:
    store = await _store(connection)
    owner = Owner("a3")
    await store.load("a3")
    await owner.act(7, "r.7")
    await store.commit(owner)
    bucket = Bucket(connection, "state", kind="snapshot")
    first = await bucket.get("a3")
    await owner.act(7, "r.again")  # same state (a new call id only): released without a write
    await store.commit(owner)
    assert [subject for subject, _, _ in owner.sent] == ["r.7", "r.again"]
    again = await bucket.get("a3")
    assert first is not None and again is not None and again.revision == first.revision


async def _stored_then_unsure(connection: Connection, owner: Owner) -> SnapshotStore:
    """A store whose second write of `owner` was stored, but reported as timed out."""
    bucket = AckLost(connection, "state", kind="snapshot", expiring=True)
    store = await _store(connection, bucket)
    await store.load(owner.agent_id)
    await owner.act(1, "r.1")
    await store.commit(owner)
    bucket.lose_next = True
    await owner.act(2, "r.2")
    await store.commit(owner)  # stored; the store cannot know: r.2 waits for the retry
    assert [subject for subject, _, _ in owner.sent] == ["r.1"]
    return store


async def test_a_retry_that_meets_its_own_stored_write_keeps_the_agent(
    connection: Connection,
) -> None:
    owner = Owner("a4")
    await _stored_then_unsure(connection, owner)
    # the retry's compare-and-set fails on the write it repeats; the record still names us
    await eventually(lambda: len(owner.sent) == 2, message="r.2 was never released")
    subject, _, headers = owner.sent[1]
    assert subject == "r.2" and headers is None  # a result, not a 503
    assert not owner.lost


async def test_a_conflict_after_an_unsure_write_still_yields_to_a_new_owner(
    connection: Connection,
) -> None:
    owner = Owner("a5")
    await _stored_then_unsure(connection, owner)
    owner.owned = False  # another runner won the record (and so may claim the snapshot)
    await eventually(lambda: owner.lost, message="the agent was not given up")
    subject, _, headers = owner.sent[1]
    assert subject == "r.2" and headers is not None
    assert headers["Nats-Service-Error-Code"] == "503"


async def test_a_commit_after_an_unsure_write_releases_before_it_returns(
    connection: Connection,
) -> None:
    owner = Owner("a6")
    store = await _stored_then_unsure(connection, owner)
    await store.commit(owner)  # as a stop does: the agent leaves once this returns
    assert [subject for subject, _, _ in owner.sent] == ["r.1", "r.2"]
    assert owner.sent[1][2] is None and not owner.lost
