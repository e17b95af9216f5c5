"""The search for where the last N matches start, against an in-memory list of sequences."""

from __future__ import annotations

import asyncio
import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mabeam.bus.history import find_start


class Matches:
    """The sequences of a stream that match a filter, probed as the server would answer."""

    def __init__(self, sequences: list[int]) -> None:
        self.sequences = sorted(set(sequences))
        self.probes = 0

    async def probe(self, sequence: int) -> tuple[int, int] | None:
        self.probes += 1
        index = bisect.bisect_left(self.sequences, sequence)
        if index == len(self.sequences):
            return None
        return self.sequences[index], len(self.sequences) - index


def search(matches: Matches, last: int) -> tuple[int, int]:
    return asyncio.run(find_start(matches.probe, matches.sequences[-1], last))


@settings(max_examples=300, deadline=None)
@given(
    sequences=st.lists(st.integers(1, 1_000_000), min_size=1, max_size=400),
    last=st.integers(1, 50),
)
def test_the_start_leaves_between_n_and_2n_matches_in_logarithmic_probes(
    sequences: list[int], last: int
) -> None:
    matches = Matches(sequences)
    start, count = search(matches, last)
    assert start in matches.sequences
    assert count == len(matches.sequences) - matches.sequences.index(start)
    total = len(matches.sequences)
    if total >= last:
        assert last <= count <= 2 * last
    else:
        assert (start, count) == (matches.sequences[0], total)
    assert matches.probes <= 3 * math.ceil(math.log2(matches.sequences[-1] + 1)) + 2


@pytest.mark.parametrize(("every", "probes"), [(1, 1), (7, 2), (1000, 4)])
def test_evenly_spread_matches_take_few_probes(every: int, probes: int) -> None:
    matches = Matches(list(range(every, 1_000_000, every)))
    start, count = search(matches, 100)
    assert 100 <= count <= 200
    assert start == matches.sequences[-count]
    assert matches.probes == probes


def test_fewer_matches_than_asked_for_are_all_found() -> None:
    matches = Matches([5, 900_000])
    assert search(matches, 10) == (5, 2)
