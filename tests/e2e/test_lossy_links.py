"""Lossless delivery over a lossy pipe: lines between the Agent and the slave terminals are dropped at
random, in both directions. Core's reconciler re-sends what was not answered with the same command_id and
the terminal answers a repeated command_id with its stored result, so every trade is still copied exactly
once and closed."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.app.root import Copier, run_all_in_one
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, DeliverySettings, StoreConfig
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

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
    listener = MemoryPipeListener()
    config = Config(
        agent=AgentConfig(agent_id="agent-lossy"),
        delivery=DeliverySettings(max_retries=50),
        store=StoreConfig("memory://"),
    )
    rng = random.Random(seed)
    market = SimMarket(random.Random(seed))
    clock = TrioClock()
    links: list[LossyStream] = []

    async def lossy_connect() -> trio.abc.Stream:
        link = LossyStream(await listener.connect(), random.Random(rng.random()), p=0.2)
        links.append(link)
        return link

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(
                lambda task_status: run_all_in_one(
                    config, store=MemoryStore(), listener=listener, clock=clock, task_status=task_status
                )
            )
            core = copier.core
            slaves = [
                SimSlaveEA(
                    f"5100{i}",
                    slave_broker(i, market, random.Random(rng.random())),
                    lossy_connect,
                    clock.now_ms,
                )
                for i in range(3)
            ]
            for s in slaves:
                await nursery.start(s.run)
            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(rng.random())),
                listener.connect,
                clock.now_ms,
                random.Random(rng.random()),
            )
            await nursery.start(master.run)
            everyone = ["9001", *(s.account_id for s in slaves)]
            await core.wait_for(lambda: all(a in core.accounts and core.accounts[a].online for a in everyone))
            await master.run_script(15, max_open=3, pace=0.1)
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)

            trade_ids = set(master.trades)
            for s in slaves:
                fills = Counter(
                    r.trade_id for r in s.results.values() if isinstance(r, m.ExecutionResult) and r.success
                )
                assert set(fills) == trade_ids and max(fills.values()) == 1, s.account_id
                assert s.broker.open_orders() == [], s.account_id
            assert sum(link.dropped for link in links) > 20, "the links dropped too little to prove anything"
            assert core.stats.get("resends", 0) > 0
            assert core.stats.get("gave_up", 0) == 0
            nursery.cancel_scope.cancel()
