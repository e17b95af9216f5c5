"""Coordination over the wire, with participants spread over two runner processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest

from mabeam.agents.coordination.consensus import Vote, decide
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, DeadlineError, NotFoundError, UnavailableError
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess


@pytest.fixture
def two_runners(config: Config) -> Iterator[list[RunnerProcess]]:
    started = [RunnerProcess(config, name).wait_ready() for name in ("r1", "r2")]
    yield started
    for runner in started:
        runner.kill()


@pytest.fixture
async def client(config: Config, two_runners: list[RunnerProcess]) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def spawn_voters(
    client: Client, votes: list[bool], weights: list[float] | None = None
) -> list[str]:
    ids = []
    for index, vote in enumerate(votes):
        args = {"vote": vote, "weight": weights[index] if weights else 1}
        runner = "r1" if index % 2 == 0 else "r2"
        record = await client.spawn(
            "demo", id=f"v{index}", args=args, capabilities=["voter"], runner=runner
        )
        ids.append(record["id"])
    return ids


async def test_majority_among_agents_on_two_runners(client: Client) -> None:
    ids = await spawn_voters(client, [True, True, False, True, False])
    result = await client.consensus(participants=ids, proposal={"plan": "a"}, rule="majority")
    assert result["decision"] == "accepted"
    assert result["votes"] == {"v0": True, "v1": True, "v2": False, "v3": True, "v4": False}
    assert result["missing"] == []
    assert result["elapsed_ms"] > 0


async def test_a_stopped_coordinator_is_back_within_a_heartbeat(client: Client) -> None:
    """The coordination protocols are the system's: a `_stop` of the coordinator (a slip of
    `mabeam stop coordinator`) leaves them unserved for a heartbeat, not until a restart."""
    await client.call("coordinator", "_stop")
    ids = await spawn_voters(client, [True, True, False])

    async def decided() -> Any:
        return await client.consensus(participants=ids, proposal=1, rule="majority")

    result = await eventually(decided, timeout=5, ignoring=(UnavailableError, DeadlineError))
    assert result["decision"] == "accepted"
    assert len(client.agents.find(type="coordinator")) == 1


async def test_rules_by_capability(client: Client) -> None:
    await spawn_voters(client, [True, True, True, False], weights=[1, 1, 1, 5])
    by_capability = {"capability": "voter", "proposal": 1}
    assert (await client.consensus(**by_capability, rule="unanimous"))["decision"] == "rejected"
    assert (await client.consensus(**by_capability, rule="weighted"))["decision"] == "rejected"
    assert (await client.consensus(**by_capability, rule="quorum", quorum=0.75))[
        "decision"
    ] == "accepted"
    assert (await client.consensus(**by_capability, rule="majority"))["decision"] == "accepted"


async def test_missing_voters_are_listed_and_can_leave_no_quorum(client: Client) -> None:
    ids = await spawn_voters(client, [True, True])
    result = await client.consensus(participants=[*ids, "ghost1", "ghost2", "ghost3"], timeout=0.5)
    assert result["missing"] == ["ghost1", "ghost2", "ghost3"]
    assert result["decision"] == "no_quorum"


async def test_a_plain_nats_client_runs_consensus(client: Client, config: Config) -> None:
    ids = await spawn_voters(client, [True, False, False])
    nc = await nats.connect(config.nats_url)
    body = json.dumps(
        {"participants": ids, "proposal": "x", "rule": "majority", "timeout": 1}
    ).encode()
    reply = await nc.request(f"{config.prefix}.agent.coordinator.consensus", body, timeout=5)
    await nc.close()
    assert json.loads(reply.data)["decision"] == "rejected"


@pytest.mark.parametrize(
    ("kind", "winner", "price"),
    [
        ("first_price", "b2", 30.0),
        ("vickrey", "b2", 20.0),
        ("english", "b2", 21.0),
        ("dutch", "b2", 30.0),
    ],
)
async def test_auctions(client: Client, kind: str, winner: str, price: float) -> None:
    for index, bid in enumerate([10, 20, 30]):
        await client.spawn("demo", id=f"b{index}", args={"bid": bid}, capabilities=["bidder"])
    await client.spawn("demo", id="nobid", capabilities=["bidder"])
    result = await client.auction(
        capability="bidder", item="lamp", kind=kind, reserve=5, start=40, step=1
    )
    assert (result["winner"], result["price"]) == (winner, price)
    assert "nobid" not in result["bids"] or result["bids"]["nobid"] is None


async def test_reserve_not_met_means_no_winner(client: Client) -> None:
    await client.spawn("demo", id="cheap", args={"bid": 3}, capabilities=["bidder"])
    result = await client.auction(capability="bidder", kind="first_price", reserve=5)
    assert result["winner"] is None


async def test_pick_strategies(client: Client) -> None:
    for index in range(3):
        await client.spawn(
            "demo", id=f"w{index}", capabilities=["work", *(["gpu"] if index == 2 else [])]
        )
    await asyncio.sleep(0.2)  # the coordinator's replica, in another process, sees all three
    picks = [await client.pick("work") for _ in range(6)]
    assert sorted(set(picks)) == ["w0", "w1", "w2"]
    assert picks == ["w0", "w1", "w2"] * 2
    assert await client.pick("work", "capability_match", also=["gpu"]) == "w2"
    assert await client.pick("work", "least_loaded") in {"w0", "w1", "w2"}
    with pytest.raises(NotFoundError):
        await client.pick("nothing")
    with pytest.raises(BadRequestError):
        await client.pick("work", "fastest")


async def test_bad_requests_are_400(client: Client) -> None:
    with pytest.raises(BadRequestError):
        await client.consensus(participants=["a"], rule="plurality")
    with pytest.raises(BadRequestError):
        await client.consensus(participants=["a"], capability="x")
    with pytest.raises(BadRequestError):
        await client.call("coordinator", "consensus", {"participants": "a,b"})


@pytest.mark.parametrize(
    ("rule", "votes", "participants", "decision"),
    [
        ("majority", [True, True, False], 3, "accepted"),
        ("majority", [True, False], 3, "rejected"),
        ("majority", [True], 3, "no_quorum"),
        ("unanimous", [True, True], 3, "no_quorum"),
        ("unanimous", [True, True, True], 3, "accepted"),
        ("quorum", [True, True, True], 4, "accepted"),
        ("quorum", [True, True, False], 4, "rejected"),
        ("quorum", [True, True], 4, "no_quorum"),
    ],
)
def test_decision_table(rule: Any, votes: list[bool], participants: int, decision: str) -> None:
    assert decide(rule, 0.75, participants, [Vote(vote=v) for v in votes]) == decision


async def test_election_one_leader_then_a_new_term_when_it_dies(client: Client) -> None:
    for index in range(3):
        runner = "r1" if index % 2 == 0 else "r2"
        await client.spawn("demo", id=f"c{index}", capabilities=["candidate"], runner=runner)
    first = await client.elect(group="g1", capability="candidate", ttl=2)
    assert first["leader"] in {"c0", "c1", "c2"}
    assert await client.elect(group="g1", capability="candidate", ttl=2) == first
    terms = client.watch_leader("g1")
    assert (await anext(terms))["term"] == first["term"]
    await client.stop(first["leader"])
    second = await asyncio.wait_for(anext(terms), 5)
    assert second["leader"] != first["leader"]
    assert second["term"] == first["term"] + 1
    await terms.aclose()


async def test_leader_on_a_killed_runner_is_replaced_within_the_ttl(
    client: Client, two_runners: list[RunnerProcess]
) -> None:
    await client.spawn("demo", id="k1", capabilities=["cand"], runner="r1", restart="temporary")
    await client.spawn("demo", id="k2", capabilities=["cand"], runner="r2", restart="temporary")
    first = await client.elect(group="g2", candidates=["k1"], ttl=1)
    assert first["leader"] == "k1"
    await client.call("k2", "_campaign", {"group": "g2", "ttl": 1})
    terms = client.watch_leader("g2")
    assert (await anext(terms))["leader"] == "k1"
    two_runners[0].kill()  # k1's lease is no longer renewed
    second = await asyncio.wait_for(anext(terms), 6)
    assert (second["leader"], second["term"]) == ("k2", first["term"] + 1)
    await terms.aclose()


async def test_barrier_releases_all_parties_together(client: Client) -> None:
    waiting = [asyncio.ensure_future(client.barrier("b1", 3, timeout=5)) for _ in range(2)]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in waiting)
    last = await client.barrier("b1", 3, timeout=5)
    assert last == {"released": True, "arrived": 3}
    assert await asyncio.gather(*waiting) == [last, last]
    with pytest.raises(DeadlineError, match="1 of 2"):
        await client.barrier("b2", 2, timeout=0.3)


async def test_lock_is_mutually_exclusive_and_frees_on_exit(client: Client, config: Config) -> None:
    inside: list[str] = []

    async def worker(name: str) -> None:
        async with Client(config) as other, other.lock("shared", ttl=2, timeout=10):
            inside.append(f"{name}+")
            await asyncio.sleep(0.1)
            inside.append(f"{name}-")

    await asyncio.gather(worker("a"), worker("b"))
    assert inside in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    async with client.lock("shared", ttl=1, timeout=2) as held:
        assert held.held
        with pytest.raises(DeadlineError):
            async with client.lock("shared", ttl=1, timeout=0.3):
                pass


def test_cli_runs_the_protocols(config: Config, two_runners: list[RunnerProcess]) -> None:
    import subprocess

    from tests.test_agents_failover import MABEAM

    base = ["--nats", config.nats_url, "--prefix", config.prefix]
    for index, vote in enumerate(["true", "true", "false"]):
        spawn = [
            MABEAM,
            "spawn",
            "demo",
            "--id",
            f"p{index}",
            "--args",
            f'{{"vote": {vote}, "bid": {index}}}',
        ]
        subprocess.run([*spawn, "--capability", "panel", *base], check=True, capture_output=True)

    def run(*words: str) -> Any:
        done = subprocess.run([MABEAM, *words, *base], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert run("consensus", "--capability", "panel", "--proposal", '"go"')["decision"] == "accepted"
    assert (
        run("consensus", "--participants", "p0,p2", "--rule", "unanimous")["decision"] == "rejected"
    )
    assert run("auction", "--capability", "panel", "--kind", "vickrey")["winner"] == "p2"
    assert run("elect", "g", "--candidates", "p1")["leader"] == "p1"
    assert run("barrier", "solo", "1") == {"released": True, "arrived": 1}
    assert run("pick", "panel")["agent"] in {"p0", "p1", "p2"}
    bad = subprocess.run(
        [MABEAM, "consensus", "--capability", "panel", "--rule", "x", *base],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
