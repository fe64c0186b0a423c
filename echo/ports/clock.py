"""Wall-clock time as a port, so services run the same on a real clock and on trio's MockClock."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Unix time in milliseconds."""
        ...
