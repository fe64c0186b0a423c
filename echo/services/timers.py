"""Due times for keys (command ids), kept in a heap: the clock-keeping shared by Core's reconciler and the
Agent's retry loop. The rules that decide what a due key means stay in ``echo.delivery``."""

from __future__ import annotations

import heapq

import trio

from echo.ports.clock import Clock


class DueTimers:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[int, str]] = []
        self._added = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, at_ms: int, key: str) -> None:
        """Wake for ``key`` at ``at_ms``. A key may be scheduled more than once; its owner ignores a wake
        that is not due any more (the delivery machines answer it with "timer not due")."""
        heapq.heappush(self._heap, (at_ms, key))
        self._added.set()

    async def next_due(self) -> tuple[int, list[str]]:
        """Wait until at least one key is due; returns the time and every key due by then."""
        while True:
            now = self._clock.now_ms()
            due: list[str] = []
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[1])
            if due:
                return now, due
            wait = (self._heap[0][0] - now) / 1000 if self._heap else float("inf")
            with trio.move_on_after(wait):
                await self._added.wait()
            self._added = trio.Event()
