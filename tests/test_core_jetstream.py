"""Set-up requests that a forming cluster leaves unanswered, or answers with a stream it does not
serve yet, are tried again for a bounded number of times or seconds, and every other error passes
at once; streams are listed and deleted by name, against
a real server."""

from __future__ import annotations

import asyncio

import pytest

from mabeam.core import jetstream
from mabeam.core.connection import Connection
from mabeam.core.errors import ConflictError, DeadlineError, NotFoundError
from mabeam.core.jetstream import SETUP_ATTEMPTS, StorageType, StreamConfig, retrying_setup


async def test_a_timed_out_setup_is_tried_again_until_it_answers() -> None:
    calls: list[int] = []

    async def setup() -> str:
        calls.append(1)
        if len(calls) < SETUP_ATTEMPTS:
            raise DeadlineError("request timed out")
        return "created"

    assert await retrying_setup("stream S", setup) == "created"
    assert len(calls) == SETUP_ATTEMPTS


async def test_a_setup_that_never_answers_raises_after_the_last_attempt() -> None:
    calls: list[int] = []

    async def setup() -> None:
        calls.append(1)
        raise DeadlineError("request timed out")

    with pytest.raises(DeadlineError):
        await retrying_setup("stream S", setup)
    assert len(calls) == SETUP_ATTEMPTS


async def test_a_stream_not_served_yet_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream, "CATCH_UP_STEP", 0.01)
    calls: list[int] = []

    async def setup() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise NotFoundError("stream not found")
        return "bound"

    assert await retrying_setup("consumer C", setup) == "bound"
    assert len(calls) == 5


async def test_a_stream_missing_past_the_patience_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetstream, "CATCH_UP_STEP", 0.01)
    monkeypatch.setattr(jetstream, "CATCH_UP_PATIENCE", 0.1)
    calls: list[int] = []

    async def setup() -> None:
        calls.append(1)
        raise NotFoundError("stream not found")

    async with asyncio.timeout(2):
        with pytest.raises(NotFoundError):
            await retrying_setup("consumer C", setup)
    assert 2 <= len(calls) <= 12


async def test_an_answer_that_is_an_error_is_not_retried() -> None:
    calls: list[int] = []

    async def setup() -> None:
        calls.append(1)
        raise ConflictError("stream name already in use with a different configuration")

    with pytest.raises(ConflictError):
        await retrying_setup("stream S", setup)
    assert calls == [1]


async def _add_streams(connection: Connection, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}_S{i}" for i in range(count)]
    await asyncio.gather(
        *(
            connection.jetstream.add_stream(
                StreamConfig(name=name, subjects=[f"{prefix}.s{i}.>"], storage=StorageType.MEMORY)
            )
            for i, name in enumerate(names)
        )
    )
    return names


@pytest.mark.parametrize("count", [3, 260], ids=["one page", "past the server's 256"])
async def test_stream_names_lists_every_stream_of_the_account(
    connection: Connection, prefix: str, count: int
) -> None:
    names = await _add_streams(connection, prefix, count)
    listed = await connection.jetstream.stream_names()
    assert set(names) <= set(listed)
    assert len(listed) == len(set(listed))
    await asyncio.gather(*(connection.jetstream.delete_stream(name) for name in names))


async def test_a_deleted_stream_is_gone_and_deleting_it_again_is_not_found(
    connection: Connection, prefix: str
) -> None:
    kept, deleted = await _add_streams(connection, prefix, 2)
    await connection.jetstream.delete_stream(deleted)
    listed = await connection.jetstream.stream_names()
    assert kept in listed and deleted not in listed
    with pytest.raises(NotFoundError):
        await connection.jetstream.stream_info(deleted)
    with pytest.raises(NotFoundError):
        await connection.jetstream.delete_stream(deleted)
    await connection.jetstream.delete_stream(kept)
