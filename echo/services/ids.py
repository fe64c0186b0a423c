"""Fresh identifiers for services: UUIDv7 from the clock port and a random source."""

from __future__ import annotations

import random

from echo.domain import ids
from echo.ports.clock import Clock


class IdFactory:
    """UUIDv7s that strictly increase within one factory (RFC 9562, method 2): ids made in the same
    millisecond, or after the clock stepped back, continue from the last one with a random increment. So
    events and commands sort in the order they were made, which recovery relies on."""

    _RAND_LIMIT = 1 << 74

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        # ids need uniqueness, not secrecy: a PRNG seeded from the OS is enough and 10x cheaper per id
        self._rng = rng or random.Random()
        self._last_ms = -1
        self._last_rand = 0

    def uuid7(self) -> str:
        ms = self._clock.now_ms()
        if ms > self._last_ms:
            rand = self._rng.getrandbits(74)
        else:
            ms = self._last_ms
            rand = self._last_rand + 1 + self._rng.getrandbits(32)
            if rand >= self._RAND_LIMIT:
                ms, rand = ms + 1, self._rng.getrandbits(74)
        self._last_ms, self._last_rand = ms, rand
        return ids.uuid7_from_int(ms, rand)
