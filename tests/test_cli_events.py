"""`mabeam publish` and `mabeam subscribe`, run as the real console script."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mabeam.bus import UNKNOWN_SOURCE, EventBus
from mabeam.core.codec import parse_rfc3339
from mabeam.core.connection import Connection
from mabeam.testing import NatsEndpoint, eventually

MABEAM = str(Path(sys.executable).parent / "mabeam")


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        MABEAM,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(*args: str) -> tuple[int, str, str]:
    process = await start(*args)
    async with asyncio.timeout(15):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(15):
        return (await process.stdout.readline()).decode()


async def test_publish_sends_a_cloudevent_that_any_nats_client_sees(
    nats_server: NatsEndpoint, prefix: str, connection: Connection
) -> None:
    raw = await connection.nc.subscribe(f"{prefix}.events.>")
    await connection.nc.flush()
    code, out, err = await run(
        "publish", "orders.eu.created", '{"x": 1}', "--nats", nats_server.url, "--prefix", prefix
    )
    assert (code, err) == (0, "")
    message = await raw.next_msg(timeout=5)
    assert message.subject == f"{prefix}.events.orders.eu.created"
    assert message.headers == {"content-type": "application/cloudevents+json"}
    event = json.loads(message.data)
    assert out == f"published orders.eu.created id={event['id']}\n"
    assert event["data"] == {"x": 1}
    assert event["specversion"] == "1.0"
    assert event["source"] == "/clients/mabeam-cli-publish"
    assert event["type"] == "orders.eu.created"
    assert event["datacontenttype"] == "application/json"
    parse_rfc3339(event["time"])


async def test_subscribe_prints_a_headerless_publish_as_a_filled_json_event(
    nats_server: NatsEndpoint, prefix: str, connection: Connection
) -> None:
    process = await start(
        "subscribe", "orders.>", "--count", "1", "--json", "--nats", nats_server.url,
        "--prefix", prefix,
    )  # fmt: skip
    assert process.stdout is not None
    line_task = asyncio.ensure_future(process.stdout.readline())
    async with asyncio.timeout(15):
        while not line_task.done():  # publish until the subscription is there to see one
            await connection.nc.publish(f"{prefix}.events.orders.eu.created", b'{"x":1}')
            await asyncio.wait([line_task], timeout=0.05)
        line = line_task.result().decode()
        await process.wait()
    assert process.returncode == 0
    event = json.loads(line)
    assert event["data"] == {"x": 1}
    assert (event["source"], event["type"]) == (UNKNOWN_SOURCE, "orders.eu.created")
    assert (event["topic"], event["subject"]) == (
        "orders.eu.created",
        f"{prefix}.events.orders.eu.created",
    )
    assert event["specversion"] == "1.0"
    uuid.UUID(event["id"])
    assert abs(parse_rfc3339(event["time"]) - datetime.now(UTC)) < timedelta(seconds=10)


async def test_subscribe_prints_history_first_then_live_events(
    nats_server: NatsEndpoint, prefix: str, connection: Connection
) -> None:
    bus = EventBus(connection)
    for number in range(3):
        await bus.publish("metrics.cpu", number)
    stream = connection.subjects.events_stream

    async def stored() -> bool:  # nothing signals it: poll the stream's state
        return (await connection.js.stream_info(stream)).state.messages >= 3

    await eventually(stored, message=f"{stream} did not store 3 messages")
    process = await start(
        "subscribe", "metrics.*", "--history", "2", "--count", "1", "--nats", nats_server.url,
        "--prefix", prefix,
    )  # fmt: skip
    history = [await read_line(process), await read_line(process)]
    await bus.publish("metrics.mem", "live")  # subscribed before the history was read
    live = await read_line(process)
    async with asyncio.timeout(15):
        await process.wait()
    assert process.returncode == 0
    assert [line.split()[1] for line in (*history, live)] == [
        "metrics.cpu",
        "metrics.cpu",
        "metrics.mem",
    ]
    assert [line.split()[-1] for line in (*history, live)] == ["1", "2", '"live"']
    assert " from /clients/mabeam id=" in live


async def test_ctrl_c_stops_subscribe_without_a_traceback(
    nats_server: NatsEndpoint, prefix: str, connection: Connection
) -> None:
    await EventBus(connection).publish("ping", {})
    process = await start(
        "subscribe", ">", "--history", "1", "--nats", nats_server.url, "--prefix", prefix
    )
    assert " ping " in await read_line(process)  # running: it is waiting for live events
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        _, stderr = await process.communicate()
    assert (process.returncode, stderr.decode()) == (130, "")


async def test_a_bad_pattern_is_a_usage_error_in_one_line(nats_server: NatsEndpoint) -> None:
    code, out, err = await run("subscribe", "orders..created", "--nats", nats_server.url)
    assert (code, out) == (2, "")
    assert err == "mabeam subscribe: error: pattern 'orders..created' has an empty token\n"


async def test_bad_publish_arguments_are_usage_errors_in_one_line(
    nats_server: NatsEndpoint,
) -> None:
    code, _, err = await run("publish", "orders.*", "--nats", nats_server.url)
    assert code == 2
    assert err.startswith("mabeam publish: error: topic 'orders.*'") and err.count("\n") == 1
    code, _, err = await run("publish", "orders.x", "{not json", "--nats", nats_server.url)
    assert (code, err) == (2, "mabeam publish: error: event data is not valid JSON: '{not json'\n")


async def test_an_unreachable_server_is_a_runtime_error_in_one_line() -> None:
    for command in (["publish", "a.b", "{}"], ["subscribe", "a.>"]):
        code, out, err = await run(*command, "--nats", "nats://127.0.0.1:1")
        assert (code, out) == (1, "")
        assert err.startswith(f"mabeam {command[0]}: error: cannot connect to NATS at")
        assert err.count("\n") == 1
