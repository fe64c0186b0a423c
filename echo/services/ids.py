"""Fresh identifiers for services: UUIDv7 from the clock port and a random source."""

from __future__ import annotations

import random

from echo.domain import ids
from echo.ports.clock import Clock


class IdFactory:
    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        # ids need uniqueness, not secrecy: a PRNG seeded from the OS is enough and 10x cheaper per id
        self._rng = rng or random.Random()

    def uuid7(self) -> str:
        return ids.uuid7_from_int(self._clock.now_ms(), self._rng.getrandbits(74))
