"""Core's engine without trio: ``engine.apply`` is synchronous, so master events, slave results and the
Agents' acks are fed in directly and the transaction it returns (rows to persist, messages to send) is
checked row by row. A hand-set clock and a seeded id source make every run the same; no sockets, no store."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.config import CoreConfig
from echo.domain.errors import ErrorCode
from echo.domain.ids import uuid7
from echo.domain.policy import Policies, Policy
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.domain.types import Role, Side, SymbolSpec
from echo.services.core import engine
from echo.services.core.context import Context
from echo.services.core.tx import Tx, merge
from echo.services.ids import IdFactory

T0 = 1_764_000_000_000
DAY = 86_400_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT = "agent-1"
MASTER, SLAVE, OTHER = "9001", "51001", "9002"
C1 = uuid7(T0, bytes([1] * 10))
"""A master close event_id."""
M1 = uuid7(T0, bytes([2] * 10))
"""A master modify event_id."""
EURUSD = SymbolSpec("EURUSD", "EURUSD", 5, 0.00001, 0.00001, 0.01, 100.0, 0.01, 0)


class HandClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


@dataclass
class World:
    """One engine context and what it scheduled on the shell's timers."""

    ctx: Context
    clock: HandClock
    scheduled: list[tuple[int, str]] = field(default_factory=list)

    def apply(self, *msgs: m.AgentToCore) -> Tx:
        return engine.apply(self.ctx, [(AGENT, msg) for msg in msgs])

    def from_account(self, account: str, msg: object) -> Tx:
        return self.apply(m.FromAccount(account, msg, self.clock.now))  # type: ignore[arg-type]


def world(config: CoreConfig | None = None) -> World:
    clock = HandClock(T0)
    cfg = config or CoreConfig()
    w = World(
        Context(
            clock,
            IdFactory(clock, random.Random(7)),
            cfg,
            Policies(Policy(fixed_lot=cfg.fixed_lot, copy_sl_tp=cfg.copy_sl_tp)),
            ProtocolPolicy(),
            SymbolCatalog(),
            delivery.Settings(ack_timeout_ms=1000, retry_backoff_ms=500, max_retries=2),
            lambda at, key: None,
        ),
        clock,
    )
    w.ctx.schedule = lambda at, key: w.scheduled.append((at, key))
    return w


def online(w: World, *accounts: tuple[str, Role]) -> None:
    for account, role in accounts:
        symbols = [EURUSD] if role is Role.SLAVE else []
        hs = m.Handshake(account, role, m.PROTOCOL_VERSION, symbols=symbols)
        w.apply(m.AccountOnline(AGENT, hs, w.clock.now))


def trade_id(age_ms: int = 10) -> str:
    return uuid7(T0 - age_ms, bytes(10))


def intent(tid: str) -> m.TradeIntent:
    return m.TradeIntent(tid, TRACE, "EURUSD", Side.BUY, 0.1, 1.1, 7, 100)


def close(tid: str, event_id: str) -> m.TradeClose:
    return m.TradeClose(event_id, tid, TRACE, 100, "EURUSD", 0.1, 0.0, 1.1, 7)


def modify(tid: str, event_id: str) -> m.TradeModify:
    return m.TradeModify(event_id, tid, TRACE, 100, "EURUSD", 7, 1.05, 1.2)


def acks(tx: Tx) -> list[m.AckStatus]:
    """The acknowledgements to masters, in order (sent after the commit, or directly to an Agent)."""
    out = [s.message for s in tx.sends] + [d.message for _, d in tx.direct]
    return [a.status for a in out if isinstance(a, m.TradeIntentAck)]


def commands(tx: Tx) -> list[str]:
    return [type(s.message).__name__ for s in tx.sends if isinstance(s.message, m.Command)]


def opened(w: World, tid: str) -> str:
    """Open ``tid`` at the master; the command_id of its copy to the slave."""
    tx = w.from_account(MASTER, intent(tid))
    (row,) = tx.batch.commands
    return row.command_id


def filled(w: World, tid: str, command_id: str, ticket: int = 555) -> Tx:
    res = m.ExecutionResult(
        command_id, tid, TRACE, True, ErrorCode.NO_ERROR, ticket=ticket, executed_price=1.1, executed_lots=0.1
    )
    return w.from_account(SLAVE, res)


# ============================================================================ master events, as a table

Setup = Callable[[World, str], None]


def nothing(w: World, tid: str) -> None:
    pass


def open_it(w: World, tid: str) -> None:
    opened(w, tid)


def open_and_fill(w: World, tid: str) -> None:
    filled(w, tid, opened(w, tid))


def open_and_close(w: World, tid: str) -> None:
    filled(w, tid, opened(w, tid))
    (row,) = w.from_account(MASTER, close(tid, C1)).batch.commands
    done = m.CloseResult(row.command_id, tid, TRACE, True, ErrorCode.NO_ERROR, 555, closed_lots=0.1)
    w.from_account(SLAVE, done)
    assert tid not in w.ctx.state.trades  # flat and idle: forgotten, its id kept for dedupe


def closed_seen(w: World, tid: str) -> None:
    open_it(w, tid)
    w.from_account(MASTER, close(tid, C1))


@dataclass(frozen=True)
class MasterCase:
    name: str
    setup: Setup
    event: Callable[[str], object]
    acks: list[m.AckStatus]
    events: list[str]
    commands: list[str]
    age_ms: int = 10
    sender: str = MASTER


MASTER_CASES = [
    MasterCase(
        "a new intent is copied", nothing, intent, [m.AckStatus.OK], ["trade_opened"], ["ExecuteOrder"]
    ),
    MasterCase("a repeated intent is a duplicate", open_it, intent, [m.AckStatus.DUPLICATE], [], []),
    MasterCase(
        "an intent older than the dedupe window is refused",
        nothing,
        intent,
        [m.AckStatus.REJECTED],
        ["intent_refused"],
        [],
        age_ms=2 * DAY,
    ),
    MasterCase(
        "a close before its open is sent again later",
        nothing,
        lambda tid: close(tid, C1),
        [m.AckStatus.RETRY],
        [],
        [],
    ),
    MasterCase(
        "a close while the open is in flight waits behind it",
        open_it,
        lambda tid: close(tid, C1),
        [m.AckStatus.OK],
        ["master_close"],
        [],
    ),
    MasterCase(
        "a close of a filled copy closes its ticket",
        open_and_fill,
        lambda tid: close(tid, C1),
        [m.AckStatus.OK],
        ["master_close", "op_applied"],
        ["CloseOrder"],
    ),
    MasterCase(
        "a close seen before is a duplicate",
        closed_seen,
        lambda tid: close(tid, C1),
        [m.AckStatus.DUPLICATE],
        [],
        [],
    ),
    MasterCase(
        "a modify of a filled copy is mirrored",
        open_and_fill,
        lambda tid: modify(tid, M1),
        [m.AckStatus.OK],
        ["master_modify", "op_applied"],
        ["ModifyOrder"],
    ),
    MasterCase(
        "a modify of a trade already closed and forgotten is a duplicate",
        open_and_close,
        lambda tid: modify(tid, M1),
        [m.AckStatus.DUPLICATE],
        [],
        [],
    ),
    MasterCase(
        "another master's event for the trade is not applied",
        open_it,
        lambda tid: close(tid, C1),
        [m.AckStatus.DUPLICATE],
        [],
        [],
        sender=OTHER,
    ),
]


@pytest.mark.parametrize("case", MASTER_CASES, ids=lambda c: c.name)
def test_master_events(case: MasterCase) -> None:
    w = world(CoreConfig(dedupe_window_ms=DAY))
    online(w, (MASTER, Role.MASTER), (OTHER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id(case.age_ms)
    case.setup(w, tid)
    tx = w.from_account(case.sender, case.event(tid))
    assert acks(tx) == case.acks
    assert [e.kind for e in tx.batch.events] == case.events
    assert commands(tx) == case.commands


def test_a_new_intent_records_the_trade_its_receipt_and_the_journaled_command() -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    tx = w.from_account(MASTER, intent(tid))
    assert [t.trade_id for t in tx.batch.trades] == [tid]
    assert [(d.account_id, d.decision) for d in tx.batch.decisions] == [(SLAVE, "copy")]
    (cmd,) = tx.batch.commands
    assert [(j.command_id, j.stage, j.attempt) for j in tx.batch.journal] == [
        (cmd.command_id, "CORE_ACCEPTED", 1)
    ]
    # the first send is journaled with its retry time, which reaches the shell's timers
    assert w.scheduled == [(T0 + 1500, cmd.command_id)]
    assert w.ctx.stats == {"handshake_accepted": 2, "trades": 1, "execute_sent": 1}


def test_a_slave_that_is_not_a_follower_gets_an_omission_with_its_reason() -> None:
    w = world(CoreConfig(follow={MASTER: ["51002"]}))
    online(w, (MASTER, Role.MASTER), ("51002", Role.SLAVE))
    w.apply(m.AccountOnline(AGENT, m.Handshake("51002", Role.SLAVE, m.PROTOCOL_VERSION), T0))
    tx = w.from_account(MASTER, intent(trade_id()))
    assert [(d.account_id, d.decision) for d in tx.batch.decisions] == [("51002", "omit")]
    assert acks(tx) == [m.AckStatus.OK] and commands(tx) == []


def test_a_fan_out_is_one_log_line_with_every_slave_and_each_decision_stays_a_row() -> None:
    w = world()
    slaves = [SLAVE, "51002", "51003"]
    online(w, (MASTER, Role.MASTER), *[(s, Role.SLAVE) for s in slaves])
    tid = trade_id()
    with capture_logs() as logs:
        tx = w.from_account(MASTER, intent(tid))
        opens = {row.account_id: row.command_id for row in tx.batch.commands}
        for n, (slave, command_id) in enumerate(opens.items()):
            res = m.ExecutionResult(command_id, tid, TRACE, True, ErrorCode.NO_ERROR, ticket=700 + n)
            w.from_account(slave, res)
        tx = w.from_account(MASTER, close(tid, C1))
    closes = {row.account_id: row.command_id for row in tx.batch.commands}
    assert sorted(opens) == sorted(closes) == sorted(slaves)
    (fanout,) = [e for e in logs if e["event"] == "core_trade_fanout"]
    assert {(c["slave"], c["command_id"]) for c in fanout["copies"]} == set(opens.items())
    (close_fanout,) = [e for e in logs if e["event"] == "core_close_fanout"]
    assert close_fanout["trade_id"] == tid
    assert {(c["slave"], c["command_id"], c["event_id"]) for c in close_fanout["closes"]} == {
        (s, c, C1) for s, c in closes.items()
    }
    assert not [e for e in logs if e["event"] == "core_close_decided"]
    # the store keeps a row per slave for each decision: the receipts, and the op each close applied
    assert [e.account_id for e in tx.batch.events if e.kind == "op_applied"] == list(closes)


def test_a_close_decided_outside_a_fan_out_is_logged_on_its_own() -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    command_id = opened(w, tid)
    w.from_account(MASTER, close(tid, C1))  # queued: the open is still in flight
    with capture_logs() as logs:
        tx = filled(w, tid, command_id)
    (row,) = tx.batch.commands
    (line,) = [e for e in logs if e["event"] == "core_close_decided"]
    assert (line["slave"], line["command_id"], line["event_id"]) == (SLAVE, row.command_id, C1)


# ============================================================================= the gate before the table


@pytest.mark.parametrize(
    ("config", "sender", "status"),
    [
        (CoreConfig(follow={MASTER: [SLAVE]}), "9999", m.AckStatus.REJECTED),  # unknown, not listed
        (CoreConfig(), "9999", m.AckStatus.RETRY),  # unknown, may still be accepted
    ],
)
def test_master_events_from_unknown_accounts_are_refused_unstored(
    config: CoreConfig, sender: str, status: m.AckStatus
) -> None:
    w = world(config)
    tx = w.from_account(sender, intent(trade_id()))
    assert acks(tx) == [status] and not tx.batch and tx.sends == []


def test_intents_from_a_master_that_is_listed_as_a_slave_are_rejected() -> None:
    w = world(CoreConfig(follow={MASTER: [SLAVE]}))
    online(w, (SLAVE, Role.SLAVE))
    tx = w.from_account(SLAVE, intent(trade_id()))
    assert acks(tx) == [m.AckStatus.REJECTED] and not tx.batch


def test_events_from_a_rejected_account_are_kept_by_the_master_for_later() -> None:
    w = world()
    online(w, (MASTER, Role.MASTER))
    w.ctx.state.accounts[MASTER].registration = m.RegistrationStatus.REJECTED
    tx = w.from_account(MASTER, intent(trade_id()))
    assert acks(tx) == [m.AckStatus.RETRY] and not tx.batch and w.ctx.state.trades == {}


# ================================================================================= results, as a table


@dataclass(frozen=True)
class ResultCase:
    name: str
    result: Callable[[str, str], m.Result]
    status: str | None
    """The command row's new status, None when the command row is not touched."""
    events: list[str]
    stats: dict[str, int]
    tickets: list[int]


RESULT_CASES = [
    ResultCase(
        "a fill records its ticket",
        lambda cid, tid: m.ExecutionResult(
            cid, tid, TRACE, True, ErrorCode.NO_ERROR, ticket=555, executed_lots=0.1
        ),
        "ok",
        [],
        {"copied": 1},
        [555],
    ),
    ResultCase(
        "a failed open is recorded as failed",
        lambda cid, tid: m.ExecutionResult(cid, tid, TRACE, False, ErrorCode.ERR_INVALID_TRADE_VOLUME),
        "failed",
        [],
        {"execute_failed": 1},
        [],
    ),
    ResultCase(
        "an order the slave's price check kept back is an omission",
        lambda cid, tid: m.ExecutionResult(cid, tid, TRACE, False, ErrorCode.ERR_SPREAD_TOO_WIDE),
        "failed",
        [],
        {"omitted_at_slave": 1},
        [],
    ),
    ResultCase(
        "a result for a command never sent is recorded as unknown",
        lambda cid, tid: m.ExecutionResult("0" * 8 + cid[8:], tid, TRACE, True, ErrorCode.NO_ERROR, ticket=1),
        None,
        ["result_unknown_command"],
        {},
        [],
    ),
]


@pytest.mark.parametrize("case", RESULT_CASES, ids=lambda c: c.name)
def test_results(case: ResultCase) -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    cid = opened(w, tid)
    before = dict(w.ctx.stats)
    res = case.result(cid, tid)
    tx = w.from_account(SLAVE, res)
    assert [u.status for u in tx.batch.command_updates] == ([case.status] if case.status else [])
    assert [e.kind for e in tx.batch.events] == case.events
    assert {k: v - before.get(k, 0) for k, v in w.ctx.stats.items() if v != before.get(k, 0)} == case.stats
    assert [t.ticket for t in tx.batch.tickets] == case.tickets
    assert (cid in w.ctx.state.pending) is (case.status is None)


def test_a_repeated_result_is_a_duplicate_not_an_anomaly() -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    cid = opened(w, tid)
    filled(w, tid, cid)
    tx = filled(w, tid, cid)
    assert [e.kind for e in tx.batch.events] == ["result_duplicate"] and tx.batch.tickets == []


def fire(w: World, command_id: str) -> Tx:
    """The shell's reconciler: the command's retry timer fired (at the time it was scheduled for)."""
    w.clock.now = max(at for at, key in w.scheduled if key == command_id)
    return engine.timers_due(w.ctx, [command_id])


def test_a_result_after_giving_up_is_still_the_truth() -> None:
    w = world()  # max_retries=2
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    cid = opened(w, tid)
    assert commands(fire(w, cid)) == ["ExecuteOrder"]  # the second send, same command_id
    gave_up = fire(w, cid)
    assert cid in w.ctx.state.given_up and cid not in w.ctx.state.pending
    assert [d.command_id for d in gave_up.drops] == [cid]
    assert [e.kind for e in gave_up.batch.events] == ["command_gave_up"]
    assert [u.status for u in gave_up.batch.command_updates] == ["failed"]

    late = filled(w, tid, cid)  # "timed out but executed"
    assert [t.ticket for t in late.batch.tickets] == [555]
    assert [u.status for u in late.batch.command_updates] == ["ok"]
    assert [(j.stage, j.outcome) for j in late.batch.journal] == [("EA_CONFIRMED", "OK")]
    assert cid not in w.ctx.state.given_up
    # the position is the slave's real one: the master's close closes it
    assert commands(w.from_account(MASTER, close(tid, C1))) == ["CloseOrder"]


def test_only_a_transaction_that_sends_something_waits_for_the_disk() -> None:
    """What Core says (commands, acks, drops) leaves only after a synced write; what it heard and sends
    nothing about (a result, an Agent's ack) is written without waiting for the disk."""
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    opening = w.from_account(MASTER, intent(tid))
    assert opening.sends and opening.batch.sync
    (cid,) = [c.command_id for c in opening.batch.commands]
    buffered = w.apply(m.CommandAck(SLAVE, cid, m.AckStage.AGENT_BUFFERED, m.AckResult.PENDING, ""))
    assert buffered.batch.journal and not buffered.sends and not buffered.batch.sync
    result = filled(w, tid, cid)
    assert result.batch.tickets and not result.sends and not result.batch.sync
    closing = w.from_account(MASTER, close(tid, C1))
    assert commands(closing) == ["CloseOrder"] and closing.batch.sync
    (close_id,) = [c.command_id for c in closing.batch.commands]
    assert fire(w, close_id).batch.sync  # the close sent again
    assert merge([buffered, result]).sync is False
    assert merge([buffered, closing]).sync is True


# =========================================================================== the Agents' acks and rollback


@pytest.mark.parametrize(
    ("result", "stage", "events"),
    [
        (m.AckResult.PENDING, "AGENT_BUFFERED", []),
        (m.AckResult.OK, "PIPE_DELIVERED", []),
        (m.AckResult.FAILED, "CORE_ACCEPTED", ["command_not_delivered"]),
    ],
)
def test_command_acks_move_the_delivery_machine(result: m.AckResult, stage: str, events: list[str]) -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    cid = opened(w, trade_id())
    ack_stage = m.AckStage.PIPE_DELIVERED if result is m.AckResult.OK else m.AckStage.AGENT_BUFFERED
    tx = w.apply(m.CommandAck(SLAVE, cid, ack_stage, result, "offline"))
    assert [j.stage for j in tx.batch.journal] == [stage]
    assert [e.kind for e in tx.batch.events] == events


def test_rollback_forgets_what_the_refused_batch_did_and_asks_the_master_again() -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))
    tid = trade_id()
    tx = w.from_account(MASTER, intent(tid))
    engine.rollback(w.ctx, tx)
    assert w.ctx.state.trades == {} and w.ctx.state.pending == {}
    assert tid not in w.ctx.state.seen_trade_ids
    assert acks(tx) == [m.AckStatus.RETRY] and commands(tx) == []
    # the master's retry is handled as new
    assert acks(w.from_account(MASTER, intent(tid))) == [m.AckStatus.OK]


def test_a_message_whose_handler_fails_is_logged_and_dropped_and_the_rest_of_the_group_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = world()
    online(w, (MASTER, Role.MASTER), (SLAVE, Role.SLAVE))

    def broken(*_: object) -> None:
        raise RuntimeError("a handler bug")

    monkeypatch.setitem(engine.HANDLERS, m.Quotes, broken)
    tid = trade_id()
    with capture_logs() as logs:
        tx = engine.apply(
            w.ctx,
            [
                (AGENT, m.FromAccount(SLAVE, m.Quotes([]), T0)),
                (AGENT, m.FromAccount(MASTER, intent(tid), T0)),
            ],
        )
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["core_message_failed"]
    assert acks(tx) == [m.AckStatus.OK] and tid in w.ctx.state.trades


# ============================================================================== the tables are complete


def test_every_message_a_terminal_sends_core_has_one_handler_or_is_known_to_change_nothing() -> None:
    assert set(engine.HANDLERS) == {
        m.TradeIntent,
        m.TradeClose,
        m.TradeModify,
        m.ExecutionResult,
        m.CloseResult,
        m.ModifyResult,
        m.Quotes,
        m.StateSnapshot,
    }
    assert set(engine.AGENT_HANDLERS) == {m.AccountOnline, m.AccountOffline, m.CommandAck}


def test_the_command_lifecycle_has_a_rule_for_every_input_once_it_ended() -> None:
    inputs = {t for _, t in delivery.COMMAND_RULES}
    for p in (delivery.Phase.GAVE_UP, delivery.Phase.FINISHED):
        assert {t for q, t in delivery.COMMAND_RULES if q is p} == inputs


def test_the_intent_lifecycle_has_a_rule_for_every_status_and_input() -> None:
    inputs = {delivery.Connected, delivery.Timeout, *delivery.AckKind}
    assert set(delivery.INTENT_TABLE) == {(s, i) for s in delivery.IntentStatus for i in inputs}
