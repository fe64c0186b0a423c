"""Handshake evaluation end to end: a REJECTED account receives nothing and its master's events wait; a
symbol outside the catalog is never traded; a re-evaluation (new rules, no restart) releases what was held;
every verdict reaches the terminal and is recorded."""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

from echo.domain import messages as m
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.domain.types import Side
from tests.e2e.world import e2e_config, fills, start_world

pytestmark = pytest.mark.e2e


async def test_a_symbol_outside_the_catalog_is_never_traded_and_the_verdict_is_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = e2e_config(symbols=SymbolCatalog(frozenset({"XAUUSD", "EURUSD", "US100"}), "reject"))
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 2, config=config)
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        await w.copier.core.wait_for(lambda: slave.registration is not None)
        assert slave.registration is not None
        entries = {e.canonical_symbol: e.status for e in slave.registration.symbols}
        assert (
            entries["GER30"] is m.RegistrationStatus.REJECTED
            and entries["XAUUSD"] is m.RegistrationStatus.ACCEPTED
        )
        assert slave.registration.status is m.RegistrationStatus.WARNING
        assert slave.feedback_ms and max(slave.feedback_ms) < 150

        dax = await master.open("GER30", Side.BUY, 0.5)
        gold = await master.open("XAUUSD", Side.BUY, 0.5)
        await master.wait_all_acked()
        await w.copier.core.wait_for(lambda: w.copier.core.in_flight == 0)
        assert fills(slave) == Counter({gold: 1})
        (omitted,) = [d for d in await w.copier.store.decisions(dax)]
        assert (omitted.decision, omitted.reason) == ("omit", "symbol_rejected")
        (row,) = await w.copier.store.evaluations("51001")
        assert (row.status, row.evaluation_id) == ("WARNING", slave.registration.evaluation_id)
        by_symbol = {
            r.canonical_symbol: r.status for r in await w.copier.store.symbol_evaluations(row.evaluation_id)
        }
        assert by_symbol["GER30"] == "REJECTED"
        for t in (dax, gold):
            await master.close(t)
        await master.wait_all_acked()
        await w.settled()
        assert slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_a_rejected_account_gets_nothing_until_new_rules_accept_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Protocol version 2 is blocked: both terminals are REJECTED. The master's intent is answered RETRY (it
    keeps it), the slave receives no command. New rules are applied without a restart: both accounts are
    evaluated again, told, and the master's queued trade is copied once."""
    config = e2e_config(protocol=ProtocolPolicy(min_version=1, max_version=2, blocked_versions=(2,)))
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 2, config=config)
        core, agent = w.copier.core, w.copier.agent
        slave = await w.add_slave("51001", 0)
        master = await w.add_master("9001")
        await w.online("9001", "51001")
        await core.wait_for(lambda: slave.registration is not None and master.registration is not None)
        assert slave.registration is not None and master.registration is not None
        assert slave.registration.status is m.RegistrationStatus.REJECTED
        assert [i.code for i in master.registration.errors] == ["PROTOCOL_VERSION_UNSUPPORTED"]
        assert agent.registration["51001"] is m.RegistrationStatus.REJECTED

        trade_id = await master.open("XAUUSD", Side.BUY, 0.5)
        await core.wait_for(lambda: master.resends >= 2)
        assert master.pending == 1 and fills(slave) == Counter()
        assert core.trades == {}

        await core.set_rules(config.core, config.policies(), ProtocolPolicy(), SymbolCatalog())
        await core.wait_for(
            lambda: (
                slave.registration is not None and slave.registration.status is m.RegistrationStatus.ACCEPTED
            )
        )
        await master.wait_all_acked()
        await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 1)
        assert fills(slave) == Counter({trade_id: 1})
        assert agent.registration["51001"] is m.RegistrationStatus.ACCEPTED
        await master.close(trade_id)
        await master.wait_all_acked()
        await w.settled()
        assert slave.broker.open_orders() == []
        nursery.cancel_scope.cancel()


async def test_the_agent_blocks_a_command_for_a_rejected_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = e2e_config(protocol=ProtocolPolicy(blocked_versions=(1,)))
    async with trio.open_nursery() as nursery:
        w = await start_world(nursery, 2, config=config)
        slave = await w.add_slave("51001", 0)
        await w.online("51001")
        agent = w.copier.agent
        await w.copier.core.wait_for(lambda: "51001" in agent.registration)
        agent.registration["51001"] = m.RegistrationStatus.REJECTED  # a verdict that crossed a command
        command = m.ExecuteOrder(
            "019aba5a-2020-7f41-92c4-bef4365ac2e5",
            "019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
            "e140a19ce1a2d94cc9cae6c506bd55c0",
            "XAUUSD.m",
            Side.BUY,
            0.1,
            1,
            "echo",
        )
        agent._arrived("51001", command, 0)
        assert agent.held == {} and agent.stats["blocked_rejected_account"] == 1
        await trio.testing.wait_all_tasks_blocked()
        assert slave.executed == 0
        nursery.cancel_scope.cancel()
