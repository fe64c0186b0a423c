"""Copy receipts that say why: the whole copier with simulated terminals copies one master trade to three
slaves (one offline, one whose size is clamped up to the broker's min_lot, one whose size is skipped below
it), and ``explain``'s receipt names each outcome with its reason, its numbers and a "why" in words."""

from __future__ import annotations

from typing import get_args

import pytest
import trio
import trio.testing

from echo.adapters.store.memory import MemoryStore
from echo.app.explain import OMIT_WHY, receipt
from echo.domain.config import AgentConfig, Config
from echo.domain.copying import OmitReason
from echo.domain.policy import Policies, Policy
from echo.domain.types import Side
from tests.e2e.world import start_world

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
    store = MemoryStore()
    config = Config(agent=AgentConfig(agent_id="agent-receipts", ledger_url="memory://"), policy=POLICIES)
    offline_scope = trio.CancelScope()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, 7, config=config, store=store)
            core = w.core
            # EURUSD at each slave's broker: min_lot 0.01, lot_step 0.01
            slaves = {
                account: w.slave(account, i) for account, i in ((OFFLINE, 0), (CLAMPED, 2), (SKIPPED, 3))
            }
            await w.start(slaves[OFFLINE], offline_scope)
            for account in (CLAMPED, SKIPPED):
                await w.start(slaves[account])
            master = await w.add_master("9001")
            await w.online("9001", OFFLINE, CLAMPED, SKIPPED)
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
