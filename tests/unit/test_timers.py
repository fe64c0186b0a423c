"""DueTimers: the due-time heap behind Core's reconciler and the Agent's retry loop. A discarded key is never
woken again, and its entries leave the heap, so keys waiting on a long timer cost nothing once forgotten."""

from __future__ import annotations

import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.services.timers import DueTimers


async def test_discarded_keys_leave_the_heap_and_are_never_woken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = TrioClock()
    timers = DueTimers(clock)
    far = clock.now_ms() + 900_000  # a command held for ledger_hold_ms
    for i in range(20_000):
        timers.at(far, f"gone-{i}")
        timers.at(far, f"gone-{i}")  # a key may be scheduled more than once
        timers.discard(f"gone-{i}")
    timers.at(far, "kept")
    assert len(timers) < 1_100, "forgotten keys still fill the heap"
    timers.at(far, "back")
    timers.discard("back")
    timers.at(far + 1, "back")  # scheduled again after a discard: woken again
    woken: list[str] = []
    with trio.fail_after(910):
        while len(woken) < 2:
            _, due = await timers.next_due()
            woken.extend(due)
    assert sorted(woken) == ["back", "kept"]
