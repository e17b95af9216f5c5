"""Set-up requests that a forming cluster leaves unanswered are tried again, a bounded number
of times, and every other error passes at once."""

from __future__ import annotations

import pytest

from mabeam.core.errors import ConflictError, DeadlineError
from mabeam.core.jetstream import SETUP_ATTEMPTS, retrying_setup


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


async def test_an_answer_that_is_an_error_is_not_retried() -> None:
    calls: list[int] = []

    async def setup() -> None:
        calls.append(1)
        raise ConflictError("stream name already in use with a different configuration")

    with pytest.raises(ConflictError):
        await retrying_setup("stream S", setup)
    assert calls == [1]
