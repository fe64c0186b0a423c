"""Wall clocks."""

from __future__ import annotations

import time

import trio


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class TrioClock:
    """Wall time derived from trio's clock, so a MockClock drives it too."""

    def __init__(self, epoch_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self._epoch_ms = epoch_ms

    def now_ms(self) -> int:
        return self._epoch_ms + int(trio.current_time() * 1000)
