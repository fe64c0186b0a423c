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
        self._gone: set[str] = set()
        """Keys discarded since the heap was last compacted: their entries are skipped, never returned."""

    def __len__(self) -> int:
        return len(self._heap)

    def at(self, at_ms: int, key: str) -> None:
        """Wake for ``key`` at ``at_ms``. A key may be scheduled more than once; its owner ignores a wake
        that is not due any more (the delivery machines answer it with "timer not due")."""
        heapq.heappush(self._heap, (at_ms, key))
        self._gone.discard(key)
        self._added.set()

    def discard(self, key: str) -> None:
        """``key`` needs no more wakes (its owner forgot it): its entries leave the heap, at the latest when
        as many keys were discarded as half the heap holds, so a long wake (a command held for
        ``ledger_hold_ms``, say) costs no memory after its key is gone."""
        self._gone.add(key)
        if len(self._gone) >= max(1024, len(self._heap) // 2):
            self._heap = [e for e in self._heap if e[1] not in self._gone]
            heapq.heapify(self._heap)
            self._gone.clear()

    async def next_due(self) -> tuple[int, list[str]]:
        """Wait until at least one key is due; returns the time and every key due by then."""
        while True:
            now = self._clock.now_ms()
            due: list[str] = []
            while self._heap and self._heap[0][0] <= now:
                key = heapq.heappop(self._heap)[1]
                if key not in self._gone:
                    due.append(key)
            if due:
                return now, due
            wait = (self._heap[0][0] - now) / 1000 if self._heap else float("inf")
            with trio.move_on_after(wait):
                await self._added.wait()
            self._added = trio.Event()
