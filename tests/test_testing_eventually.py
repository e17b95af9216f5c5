"""`mabeam.testing.eventually`: polls until a check holds, and fails loudly when it never does."""

from __future__ import annotations

import itertools

import pytest

from mabeam.testing import eventually


async def test_returns_the_first_true_value_of_a_function() -> None:
    counter = itertools.count()
    assert await eventually(lambda: max(next(counter) - 2, 0), interval=0) == 1


async def test_awaits_an_async_check() -> None:
    calls = itertools.count(1)

    async def third_call() -> str | None:
        return "done" if next(calls) == 3 else None

    assert await eventually(third_call, interval=0) == "done"


async def test_a_check_that_never_holds_fails_with_the_message_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"^queue empty within 0.05 s \(last: 0\)$"):
        await eventually(lambda: 0, timeout=0.05, message="queue empty")


async def test_an_ignored_exception_means_not_yet_and_is_reported_last() -> None:
    def refuses() -> bool:
        raise ConnectionError("no responders")

    with pytest.raises(AssertionError, match=r"last: ConnectionError\('no responders'\)"):
        await eventually(refuses, timeout=0.05, ignoring=(ConnectionError,))


async def test_any_other_exception_propagates_at_once() -> None:
    def broken() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await eventually(broken, timeout=10, ignoring=(ConnectionError,))


async def test_until_judges_the_value_and_the_failure_shows_the_last_one() -> None:
    readings = iter([{"celsius": 17}, {"celsius": 18}, {"celsius": 19}])
    latest = await eventually(lambda: next(readings), until=lambda r: r["celsius"] >= 18)
    assert latest == {"celsius": 18}
    with pytest.raises(AssertionError, match=r"too cold within 0.05 s \(last: \{'celsius': 5\}\)"):
        await eventually(
            lambda: {"celsius": 5},
            until=lambda r: r["celsius"] > 18,
            timeout=0.05,
            message="too cold",
        )
