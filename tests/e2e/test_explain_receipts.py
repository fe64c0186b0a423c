"""Copy receipts that say why: the whole copier with simulated terminals copies one master trade to three
slaves (one offline, one whose size is clamped up to the broker's min_lot, one whose size is skipped below
it), and ``explain``'s receipt names each outcome with its reason, its numbers and a "why" in words."""

from __future__ import annotations

import random
from typing import get_args

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.app.explain import OMIT_WHY, receipt
from echo.app.root import Copier, run_all_in_one
from echo.domain.config import AgentConfig, Config
from echo.domain.copying import OmitReason
from echo.domain.policy import Policies, Policy
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

pytestmark = pytest.mark.e2e

OFFLINE, CLAMPED, SKIPPED = "51001", "51002", "51003"
POLICIES = Policies(
    Policy(),
    {
        OFFLINE: Policy(max_spread=1000),  # a spread limit: entries need the slave's live quote
        CLAMPED: Policy(
            sizing="multiplier", lot_multiplier=0.7, min_lot_action="clamp", max_risk_multiple=2.0
        ),
        SKIPPED: Policy(sizing="multiplier", lot_multiplier=0.7),
    },
)


async def test_receipts_name_an_offline_slave_and_how_each_size_came_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryPipeListener()
    store = MemoryStore()
    config = Config(agent=AgentConfig(agent_id="agent-receipts", ledger_url="memory://"), policy=POLICIES)
    rng = random.Random(7)
    market = SimMarket(random.Random(7))
    clock = TrioClock()
    offline_scope = trio.CancelScope()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            copier: Copier = await nursery.start(
                lambda task_status: run_all_in_one(
                    config, store=store, listener=listener, clock=clock, task_status=task_status
                )
            )
            core = copier.core
            # EURUSD at each slave's broker: min_lot 0.01, lot_step 0.01
            slaves = {
                account: SimSlaveEA(
                    account,
                    slave_broker(i, market, random.Random(rng.random())),
                    listener.connect,
                    clock.now_ms,
                )
                for account, i in ((OFFLINE, 0), (CLAMPED, 2), (SKIPPED, 3))
            }

            async def run_until_offline(task_status: trio.TaskStatus[None]) -> None:
                with offline_scope:
                    await slaves[OFFLINE].run(task_status=task_status)

            await nursery.start(run_until_offline)
            for account in (CLAMPED, SKIPPED):
                await nursery.start(slaves[account].run)
            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(rng.random())),
                listener.connect,
                clock.now_ms,
                random.Random(rng.random()),
            )
            await nursery.start(master.run)
            everyone = ("9001", OFFLINE, CLAMPED, SKIPPED)
            await core.wait_for(lambda: all(a in core.accounts and core.accounts[a].online for a in everyone))
            await trio.sleep(2)  # every slave has sent quotes
            offline_scope.cancel()
            await core.wait_for(lambda: not core.accounts[OFFLINE].online)
            await trio.sleep(6)  # its last quote is older than quote_max_age_ms
            trade_id = await master.open("EURUSD", Side.BUY, 0.01)
            await core.wait_for(lambda: trade_id in core.trades and core.in_flight == 0)
            nursery.cancel_scope.cancel()

    r = await receipt(store, trade_id)
    by_slave = {s["account_id"]: s for s in r["slaves"]}
    assert (r["copied"], r["omitted"]) == (1, 2)

    offline = by_slave[OFFLINE]
    assert (offline["decision"], offline["reason"]) == ("omit", "slave_offline")
    assert offline["detail"]["needs"] == "quote"
    assert offline["why"].startswith("terminal offline") and "5000 ms" in offline["why"]

    clamped = by_slave[CLAMPED]
    assert clamped["decision"] == "copy" and clamped["lots"] == 0.01
    assert clamped["detail"]["sized"] == "min_lot" and clamped["detail"]["raw_lots"] == 0.007
    assert clamped["execution"]["status"] == "ok"
    assert "raised from 0.0 to min_lot" in clamped["why"] and "1.4286x" in clamped["why"]

    skipped = by_slave[SKIPPED]
    assert (skipped["decision"], skipped["reason"]) == ("omit", "lot_below_min_lot")
    assert skipped["why"] == "0.007 lots < min 0.01 (min_lot_action = skip)"


def test_every_omission_reason_has_a_why() -> None:
    assert set(OMIT_WHY) == set(get_args(OmitReason))
    for reason, why in OMIT_WHY.items():
        assert why({}).strip(), reason
