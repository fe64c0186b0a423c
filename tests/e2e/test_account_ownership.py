"""An account belongs to its terminal: on a running copier's real socket, a second connection claiming a live
account is refused while the real terminal keeps receiving its commands with its own symbols; the same
terminal (its terminal_id) or a dead connection may be replaced; ``agent.token`` is enforced; when
``core.follow`` lists the accounts, any other account is REJECTED without a trace and its trades are
refused, never stored open."""

from __future__ import annotations

import random
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from echo.adapters.clock import SystemClock
from echo.adapters.pipe.unix import connect_unix
from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.sqlite import SqliteStore
from echo.app.root import Copier
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, CoreConfig, DeliverySettings
from echo.domain.ids import trace_id_from, uuid7
from echo.domain.types import Role, Side, SymbolSpec
from echo.pipe.codec import AGENT_TO_EA, Decoded, LineDecoder, encode
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.slave import SimSlaveEA
from tests.e2e.world import World, fills, master_terminal, slave_terminal, start_copier, start_world

pytestmark = pytest.mark.e2e

INTRUDER_ID = "f" * 32


class RawTerminal:
    """A hand-driven connection to the Agent: writes lines, reads the Agent's."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = LineDecoder(AGENT_TO_EA)
        self.received: list[Decoded] = []
        self.closed = False

    async def send(self, payload: object) -> None:
        await self.stream.send_all(encode(payload, SystemClock().now_ms()))

    async def read_until(self, done: Callable[[Decoded], bool]) -> Decoded:
        while True:
            for event in self.received:
                if done(event):
                    return event
            data = await self.stream.receive_some()
            if not data:
                self.closed = True
                raise AssertionError(
                    f"closed before the expected line; got {[e.type for e in self.received]}"
                )
            self.received += [e for e in self.decoder.feed(bytes(data)) if isinstance(e, Decoded)]

    async def read_to_eof(self) -> None:
        while data := await self.stream.receive_some():
            self.received += [e for e in self.decoder.feed(bytes(data)) if isinstance(e, Decoded)]
        self.closed = True

    def types(self) -> list[str]:
        return [e.type for e in self.received]


def of_type(name: str) -> Callable[[Decoded], bool]:
    return lambda e: e.type == name


def xauusd(slave: SimSlaveEA) -> str:
    return next(s.broker_symbol for s in slave.broker.specs.values() if s.broker_symbol.startswith("XAUUSD"))


class Copy:
    """A running all-in-one copier on a real Unix socket, with SQLite, a master and a slave."""

    def __init__(self, tmp_path: Path, config: Config, nursery: trio.Nursery) -> None:
        self.sock = Path(config.agent.socket_path)
        self.config, self.nursery = config, nursery
        self.store = SqliteStore.open(tmp_path / "echo.db")
        self.market = SimMarket(random.Random(1))
        self.clock = SystemClock()
        self.copier: Copier

    async def connect(self) -> trio.abc.Stream:
        return await connect_unix(self.sock)

    async def start(self) -> Copier:
        self.copier = await start_copier(self.nursery, self.config, store=self.store)
        return self.copier

    async def slave(self, account: str, token: str = "") -> SimSlaveEA:
        s = slave_terminal(account, 0, self.market, 2, self.connect, self.clock.now_ms, token=token)
        await self.nursery.start(s.run)
        return s

    async def master(self, account: str, token: str = "") -> SimMasterEA:
        ms = master_terminal(account, self.market, 3, 4, self.connect, self.clock.now_ms, token=token)
        await self.nursery.start(ms.run)
        return ms

    async def raw(self) -> RawTerminal:
        return RawTerminal(await connect_unix(self.sock))


def socket_config(tmp_path: Path, **kw: object) -> Config:
    agent = AgentConfig(
        socket_path=str(tmp_path / "agent.sock"), token=str(kw.pop("token", "")), ledger_url="memory://"
    )
    return Config(agent=agent, **kw)  # type: ignore[arg-type]


async def test_a_second_connection_cannot_take_over_a_live_account(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            c = Copy(tmp_path, socket_config(tmp_path), nursery)
            copier = await c.start()
            assert stat.S_IMODE(c.sock.stat().st_mode) == 0o600  # only the copier's user may connect
            slave = await c.slave("51001")
            master = await c.master("9001")
            core = copier.core
            await core.wait_for(lambda: all(a in core.accounts for a in ("51001", "9001")))
            real_symbol = xauusd(slave)
            assert core.accounts["51001"].symbols["XAUUSD"].broker_symbol == real_symbol

            # an intruder claims the live slave account with its own symbols and no terminal_id, then
            # with a made-up one: refused both times, its connection closed
            for terminal_id in ("", INTRUDER_ID):
                intruder = await c.raw()
                spec = SymbolSpec("XAUUSD.evil", "XAUUSD", 2, 0.01, 0.01, 0.01, 100.0, 0.01, 0, 100.0)
                await intruder.send(
                    m.Handshake("51001", Role.SLAVE, 2, symbols=[spec], terminal_id=terminal_id)
                )
                error = await intruder.read_until(of_type("error"))
                assert error.payload.code == "ERR_PROTOCOL_ACCOUNT_IN_USE"
                assert "51001" in error.payload.message and error.payload.ref_type == "handshake"
                await intruder.read_to_eof()
                assert intruder.types() == ["error"]  # no delivery_config, no registration, no command

            # the real slave still holds the account: Core's symbols are its own and it gets every command
            assert copier.agent.connections["51001"] is not None
            assert core.accounts["51001"].symbols["XAUUSD"].broker_symbol == real_symbol
            trade_ids = [await master.open("XAUUSD", Side.BUY, 0.3) for _ in range(3)]
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0 and len(slave.broker.open_orders()) == 3)
            assert {o.symbol for o in slave.broker.open_orders()} == {real_symbol}
            for t in trade_ids:
                await master.close(t)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert fills(slave) == {t: 1 for t in trade_ids}
            assert slave.broker.open_orders() == []
            assert copier.agent.stats.get("handshakes_account_in_use") == 2

            # the same terminal (its terminal_id, as after a restart with a half-open pipe) may replace
            # its own connection; the simulated terminal reconnects and presents the same id again
            same = await c.raw()
            await same.send(m.Handshake("51001", Role.SLAVE, 2, terminal_id=slave.terminal_id))
            await same.read_until(of_type("delivery_config"))
            assert "error" not in same.types()
            await same.stream.aclose()
            connections = slave.connections
            await core.wait_for(lambda: slave.connections > connections and core.accounts["51001"].online)
            assert slave.errors_received == []
            gold = await master.open("XAUUSD", Side.SELL, 0.2)
            await master.wait_all_acked()
            await core.wait_for(lambda: fills(slave)[gold] == 1)
            nursery.cancel_scope.cancel()


async def test_a_silent_connection_is_dead_and_may_be_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A connection with no line for 3 x heartbeat_interval_ms no longer holds its account."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            w: World = await start_world(nursery)
            held = RawTerminal(await w.listener.connect())
            await held.send(m.Handshake("51002", Role.SLAVE, 2, terminal_id="a" * 32))
            await held.read_until(of_type("delivery_config"))
            newcomer = RawTerminal(await w.listener.connect())
            await newcomer.send(m.Handshake("51002", Role.SLAVE, 2, terminal_id="b" * 32))
            assert (await newcomer.read_until(of_type("error"))).payload.code == "ERR_PROTOCOL_ACCOUNT_IN_USE"
            await trio.sleep(
                3 * DeliverySettings().heartbeat_interval_ms / 1000 + 0.1
            )  # the held one is silent
            newcomer = RawTerminal(await w.listener.connect())
            await newcomer.send(m.Handshake("51002", Role.SLAVE, 2, terminal_id="b" * 32))
            await newcomer.read_until(of_type("delivery_config"))
            await held.read_to_eof()  # the dead connection was closed
            assert "error" not in newcomer.types()
            nursery.cancel_scope.cancel()


async def test_agent_token_is_required_when_set(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            c = Copy(tmp_path, socket_config(tmp_path, token="s3cret-token"), nursery)
            copier = await c.start()
            for token in ("", "wrong"):
                raw = await c.raw()
                await raw.send(m.Handshake("51009", Role.SLAVE, 2, token=token))
                error = await raw.read_until(of_type("error"))
                assert error.payload.code == "ERR_PROTOCOL_UNAUTHORIZED"
                await raw.read_to_eof()
                assert raw.types() == ["error"]
            assert "51009" not in copier.core.accounts
            assert all(a.account_id != "51009" for a in await c.store.accounts())
            # terminals that present it copy as usual, and the token is neither forwarded nor stored
            slave = await c.slave("51001", token="s3cret-token")
            master = await c.master("9001", token="s3cret-token")
            core = copier.core
            await core.wait_for(lambda: all(a in core.accounts for a in ("51001", "9001")))
            t = await master.open("XAUUSD", Side.BUY, 0.1)
            await master.wait_all_acked()
            await core.wait_for(lambda: fills(slave)[t] == 1)
            rows = await c.store.accounts()
            assert rows and all(b"s3cret" not in r.handshake.encode() for r in rows)
            assert all(slave.terminal_id not in r.handshake for r in rows)
            nursery.cancel_scope.cancel()


def new_intent(ticket: int) -> m.TradeIntent:
    trade_id = uuid7(SystemClock().now_ms(), random.randbytes(10))
    return m.TradeIntent(
        trade_id, trace_id_from(random.randbytes(16)), "XAUUSD", Side.BUY, 0.1, 2400.0, 1, ticket
    )


async def test_accounts_outside_core_follow_are_rejected_without_a_trace(tmp_path: Path) -> None:
    config = socket_config(tmp_path, core=CoreConfig(follow={"9001": ["51001"]}))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            c = Copy(tmp_path, config, nursery)
            copier = await c.start()
            core = copier.core
            slave = await c.slave("51001")
            master = await c.master("9001")
            await core.wait_for(lambda: all(a in core.accounts for a in ("51001", "9001")))

            # an invented slave, an invented master, and a listed slave posing as a master
            for account, role in (("66666", Role.SLAVE), ("7777", Role.MASTER), ("51001", Role.MASTER)):
                raw = await c.raw()
                await raw.send(m.Handshake(account, role, 2, terminal_id="c" * 32))
                if account == "51001":  # the live slave's account: refused by the Agent first
                    error = await raw.read_until(of_type("error"))
                    assert error.payload.code == "ERR_PROTOCOL_ACCOUNT_IN_USE"
                    continue
                verdict = (await raw.read_until(of_type("symbol_registration_result"))).payload
                assert verdict.status is m.RegistrationStatus.REJECTED
                assert [i.code for i in verdict.errors] == ["ACCOUNT_NOT_CONFIGURED"]
                if role is Role.MASTER:
                    # a trade from a master that is not allowed is refused, not stored open
                    intent = new_intent(8_000_001)
                    await raw.send(intent)
                    ack = (await raw.read_until(of_type("trade_intent_ack"))).payload
                    assert (ack.trade_id, ack.status) == (intent.trade_id, m.AckStatus.REJECTED)
                    assert "core.follow" in ack.message
                    assert intent.trade_id not in core.trades
                    assert await c.store.trades(limit=100) == []
                await raw.stream.aclose()

            # nothing of them is kept: no accounts row, no evaluation, nothing in Core's or the Agent's memory
            agent = copier.agent
            await core.wait_for(lambda: not {"66666", "7777"} & {*agent.registration, *agent.connections})
            assert sorted(core.accounts) == ["51001", "9001"]
            assert sorted(a.account_id for a in await c.store.accounts()) == ["51001", "9001"]
            for account in ("66666", "7777"):
                assert await c.store.evaluations(account) == []

            # the listed accounts copy as usual
            t = await master.open("XAUUSD", Side.BUY, 0.1)
            await master.wait_all_acked()
            await core.wait_for(lambda: fills(slave)[t] == 1)
            nursery.cancel_scope.cancel()


async def test_a_master_dropped_from_core_follow_has_its_intents_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A known master the configuration no longer lists: its new trades are refused, not stored open."""
    store = MemoryStore()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, core=CoreConfig(follow={"9001": ["51001"]}), store=store)
            slave = await w.add_slave("51001", 0)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            core = w.copier.core
            await core.set_rules(
                CoreConfig(follow={"9002": ["51001"]}), core.policies, core.protocol, core.catalog
            )
            t = await master.open("XAUUSD", Side.BUY, 0.1)
            await master.wait_all_acked()
            assert (
                master.rejected[t].status is m.AckStatus.REJECTED
                and "core.follow" in master.rejected[t].message
            )
            assert t not in core.trades and await store.trades(limit=100) == []
            assert fills(slave) == {}
            nursery.cancel_scope.cancel()
