"""Lossless delivery over a lossy pipe: lines between the Agent and the slave terminals are dropped at
random, in both directions. Core's reconciler re-sends what was not answered with the same command_id and
the terminal answers a repeated command_id with its stored result, so every trade is still copied exactly
once and closed."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from echo.domain.config import AgentConfig, Config, DeliverySettings, StoreConfig
from tests.e2e.world import fills, start_world

pytestmark = pytest.mark.e2e


class LossyStream(trio.abc.Stream):
    """Drops whole lines other than the handshake, in each direction, with probability ``p`` (a line cut
    in half would only test the framing, which the codec tests cover)."""

    def __init__(self, inner: trio.abc.Stream, rng: random.Random, p: float) -> None:
        self.inner, self.rng, self.p = inner, rng, p
        self._rx = b""
        self.dropped = 0

    def _filter(self, data: bytes) -> bytes:
        lines = data.split(b"\n")
        kept = []
        for line in lines[:-1]:
            # a handshake is never lost: it opens the connection (a lost connection is another test)
            if b'"type":"handshake"' not in line[:40] and self.rng.random() < self.p:
                self.dropped += 1
            else:
                kept.append(line + b"\n")
        return b"".join(kept), lines[-1]  # type: ignore[return-value]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        out, rest = self._filter(bytes(data))  # type: ignore[misc]
        assert rest == b"", "terminals write whole lines"
        if out:
            await self.inner.send_all(out)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            data = await self.inner.receive_some()
            if not data:
                return b""
            out, self._rx = self._filter(self._rx + data)  # type: ignore[misc]
            if out:
                return out

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_trade_copied_once_over_lossy_pipes(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(
        agent=AgentConfig(agent_id="agent-lossy"),
        delivery=DeliverySettings(max_retries=50),
        store=StoreConfig("memory://"),
    )
    links: list[LossyStream] = []

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, seed, config=config)
            core = w.core

            async def lossy_connect() -> trio.abc.Stream:
                link = LossyStream(await w.listener.connect(), random.Random(w.rng.random()), p=0.2)
                links.append(link)
                return link

            slaves = [w.slave(f"5100{i}", i, connect=lossy_connect) for i in range(3)]
            for s in slaves:
                await w.start(s)
            master = await w.add_master("9001")
            await w.online("9001", *(s.account_id for s in slaves))
            await master.run_script(15, max_open=3, pace=0.1)
            await w.settled()

            trade_ids = set(master.trades)
            for s in slaves:
                copies = fills(s)
                assert set(copies) == trade_ids and max(copies.values()) == 1, s.account_id
                assert s.broker.open_orders() == [], s.account_id
            assert sum(link.dropped for link in links) > 20, "the links dropped too little to prove anything"
            assert core.stats.get("resends", 0) > 0
            assert core.stats.get("gave_up", 0) == 0
            nursery.cancel_scope.cancel()
