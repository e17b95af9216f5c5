"""Snapshot writes are fenced: an owner that was replaced can never overwrite its successor, and
replies held for a commit are released on the ack or refused when the write was fenced off."""

from __future__ import annotations

import structlog

from mabeam.agents.mailbox import Envelope, EnvelopeKind
from mabeam.agents.replier import Replier
from mabeam.agents.snapshots import CALLS_HEADER, SnapshotStore
from mabeam.core.codec import decode, encode
from mabeam.core.connection import Connection
from mabeam.registry.buckets import Bucket

log = structlog.get_logger("test")


class Owner:
    """One runner's copy of an agent, as the store sees it."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.state = 0
        self.acts = 1
        self.lost = False
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

    async def act(self, value: int, reply: str) -> None:
        self.state = value
        self.acts += 1
        await self.replier.result(Envelope(EnvelopeKind.ACTION, "set", reply=reply), value)


async def _store(connection: Connection) -> SnapshotStore:
    bucket = Bucket(connection, "state", kind="snapshot", expiring=True)
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
