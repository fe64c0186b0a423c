"""Fresh identifiers for services: UUIDv7 from the clock port and a random source."""

from __future__ import annotations

import random

from echo.domain import ids
from echo.ports.clock import Clock


class IdFactory:
    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()

    def uuid7(self) -> str:
        return ids.uuid7(self._clock.now_ms(), self._rng.randbytes(10))
