"""IdFactory: UUIDv7s strictly increasing within one factory, whatever the clock does."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from echo.domain.ids import parse_trade_id, uuid7_time_ms
from echo.services.ids import IdFactory


class StepClock:
    def __init__(self, times: list[int]) -> None:
        self.times = times
        self.i = 0

    def now_ms(self) -> int:
        t = self.times[min(self.i, len(self.times) - 1)]
        self.i += 1
        return t


@given(st.lists(st.integers(1_700_000_000_000, 1_700_000_000_050), min_size=1, max_size=300), st.integers())
def test_ids_strictly_increase_even_when_the_clock_stalls_or_steps_back(times: list[int], seed: int) -> None:
    factory = IdFactory(StepClock(times), random.Random(seed))
    made = [factory.uuid7() for _ in times]
    assert made == sorted(made) and len(set(made)) == len(made)
    for value in made:
        parse_trade_id(value)
    assert uuid7_time_ms(made[0]) == times[0]
    # the time part never lags the clock reading it was made at
    assert all(uuid7_time_ms(v) >= t for v, t in zip(made, times, strict=True))


def test_same_seed_same_ids() -> None:
    a = IdFactory(StepClock([5, 5, 5]), random.Random(3))
    b = IdFactory(StepClock([5, 5, 5]), random.Random(3))
    assert [a.uuid7() for _ in range(3)] == [b.uuid7() for _ in range(3)]
