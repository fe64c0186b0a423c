"""The simulated EAs over in-memory streams, driven by a small fake agent that speaks the codec."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio.testing

from echo.domain import ids
from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.domain.types import Role, Side
from echo.pipe.codec import EA_TO_AGENT, Decoded, LineDecoder, encode
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA

NOW = 1_700_000_000_000
ACCOUNT = "51234567"


def now_ms() -> int:
    return NOW + int(trio.current_time() * 1000)


class FakeAgent:
    """The agent's end of one EA connection: decodes what the EA writes, writes what the test says."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = LineDecoder(EA_TO_AGENT)
        self.unread: deque[Decoded] = deque()
        self.lines: list[Decoded] = []

    async def send(self, payload: object) -> None:
        await self.stream.send_all(encode(payload, NOW))

    async def send_raw(self, line: bytes) -> None:
        await self.stream.send_all(line)

    async def next(self, *types: str) -> Decoded:
        """The next line of one of ``types`` (any type when empty); lines of other types are skipped."""
        while True:
            while self.unread:
                line = self.unread.popleft()
                if not types or line.type in types:
                    return line
            data = await self.stream.receive_some()
            assert data, "EA closed the connection"
            for event in self.decoder.feed(bytes(data)):
                assert isinstance(event, Decoded), event
                self.unread.append(event)
                self.lines.append(event)


def connector() -> tuple[Callable[[], Awaitable[trio.abc.Stream]], Callable[[], FakeAgent]]:
    """A ``connect`` for an EA and a function that makes the next connection available to it."""
    send, receive = trio.open_memory_channel[trio.abc.Stream](10)

    async def connect() -> trio.abc.Stream:
        return await receive.receive()

    def accept() -> FakeAgent:
        ea_side, agent_side = trio.testing.memory_stream_pair()
        send.send_nowait(ea_side)
        return FakeAgent(agent_side)

    return connect, accept


def new_id(rng: random.Random) -> str:
    return ids.uuid7(NOW, rng.randbytes(10))


def trace(rng: random.Random) -> str:
    return ids.trace_id_from(rng.randbytes(16))


def execute(rng: random.Random, symbol: str = "XAUUSD.m", lots: float = 0.1, **kw: object) -> m.ExecuteOrder:
    return m.ExecuteOrder(
        command_id=new_id(rng),
        trade_id=new_id(rng),
        trace_id=trace(rng),
        symbol=symbol,
        side=Side.BUY,
        lot_size=lots,
        magic_number=9,
        comment="echo:trade-1",
        **kw,  # type: ignore[arg-type]
    )


def slave_setup(**kw: object) -> tuple[SimSlaveEA, Callable[[], FakeAgent], list[tuple[str, str, int]]]:
    market = SimMarket(random.Random(1))
    received: list[tuple[str, str, int]] = []
    connect, accept = connector()
    slave = SimSlaveEA(
        ACCOUNT,
        slave_broker(0, market, random.Random(2)),
        connect,
        now_ms,
        on_execute_received=lambda *a: received.append(a),
        **kw,  # type: ignore[arg-type]
    )
    return slave, accept, received


# --------------------------------------------------------------------------------------------- slave


async def test_slave_handshake_reports_broker_specs() -> None:
    slave, accept, _ = slave_setup()
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        hs = (await agent.next()).payload
        assert isinstance(hs, m.Handshake)
        assert (hs.account_id, hs.role, hs.protocol_version) == (ACCOUNT, Role.SLAVE, m.PROTOCOL_VERSION)
        assert hs.client_semver == "0.1.0"
        assert hs.capabilities.features == ["spec_report/v1", "quotes/250ms"]
        assert hs.symbols == list(slave.broker.specs.values())
        assert {s.broker_symbol for s in hs.symbols} == {"XAUUSD.m", "EURUSD.m", "GER30.m", "US100.m"}
        assert slave.connected
        nursery.cancel_scope.cancel()


async def test_slave_executes_acks_first_and_answers_repeats_from_memory() -> None:
    slave, accept, received = slave_setup()
    rng = random.Random(5)
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        await agent.next("handshake")
        cmd = execute(rng, stop_loss=2300.0, take_profit=2400.0)
        await agent.send(cmd)
        ack = (await agent.next("pipe_delivery_ack", "execution_result")).payload
        assert ack == m.PipeDeliveryAck(cmd.command_id, cmd.trace_id, m.DeliveryStatus.OK)
        assert [(t, a) for t, a, _ in received] == [(cmd.trade_id, ACCOUNT)]
        result = (await agent.next("pipe_delivery_ack", "execution_result")).payload
        assert isinstance(result, m.ExecutionResult)
        assert result.success and result.error_code is ErrorCode.NO_ERROR
        assert (result.command_id, result.trade_id, result.executed_lots) == (
            cmd.command_id,
            cmd.trade_id,
            0.1,
        )
        [order] = slave.broker.open_orders()
        assert (order.ticket, order.comment, order.magic_number) == (result.ticket, "echo:trade-1", 9)
        assert result.executed_price == order.open_price
        assert result.executed_at_ms is not None

        # the same command again (a retry): acked and answered with the stored result, not executed again
        await agent.send(dataclasses.replace(cmd, attempt=2))
        assert (await agent.next("pipe_delivery_ack", "execution_result")).type == "pipe_delivery_ack"
        assert (await agent.next("pipe_delivery_ack", "execution_result")).payload == result
        assert len(slave.broker.open_orders()) == 1
        assert slave.executed == 1
        assert len(received) == 1
        assert slave.results == {cmd.command_id: result}
        nursery.cancel_scope.cancel()


async def test_slave_reports_broker_rejections() -> None:
    slave, accept, _ = slave_setup()
    rng = random.Random(6)
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        for cmd, mt4, code in [
            (execute(rng, lots=0.005), 131, ErrorCode.ERR_INVALID_TRADE_VOLUME),
            (execute(rng, symbol="XAUUSD"), 4106, ErrorCode.ERR_UNKNOWN_SYMBOL),
            (execute(rng, stop_loss=9999.0), 130, ErrorCode.ERR_INVALID_STOPS),
        ]:
            await agent.send(cmd)
            result = (await agent.next("execution_result")).payload
            assert isinstance(result, m.ExecutionResult)
            assert (result.success, result.mt4_error, result.error_code) == (False, mt4, code)
            assert result.command_id == cmd.command_id and result.error_message
        assert slave.broker.open_orders() == []
        assert slave.executed == 0
        nursery.cancel_scope.cancel()


async def test_slave_partial_close_and_modify() -> None:
    slave, accept, _ = slave_setup()
    rng = random.Random(7)
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        opened = execute(rng, symbol="GER30.m", lots=0.5)
        await agent.send(opened)
        ticket = (await agent.next("execution_result")).payload.ticket

        def close(t: int, lots: float) -> m.CloseOrder:
            return m.CloseOrder(new_id(rng), opened.trade_id, opened.trace_id, t, "GER30.m", lots, 9)

        await agent.send(close(ticket, 0.2))
        partial = (await agent.next("close_result")).payload
        assert isinstance(partial, m.CloseResult) and partial.success
        assert (partial.ticket, partial.closed_lots, partial.remaining_lots) == (ticket, 0.2, 0.3)
        assert partial.new_ticket is not None and partial.close_price
        [rest] = slave.broker.open_orders()
        assert (rest.ticket, rest.lots, rest.comment) == (partial.new_ticket, 0.3, "echo:trade-1")

        bid, _ = slave.broker.quote("GER30.m")
        modify = m.ModifyOrder(
            new_id(rng), opened.trade_id, opened.trace_id, rest.ticket, "GER30.m", bid - 50, bid + 50
        )
        await agent.send(modify)
        modified = (await agent.next("modify_result")).payload
        assert isinstance(modified, m.ModifyResult) and modified.success
        assert (
            (modified.stop_loss, modified.take_profit)
            == (rest.stop_loss, rest.take_profit)
            == (bid - 50, bid + 50)
        )

        bad = m.ModifyOrder(
            new_id(rng), opened.trade_id, opened.trace_id, rest.ticket, "GER30.m", bid + 1, None
        )
        await agent.send(bad)
        refused = (await agent.next("modify_result")).payload
        assert (refused.success, refused.mt4_error, refused.error_code) == (
            False,
            130,
            ErrorCode.ERR_INVALID_STOPS,
        )

        # the old ticket is already closed: the account history answers (with its remainder), no new fill
        await agent.send(close(ticket, 0.3))
        gone = (await agent.next("close_result")).payload
        assert (gone.success, gone.new_ticket) == (True, rest.ticket)
        await agent.send(close(987654, 0.3))  # a ticket this account never had
        unknown = (await agent.next("close_result")).payload
        assert (unknown.success, unknown.mt4_error, unknown.error_code) == (
            False,
            4108,
            ErrorCode.ERR_INVALID_TICKET,
        )

        await agent.send(close(rest.ticket, 0.3))
        final = (await agent.next("close_result")).payload
        assert final.success and (final.closed_lots, final.new_ticket, final.remaining_lots) == (
            0.3,
            None,
            0.0,
        )
        assert slave.broker.open_orders() == []
        assert (slave.executed, slave.closed, slave.modified) == (1, 2, 1)
        nursery.cancel_scope.cancel()


async def test_slave_reports_quotes_snapshots_and_heartbeats(autojump_clock: trio.testing.MockClock) -> None:
    slave, accept, _ = slave_setup()
    lines: list[Decoded] = []
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        await agent.send(execute(random.Random(8)))
        start = trio.current_time()
        with trio.move_on_after(2.1):
            while True:
                lines.append(await agent.next())
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start >= 2.1
    quotes = [line.payload for line in lines if line.type == "quotes"]
    snapshots = [line.payload for line in lines if line.type == "state_snapshot"]
    assert len(quotes) == 8
    assert len(snapshots) == 2
    assert len([line for line in lines if line.type == "heartbeat"]) == 1
    for q in quotes:
        assert {x.symbol for x in q.quotes} == set(slave.broker.specs)
        assert all(0 < x.bid <= x.ask for x in q.quotes)
    snap = snapshots[-1]
    assert isinstance(snap, m.StateSnapshot)
    [position] = snap.positions
    assert (position.symbol, position.lots, position.comment) == ("XAUUSD.m", 0.1, "echo:trade-1")
    assert {tv.symbol for tv in snap.tick_values} == set(slave.broker.specs)
    assert snap.balance == 10_000.0 and snap.currency == "USD"


async def test_slave_tolerates_agent_messages_and_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    slave, accept, received = slave_setup(reconnect_delay=0.2)
    rng = random.Random(9)
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        await agent.next("handshake")
        tid, tr = new_id(rng), trace(rng)
        await agent.send(m.TradeIntentAck(tid, tr, m.AckStatus.OK))
        await agent.send(m.DeliveryConfig(2000, 500, 3, 5000))
        await agent.send(m.ErrorReply("ERR_PROTOCOL_UNEXPECTED_MESSAGE", "nope"))
        await agent.send(m.Heartbeat(3))
        await agent.send_raw(b"{not json\n")
        cmd = execute(rng)
        await agent.send(cmd)
        first = (await agent.next("execution_result")).payload
        assert slave.delivery_config == m.DeliveryConfig(2000, 500, 3, 5000)
        assert slave.heartbeats_received == 1
        assert [e.code for e in slave.errors_received] == [
            "ERR_PROTOCOL_UNEXPECTED_MESSAGE",
            "ERR_PROTOCOL_MALFORMED_JSON",
        ]

        await agent.stream.aclose()
        second = accept()
        hs = (await second.next()).payload
        assert isinstance(hs, m.Handshake) and hs.account_id == ACCOUNT
        assert slave.connections == 2
        # a retry of an executed command on the new connection: answered from memory
        await second.send(cmd)
        assert (await second.next("execution_result")).payload == first
        assert slave.executed == 1 and len(received) == 1
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------- master


def master_setup(seed: int = 11, **kw: object) -> tuple[SimMasterEA, Callable[[], FakeAgent]]:
    market = SimMarket(random.Random(seed))
    connect, accept = connector()
    broker: SimBroker = master_broker(market, random.Random(seed + 1))
    master = SimMasterEA(
        "7001",
        broker,
        connect,
        now_ms,
        random.Random(seed + 2),
        symbol_mappings={"XAUUSD": "XAUUSD"},
        **kw,  # type: ignore[arg-type]
    )
    return master, accept


async def ack_everything(agent: FakeAgent) -> None:
    while True:
        line = await agent.next("trade_intent", "trade_close", "trade_modify")
        p = line.payload
        event_id = None if isinstance(p, m.TradeIntent) else p.event_id
        await agent.send(m.TradeIntentAck(p.trade_id, p.trace_id, m.AckStatus.OK, event_id=event_id))


async def test_master_script_reports_every_event_and_ends_flat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    master, accept = master_setup()
    n_trades = 16
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(master.run)
        nursery.start_soon(ack_everything, agent)
        await master.run_script(n_trades, max_open=3, pace=0.05)
        await master.wait_all_acked()
        nursery.cancel_scope.cancel()

    hs = agent.lines[0].payload
    assert isinstance(hs, m.Handshake)
    assert (hs.role, hs.protocol_version, hs.symbol_mappings) == (
        Role.MASTER,
        m.PROTOCOL_VERSION,
        {"XAUUSD": "XAUUSD"},
    )
    assert hs.symbols == [], "a master reports its symbol_mappings, not specs (as conformance/master_session)"

    events = [line.payload for line in agent.lines if line.type.startswith("trade_")]
    intents = [e for e in events if isinstance(e, m.TradeIntent)]
    closes = [e for e in events if isinstance(e, m.TradeClose)]
    modifies = [e for e in events if isinstance(e, m.TradeModify)]
    assert len(intents) == len({i.trade_id for i in intents}) == n_trades
    assert all(e.attempt == 1 for e in events)

    # follow every trade's ticket and size through its events, in wire order
    state = {i.trade_id: (i.ticket, i.lot_size) for i in intents}
    for e in events:
        if isinstance(e, m.TradeIntent):
            continue
        ticket, lots = state[e.trade_id]
        assert e.ticket == ticket
        if isinstance(e, m.TradeClose):
            assert round(e.lot_size + e.remaining_lots, 2) == lots
            state[e.trade_id] = (e.new_ticket or 0, e.remaining_lots)
    assert all(lots == 0 for _, lots in state.values())
    partials = [c for c in closes if c.is_partial]
    assert all(c.new_ticket is not None for c in partials)
    assert len(closes) - len(partials) == n_trades
    assert (master.trades_opened, master.partials, master.modifies, master.closes) == (
        n_trades,
        len(partials),
        len(modifies),
        n_trades,
    )
    assert partials and modifies, "the seed should exercise partial closes and modifies"
    assert master.broker.open_orders() == [] and master.open_trades() == []
    assert master.acked == {i.trade_id for i in intents} | {e.event_id for e in closes + modifies}
    assert master.pending == 0
    assert set(master.intent_written_ns) == {i.trade_id for i in intents}
    for i in intents:
        spec = master.broker.specs[i.symbol]
        assert spec.lots_valid(i.lot_size) and 0.1 <= i.lot_size <= 1.0
        assert i.stop_loss is not None and i.take_profit is not None
        below = i.side is Side.BUY
        assert (i.stop_loss < i.price) == below and (i.take_profit > i.price) == below
        assert spec.points_between(i.stop_loss, i.price) >= 250


async def test_master_outbox_survives_disconnects(autojump_clock: trio.testing.MockClock) -> None:
    master, accept = master_setup(reconnect_delay=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(master.run)
        trade_id = await master.open("XAUUSD", Side.BUY, 0.3)
        assert master.pending == 1 and master.intent_written_ns == {}

        first = accept()
        assert (await first.next()).type == "handshake"
        intent = (await first.next()).payload
        assert isinstance(intent, m.TradeIntent)
        assert (intent.trade_id, intent.attempt, intent.lot_size) == (trade_id, 1, 0.3)
        assert trade_id in master.intent_written_ns

        # no ack; the connection drops; the master keeps trading meanwhile
        await first.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert not master.connected
        await master.close(trade_id)
        assert master.pending == 2

        second = accept()
        assert (await second.next()).type == "handshake"
        again = (await second.next()).payload
        close = (await second.next()).payload
        assert isinstance(again, m.TradeIntent) and isinstance(close, m.TradeClose)
        assert (again.trade_id, again.trace_id, again.attempt) == (trade_id, intent.trace_id, 2)
        assert (close.trade_id, close.attempt, close.remaining_lots, close.lot_size) == (
            trade_id,
            1,
            0.0,
            0.3,
        )

        # RETRY: the line comes again with attempt + 1; OK settles it
        await second.send(m.TradeIntentAck(trade_id, intent.trace_id, m.AckStatus.RETRY))
        retried = (await second.next("trade_intent")).payload
        assert retried.attempt == 3
        await second.send(m.TradeIntentAck(trade_id, intent.trace_id, m.AckStatus.DUPLICATE))
        await second.send(
            m.TradeIntentAck(
                trade_id, intent.trace_id, m.AckStatus.REJECTED, close.event_id, ErrorCode.ERR_UNKNOWN, "no"
            )
        )
        await master.wait_all_acked()
        assert master.acked == {trade_id}
        assert set(master.rejected) == {close.event_id}
        assert master.connections == 2
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------- delivery


async def no_more(agent: FakeAgent, *types: str, seconds: float = 120.0) -> None:
    """Nothing of ``types`` arrives for ``seconds`` (other lines are read and skipped)."""
    with trio.move_on_after(seconds):
        line = await agent.next(*types)
        raise AssertionError(f"unexpected {line.type}: {line.payload}")


async def test_master_resends_an_unacked_intent_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):  # a regression fails instead of hanging
        master, accept = master_setup()
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(master.run)
            await agent.next("handshake")
            trade_id = await master.open("XAUUSD", Side.BUY, 0.2)
            sent_at = trio.current_time()
            first = (await agent.next("trade_intent")).payload
            assert (first.trade_id, first.attempt) == (trade_id, 1)

            # the agent "loses" the line: no ack. After ack_timeout + backoff (defaults: 1000 + 500 ms) it
            # comes again under the same ids with attempt 2.
            again = (await agent.next("trade_intent")).payload
            assert round(trio.current_time() - sent_at, 3) == 1.5
            assert again == dataclasses.replace(first, attempt=2)
            assert master.resends == 1 and master.pending == 1

            await agent.send(m.TradeIntentAck(trade_id, first.trace_id, m.AckStatus.OK))
            await master.wait_all_acked()
            assert master.acked == {trade_id} and master.pending == 0
            await no_more(agent, "trade_intent")
            assert master.resends == 1
            nursery.cancel_scope.cancel()


async def test_master_retry_ack_resends_and_rejected_ends(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):  # a regression fails instead of hanging
        master, accept = master_setup()
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(master.run)
            await agent.next("handshake")
            trade_id = await master.open("EURUSD", Side.SELL, 0.5)
            first = (await agent.next("trade_intent")).payload
            await agent.send(m.TradeIntentAck(trade_id, first.trace_id, m.AckStatus.RETRY))
            acked_at = trio.current_time()
            retried = (await agent.next("trade_intent")).payload
            assert (retried.trade_id, retried.attempt) == (trade_id, 2)
            assert (
                round(trio.current_time() - acked_at, 3) == 0.5
            )  # the RETRY ack re-armed the timer: retry_backoff_ms (PROTOCOL.md X9)

            await agent.send(
                m.TradeIntentAck(
                    trade_id, first.trace_id, m.AckStatus.REJECTED, None, ErrorCode.ERR_UNKNOWN, "no"
                )
            )
            await master.wait_all_acked()
            assert set(master.rejected) == {trade_id} and master.acked == set()
            assert master.pending == 0
            await no_more(agent, "trade_intent")
            assert master.resends == 1
            nursery.cancel_scope.cancel()


async def test_master_follows_delivery_config_and_pauses_after_max_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):  # a regression fails instead of hanging
        master, accept = master_setup(reconnect_delay=0.2)
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(master.run)
            await agent.next("handshake")
            await agent.send(m.DeliveryConfig(200, 100, 3, 2000))
            await trio.testing.wait_all_tasks_blocked()
            assert master.delivery_config == m.DeliveryConfig(200, 100, 3, 2000)
            assert (master.settings.ack_timeout_ms, master.settings.max_retries) == (200, 3)

            trade_id = await master.open("XAUUSD", Side.BUY, 0.1)
            times = []
            for attempt in (1, 2, 3):
                line = (await agent.next("trade_intent")).payload
                assert (line.trade_id, line.attempt) == (trade_id, attempt)
                times.append(trio.current_time())
            # waits of ack_timeout + backoff * 2**(attempt-1): 300 ms, then 400 ms
            assert [round(times[1] - times[0], 3), round(times[2] - times[1], 3)] == [0.3, 0.4]
            # three sends went unanswered: paused (still pending, never dropped) until the next connection
            await no_more(agent, "trade_intent")
            assert master.pending == 1

            await agent.stream.aclose()
            second = accept()
            await second.next("handshake")
            line = (await second.next("trade_intent")).payload
            assert (line.trade_id, line.attempt) == (trade_id, 4)
            await second.send(m.TradeIntentAck(trade_id, line.trace_id, m.AckStatus.DUPLICATE))
            await master.wait_all_acked()
            assert master.acked == {trade_id} and master.resends == 3
            nursery.cancel_scope.cancel()


async def test_master_queue_file_survives_a_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    with trio.fail_after(600):  # a regression fails instead of hanging
        queue = tmp_path / "echo_master_intents_7001.jsonl"
        master, accept = master_setup(queue_path=queue, reconnect_delay=0.2)
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(master.run)
            await agent.next("handshake")
            trade_id = await master.open("XAUUSD", Side.BUY, 0.3)
            intent = (await agent.next("trade_intent")).payload
            assert intent.attempt == 1
            # the connection drops before the ack; the master closes the trade offline, then the terminal dies
            await agent.stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert not master.connected
            await master.close(trade_id)
            nursery.cancel_scope.cancel()
        records = [json.loads(line) for line in queue.read_text().splitlines()]
        keys = {r["key"] for r in records}
        assert trade_id in keys and len(keys) == 2  # the intent and the close event, both unacked
        assert master.pending == 2

        connect, accept = connector()
        restarted = SimMasterEA("7001", master.broker, connect, now_ms, random.Random(99), queue_path=queue)
        assert restarted.pending == 2
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(restarted.run)
            await agent.next("handshake")
            again = (await agent.next("trade_intent", "trade_close")).payload
            close = (await agent.next("trade_intent", "trade_close")).payload
            assert again == dataclasses.replace(intent, attempt=2)
            assert isinstance(close, m.TradeClose)
            assert (close.trade_id, close.attempt, close.lot_size, close.remaining_lots) == (
                trade_id,
                1,
                0.3,
                0.0,
            )
            assert restarted.resends == 1

            await agent.send(m.TradeIntentAck(trade_id, intent.trace_id, m.AckStatus.OK))
            await agent.send(
                m.TradeIntentAck(trade_id, intent.trace_id, m.AckStatus.OK, event_id=close.event_id)
            )
            await restarted.wait_all_acked()
            assert restarted.acked == {trade_id, close.event_id}
            nursery.cancel_scope.cancel()
        assert queue.read_text() == ""  # acked lines are gone from the file
        assert (
            SimMasterEA("7001", master.broker, connect, now_ms, random.Random(7), queue_path=queue).pending
            == 0
        )


def restarted_slave(
    broker: SimBroker, **kw: object
) -> tuple[SimSlaveEA, Callable[[], FakeAgent], list[tuple[str, str, int]]]:
    """A new terminal process on the same broker account (its memory is only what ``kw`` gives it)."""
    received: list[tuple[str, str, int]] = []
    connect, accept = connector()
    slave = SimSlaveEA(
        ACCOUNT,
        broker,
        connect,
        now_ms,
        on_execute_received=lambda *a: received.append(a),
        **kw,  # type: ignore[arg-type]
    )
    return slave, accept, received


async def test_restarted_slave_answers_a_repeated_command_from_its_state_file(tmp_path: Path) -> None:
    with trio.fail_after(10):  # a regression fails instead of hanging
        state = tmp_path / "slave_results.jsonl"
        slave, accept, _ = slave_setup(state_path=state)
        rng = random.Random(12)
        cmd = execute(rng, stop_loss=2300.0)
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(slave.run)
            await agent.send(cmd)
            result = (await agent.next("execution_result")).payload
            assert result.success
            nursery.cancel_scope.cancel()
        assert [json.loads(line)["command_id"] for line in state.read_text().splitlines()] == [cmd.command_id]

        again, accept, received = restarted_slave(slave.broker, state_path=state)
        assert again.results == {cmd.command_id: result}
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(again.run)
            await agent.next("handshake")
            await agent.send(dataclasses.replace(cmd, attempt=2))
            ack = (await agent.next("pipe_delivery_ack", "execution_result")).payload
            assert ack == m.PipeDeliveryAck(cmd.command_id, cmd.trace_id, m.DeliveryStatus.OK)
            assert (await agent.next("pipe_delivery_ack", "execution_result")).payload == result
            assert len(again.broker.open_orders()) == 1
            assert (again.executed, again.recognised, received) == (0, 0, [])
            nursery.cancel_scope.cancel()


async def test_restarted_slave_without_memory_recognises_its_position_by_comment() -> None:
    with trio.fail_after(10):  # a regression fails instead of hanging
        slave, accept, _ = slave_setup()
        rng = random.Random(13)
        plain = execute(rng)
        cmd = dataclasses.replace(plain, comment=ids.trade_comment(plain.trade_id))
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(slave.run)
            await agent.send(cmd)
            result = (await agent.next("execution_result")).payload
            assert result.success
            nursery.cancel_scope.cancel()
        [order] = slave.broker.open_orders()

        # the terminal restarts and forgot its results; the agent never saw the result and sends the command
        # again: the open order stamped with the trade_id answers it, no second position is opened
        again, accept, received = restarted_slave(slave.broker)
        assert again.results == {}
        async with trio.open_nursery() as nursery:
            agent = accept()
            await nursery.start(again.run)
            await agent.send(dataclasses.replace(cmd, attempt=2))
            assert (await agent.next("pipe_delivery_ack", "execution_result")).type == "pipe_delivery_ack"
            known = (await agent.next("execution_result")).payload
            assert isinstance(known, m.ExecutionResult) and known.success
            assert (
                known.command_id,
                known.trade_id,
                known.ticket,
                known.executed_price,
                known.executed_lots,
            ) == (
                cmd.command_id,
                cmd.trade_id,
                result.ticket,
                result.executed_price,
                result.executed_lots,
            )
            assert again.broker.open_orders() == [order]
            assert (again.executed, again.recognised, received) == (0, 1, [])

            # a repeat is now answered from memory; another magic number is another EA's trade: a new order
            await agent.send(dataclasses.replace(cmd, attempt=3))
            assert (await agent.next("execution_result")).payload == known
            other = dataclasses.replace(cmd, command_id=new_id(rng), magic_number=10)
            await agent.send(other)
            fresh = (await agent.next("execution_result")).payload
            assert fresh.success and fresh.ticket != order.ticket
            assert (again.executed, again.recognised, len(again.broker.open_orders())) == (1, 1, 2)
            nursery.cancel_scope.cancel()


async def test_slave_rechecks_spread_and_slippage_with_its_live_price() -> None:
    slave, accept, _ = slave_setup()
    rng = random.Random(6)
    async with trio.open_nursery() as nursery:
        agent = accept()
        await nursery.start(slave.run)
        await agent.next("handshake")
        bid, ask = slave.broker.quote("XAUUSD.m")
        point = slave.broker.spec("XAUUSD.m").point
        spread = (ask - bid) / point
        cases = [
            (execute(rng, max_spread_points=spread - 1), ErrorCode.ERR_SPREAD_TOO_WIDE),
            (
                execute(rng, master_price=ask - 10 * point, max_slippage_points=9),
                ErrorCode.ERR_SLIPPAGE_TOO_HIGH,
            ),
            (
                execute(rng, master_price=ask - 10 * point, max_slippage_points=10, max_spread_points=spread),
                None,
            ),
        ]
        for cmd, code in cases:
            await agent.send(cmd)
            result = (await agent.next("execution_result")).payload
            assert isinstance(result, m.ExecutionResult)
            if code is None:
                assert result.success
            else:
                assert (result.success, result.error_code) == (False, code)
                assert result.error_message.startswith("not sent:")
        assert len(slave.broker.open_orders()) == 1 and slave.refused_by_limits == 2
        nursery.cancel_scope.cancel()
