"""The Store contract: every test runs against MemoryStore and SqliteStore, and a property test checks
that random sequences of batches read back identically from both."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.migrations import apply_sqlite, discover, split_statements
from echo.adapters.store.postgres import PostgresStore
from echo.adapters.store.sqlite import SqliteStore
from echo.domain.ids import uuid7
from echo.ports.store import (
    AccountRow,
    Batch,
    CommandRow,
    CommandUpdate,
    DecisionRow,
    EvaluationRow,
    EventRow,
    JournalRow,
    RetryEventRow,
    Store,
    StoreError,
    StoreUnavailable,
    SymbolEvaluationRow,
    TicketRow,
    TicketUpdate,
    TradeRow,
    TradeStatus,
    TradeUpdate,
)
from tests.backends import postgres_schema

T0 = 1_760_000_000_000


def uid(ms: int, n: int = 0) -> str:
    return uuid7(T0 + ms, n.to_bytes(10, "big"))


def trade(trade_id: str = "t1", **kw: Any) -> TradeRow:
    base: dict[str, Any] = dict(
        trade_id=trade_id,
        master_account="1001",
        master_ticket=555,
        symbol="XAUUSD",
        master_symbol="XAUUSD.m",
        side="BUY",
        lot_size=0.5,
        price=2345.67,
        magic_number=42,
        trace_id="ab" * 16,
        opened_at_ms=T0,
    )
    base.update(kw)
    return TradeRow(**base)


def command(command_id: str = "c1", trade_id: str = "t1", **kw: Any) -> CommandRow:
    base: dict[str, Any] = dict(
        command_id=command_id,
        trade_id=trade_id,
        account_id="2001",
        kind="execute",
        trace_id="ab" * 16,
        payload='{"op":"open"}',
        created_at_ms=T0,
    )
    base.update(kw)
    return CommandRow(**base)


def ticket(account_id: str = "2001", number: int = 9001, trade_id: str = "t1", **kw: Any) -> TicketRow:
    base: dict[str, Any] = dict(
        account_id=account_id,
        ticket=number,
        trade_id=trade_id,
        symbol="XAUUSD",
        lots=0.5,
        opened_at_ms=T0,
    )
    base.update(kw)
    return TicketRow(**base)


def decision(decision_id: str = "d1", trade_id: str = "t1", **kw: Any) -> DecisionRow:
    base: dict[str, Any] = dict(
        decision_id=decision_id,
        trade_id=trade_id,
        account_id="2001",
        decision="copy",
        reason="copied",
        lot_size=0.5,
        detail='{"sizing":"fixed"}',
        at_ms=T0,
    )
    base.update(kw)
    return DecisionRow(**base)


def event(event_id: str = "e1", **kw: Any) -> EventRow:
    base: dict[str, Any] = dict(event_id=event_id, at_ms=T0, kind="trade_opened")
    base.update(kw)
    return EventRow(**base)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        with postgres_schema() as url:
            pg = await PostgresStore.open(url)
            try:
                yield pg
            finally:
                await pg.aclose()
        return
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore.open(tmp_path / "echo.db")
    try:
        yield s
    finally:
        await s.aclose()


async def snapshot(s: Store, trade_ids: list[str]) -> dict[str, Any]:
    """Everything the store can tell, through every read method."""
    out: dict[str, Any] = {
        "trades": await s.trades(),
        "trades_open": await s.trades(status="open"),
        "trades_closed": await s.trades(status="closed"),
        "trades_2": await s.trades(limit=2),
        "decisions": await s.decisions(),
        "decisions_3": await s.decisions(limit=3),
        "events": await s.events(),
        "events_3": await s.events(limit=3),
    }
    for tid in [*trade_ids, "no-such-trade"]:
        out[f"get {tid}"] = await s.get_trade(tid)
        out[f"tickets {tid}"] = await s.tickets(tid)
        out[f"commands {tid}"] = await s.commands(tid)
        out[f"decisions {tid}"] = await s.decisions(tid)
        out[f"events {tid}"] = await s.events(tid)
        out[f"events_1 {tid}"] = await s.events(tid, limit=1)
    return out


# --- write and read back ----------------------------------------------------------------------------


async def test_every_row_type_reads_back_field_for_field(store: Store) -> None:
    t_full = trade(
        "t1", stop_loss=2300.5, take_profit=2400.25, status="closed", closed_at_ms=T0 + 5, magic_number=2**62
    )
    t_bare = trade("t2", opened_at_ms=T0 - 1, master_ticket=2**63 - 1, lot_size=1e-9, price=-0.0)
    c_full = command(
        "c1", status="failed", error_code="ERR_REQUOTE", result='{"r":"x"}', completed_at_ms=T0 + 7
    )
    c_bare = command("c2", kind="close", created_at_ms=T0 + 1, payload="{}")
    k_full = ticket("2001", 9002, status="closed", closed_at_ms=T0 + 9, parent_ticket=9001, lots=0.25)
    k_bare = ticket("2001", 9001)
    d_copy = decision("d1")
    d_omit = decision(
        "d2", decision="omit", reason="symbol_not_mapped", lot_size=None, detail="{}", at_ms=T0 + 1
    )
    e_full = event(
        uid(0, 1),
        kind="command_sent",
        trade_id="t1",
        account_id="2001",
        command_id="c1",
        trace_id="cd" * 16,
        data='{"k":"ünïcødé ✓"}',
    )
    e_bare = event(uid(1, 2))
    await store.write(
        Batch(
            trades=[t_full, t_bare],
            commands=[c_full, c_bare],
            tickets=[k_full, k_bare],
            decisions=[d_copy, d_omit],
            events=[e_full, e_bare],
        )
    )
    assert await store.get_trade("t1") == t_full
    assert await store.get_trade("t2") == t_bare
    assert await store.get_trade("nope") is None
    assert await store.trades() == [t_full, t_bare]
    assert await store.commands("t1") == [c_full, c_bare]
    assert await store.tickets("t1") == [k_bare, k_full]
    assert await store.decisions("t1") == [d_copy, d_omit]
    assert await store.events() == [e_full, e_bare]
    assert await store.events("t1") == [e_full]
    # field for field, with the types the dataclasses declare
    got = await store.get_trade("t1")
    assert got is not None
    for f in dataclasses.fields(TradeRow):
        assert getattr(got, f.name) == getattr(t_full, f.name)
        assert type(getattr(got, f.name)) is type(getattr(t_full, f.name)), f.name
    [got_d_omit] = [d for d in await store.decisions() if d.decision_id == "d2"]
    assert got_d_omit.lot_size is None


async def test_empty_batch_is_a_no_op(store: Store) -> None:
    assert not Batch()
    await store.write(Batch())
    assert await store.trades() == []
    assert await store.events() == []


# --- atomicity and duplicates -----------------------------------------------------------------------


def full_batch(events: list[EventRow]) -> Batch:
    return Batch(
        trades=[trade("t1")],
        commands=[command("c1"), command("c2")],
        tickets=[ticket()],
        decisions=[decision("d1")],
        events=events,
    )


async def assert_empty(store: Store) -> None:
    assert await store.trades() == []
    assert await store.get_trade("t1") is None
    assert await store.commands("t1") == []
    assert await store.tickets("t1") == []
    assert await store.decisions() == []
    assert await store.events() == []


async def test_batch_with_duplicate_in_its_last_part_writes_nothing(store: Store) -> None:
    with pytest.raises(StoreError, match="appears twice"):
        await store.write(full_batch([event("e1"), event("e2"), event("e1")]))
    await assert_empty(store)


async def test_batch_conflicting_with_stored_row_in_its_last_part_writes_nothing(store: Store) -> None:
    await store.write(Batch(events=[event("e0")]))
    with pytest.raises(StoreError, match="already exists"):
        await store.write(full_batch([event("e1"), event("e0")]))
    assert await store.events() == [event("e0")]
    assert await store.trades() == []
    assert await store.commands("t1") == []
    assert await store.tickets("t1") == []
    assert await store.decisions() == []


async def test_store_is_usable_after_a_rejected_batch(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.write(full_batch([event("e1"), event("e1")]))
    await store.write(full_batch([event("e1")]))
    assert await store.get_trade("t1") == trade("t1")
    assert len(await store.commands("t1")) == 2


@pytest.mark.parametrize(
    ("first", "again", "words"),
    [
        (Batch(trades=[trade("t1")]), Batch(trades=[trade("t1", symbol="EURUSD")]), "trades: trade_id='t1'"),
        (Batch(commands=[command("c1")]), Batch(commands=[command("c1")]), "commands: command_id='c1'"),
        (
            Batch(tickets=[ticket("2001", 7)]),
            Batch(tickets=[ticket("2001", 7, trade_id="t9")]),
            "tickets: account_id='2001', ticket=7",
        ),
        (Batch(decisions=[decision("d1")]), Batch(decisions=[decision("d1")]), "decisions: decision_id='d1'"),
        (Batch(events=[event("e1")]), Batch(events=[event("e1", kind="other")]), "events: event_id='e1'"),
    ],
    ids=["trade", "command", "ticket", "decision", "event"],
)
async def test_duplicate_insert_raises(store: Store, first: Batch, again: Batch, words: str) -> None:
    await store.write(first)
    with pytest.raises(StoreError, match=f"{words} already exists") as refused:
        await store.write(again)
    # refused for what it holds, not unavailable: Core would hold and write it again for ever
    assert not isinstance(refused.value, StoreUnavailable)


@pytest.mark.parametrize(
    "batch",
    [
        Batch(trades=[trade("t1", master_ticket=2**63)]),
        Batch(tickets=[ticket("2001", 7, parent_ticket=-(2**63) - 1)]),
        Batch(events=[event("e1")], ticket_updates=[TicketUpdate("2001", 2**64, "closed", 0.1)]),
    ],
    ids=["insert", "insert-optional", "update"],
)
async def test_integer_outside_64_bits_is_refused(store: Store, batch: Batch) -> None:
    with pytest.raises(StoreError, match="outside the 64-bit range") as refused:
        await store.write(batch)
    assert not isinstance(refused.value, StoreUnavailable)
    await assert_empty(store)


async def test_same_ticket_number_on_two_accounts_is_two_rows(store: Store) -> None:
    await store.write(Batch(tickets=[ticket("2001", 7), ticket("2002", 7)]))
    assert [(k.account_id, k.ticket) for k in await store.tickets("t1")] == [("2001", 7), ("2002", 7)]


# --- updates ----------------------------------------------------------------------------------------


async def test_updates_apply(store: Store) -> None:
    await store.write(
        Batch(trades=[trade("t1")], commands=[command("c1")], tickets=[ticket("2001", 7), ticket("2001", 8)])
    )
    await store.write(
        Batch(
            trade_updates=[TradeUpdate("t1", "closed", T0 + 100)],
            command_updates=[CommandUpdate("c1", "ok", "NO_ERROR", '{"ticket":7}', T0 + 50)],
            ticket_updates=[
                TicketUpdate("2001", 7, "closed", 0.5, T0 + 100),
                TicketUpdate("2001", 8, "open", 0.2),
            ],
        )
    )
    assert await store.get_trade("t1") == trade("t1", status="closed", closed_at_ms=T0 + 100)
    assert await store.commands("t1") == [
        command("c1", status="ok", error_code="NO_ERROR", result='{"ticket":7}', completed_at_ms=T0 + 50)
    ]
    assert await store.tickets("t1") == [
        ticket("2001", 7, status="closed", closed_at_ms=T0 + 100),
        ticket("2001", 8, lots=0.2),
    ]
    # an update sets every field it carries, including back to None
    await store.write(Batch(trade_updates=[TradeUpdate("t1", "open", None)]))
    assert await store.get_trade("t1") == trade("t1")


async def test_update_may_follow_its_insert_in_one_batch(store: Store) -> None:
    await store.write(
        Batch(
            trades=[trade("t1")],
            trade_updates=[TradeUpdate("t1", "closed", T0 + 1)],
            commands=[command("c1")],
            command_updates=[CommandUpdate("c1", "failed", "ERR_OFF_QUOTES", "{}", T0 + 2)],
            tickets=[ticket("2001", 7)],
            ticket_updates=[TicketUpdate("2001", 7, "closed", 0.5, T0 + 3)],
        )
    )
    assert (await store.get_trade("t1")) == trade("t1", status="closed", closed_at_ms=T0 + 1)
    [c] = await store.commands("t1")
    assert (c.status, c.error_code) == ("failed", "ERR_OFF_QUOTES")
    [k] = await store.tickets("t1")
    assert k.status == "closed"


@pytest.mark.parametrize(
    ("update", "words"),
    [
        (
            Batch(trade_updates=[TradeUpdate("nope", "closed", T0)]),
            "trade_updates: no row with trade_id='nope'",
        ),
        (
            Batch(command_updates=[CommandUpdate("nope", "ok", "NO_ERROR", "{}", T0)]),
            "command_updates: no row with command_id='nope'",
        ),
        (
            Batch(ticket_updates=[TicketUpdate("2001", 99, "closed", 0.1, T0)]),
            "ticket_updates: no row with account_id='2001', ticket=99",
        ),
    ],
    ids=["trade", "command", "ticket"],
)
async def test_update_of_unknown_key_raises_and_writes_nothing(
    store: Store, update: Batch, words: str
) -> None:
    await store.write(Batch(trades=[trade("t1")], commands=[command("c1")], tickets=[ticket("2001", 7)]))
    # the rest of the batch is good; the unknown key must abort all of it
    update.events.append(event("e1"))
    update.trade_updates.insert(0, TradeUpdate("t1", "closed", T0))
    update.command_updates.insert(0, CommandUpdate("c1", "ok", "NO_ERROR", "{}", T0))
    with pytest.raises(StoreError, match=words) as refused:
        await store.write(update)
    assert not isinstance(refused.value, StoreUnavailable)
    assert await store.get_trade("t1") == trade("t1")
    assert await store.commands("t1") == [command("c1")]
    assert await store.events() == []


# --- orderings, limits, filters ---------------------------------------------------------------------


async def test_trades_newest_first_with_limit_and_status(store: Store) -> None:
    rows = [
        trade("t-a", opened_at_ms=T0 + 1),
        trade("t-b", opened_at_ms=T0 + 3, status="closed", closed_at_ms=T0 + 4),
        trade("t-c", opened_at_ms=T0 + 2),
        trade("t-d", opened_at_ms=T0 + 2),
    ]
    await store.write(Batch(trades=rows))
    assert [t.trade_id for t in await store.trades()] == ["t-b", "t-d", "t-c", "t-a"]
    assert [t.trade_id for t in await store.trades(limit=2)] == ["t-b", "t-d"]
    assert [t.trade_id for t in await store.trades(status="open")] == ["t-d", "t-c", "t-a"]
    assert [t.trade_id for t in await store.trades(status="open", limit=1)] == ["t-d"]
    assert [t.trade_id for t in await store.trades(status="closed")] == ["t-b"]
    assert await store.trades(limit=0) == []
    await store.write(Batch(trade_updates=[TradeUpdate("t-a", "closed", T0 + 9)]))
    assert [t.trade_id for t in await store.trades(status="closed")] == ["t-b", "t-a"]


async def test_tickets_ordered_by_account_opened_ticket(store: Store) -> None:
    rows = [
        ticket("2002", 5, opened_at_ms=T0),
        ticket("2001", 9, opened_at_ms=T0 + 1),
        ticket("2001", 8, opened_at_ms=T0 + 1),
        ticket("2001", 10, opened_at_ms=T0),
        ticket("2001", 1, trade_id="t2"),
    ]
    await store.write(Batch(tickets=rows))
    assert [(k.account_id, k.ticket) for k in await store.tickets("t1")] == [
        ("2001", 10),
        ("2001", 8),
        ("2001", 9),
        ("2002", 5),
    ]
    assert [k.ticket for k in await store.tickets("t2")] == [1]
    assert await store.tickets("t3") == []


async def test_trades_with_open_tickets_whatever_the_trades_status(store: Store) -> None:
    await store.write(
        Batch(
            trades=[trade("t1"), trade("t2"), trade("t3")],
            tickets=[
                ticket("2001", 1, trade_id="t2"),
                ticket("2002", 2, trade_id="t2"),
                ticket("2001", 3, trade_id="t1"),
                ticket("2001", 4, trade_id="t3"),
            ],
        )
    )
    assert await store.trades_with_open_tickets() == ["t1", "t2", "t3"]
    await store.write(
        Batch(
            trade_updates=[TradeUpdate("t2", "closed", T0 + 5), TradeUpdate("t3", "closed", T0 + 5)],
            ticket_updates=[
                TicketUpdate("2001", 1, "closed", 0.1, T0 + 5),
                TicketUpdate("2001", 4, "closed", 0.1, T0 + 5),
            ],
        )
    )
    # t2 is closed at the master but 2002's ticket is still open; t3 has nothing open any more
    assert await store.trades_with_open_tickets() == ["t1", "t2"]
    assert await store.trades_with_open_tickets(limit=1) == ["t1"]


async def test_commands_ordered_by_created_then_id(store: Store) -> None:
    rows = [
        command("c3", created_at_ms=T0),
        command("c2", created_at_ms=T0 + 1),
        command("c1", created_at_ms=T0 + 1),
        command("c0", created_at_ms=T0 + 2, trade_id="t2"),
    ]
    await store.write(Batch(commands=rows))
    assert [c.command_id for c in await store.commands("t1")] == ["c3", "c1", "c2"]
    assert [c.command_id for c in await store.commands("t2")] == ["c0"]


async def test_decisions_ordered_filtered_limited(store: Store) -> None:
    rows = [
        decision("d3", at_ms=T0),
        decision("d2", at_ms=T0 + 1),
        decision("d1", at_ms=T0 + 1),
        decision("d0", at_ms=T0 + 5, trade_id="t2"),
        decision("d9", at_ms=T0 - 5, trade_id="t2"),
    ]
    await store.write(Batch(decisions=rows))
    assert [d.decision_id for d in await store.decisions()] == ["d9", "d3", "d1", "d2", "d0"]
    assert [d.decision_id for d in await store.decisions(limit=2)] == ["d9", "d3"]
    assert [d.decision_id for d in await store.decisions("t1")] == ["d3", "d1", "d2"]
    assert [d.decision_id for d in await store.decisions("t1", limit=1)] == ["d3"]
    assert [d.decision_id for d in await store.decisions("t2")] == ["d9", "d0"]


async def test_events_in_event_id_order_filtered_limited(store: Store) -> None:
    # written out of time order, in two batches: reads come back in event_id (= time) order
    e = [
        event(uid(ms), trade_id=tid, at_ms=T0 + ms)
        for ms, tid in [(0, "t1"), (1, "t2"), (2, "t1"), (3, None)]
    ]
    await store.write(Batch(events=[e[2], e[0]]))
    await store.write(Batch(events=[e[3], e[1]]))
    assert await store.events() == e
    assert await store.events(limit=2) == e[:2]
    assert await store.events("t1") == [e[0], e[2]]
    assert await store.events("t1", limit=1) == [e[0]]
    assert await store.events("t2") == [e[1]]
    assert await store.events("t3") == []
    assert await store.events(limit=0) == []


@pytest.mark.parametrize("method", ["trades", "decisions", "events"])
async def test_negative_limit_is_refused(store: Store, method: str) -> None:
    with pytest.raises(ValueError, match="limit"):
        await getattr(store, method)(limit=-1)


async def test_closed_store_raises(store: Store) -> None:
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.write(Batch(events=[event("e1")]))
    with pytest.raises(StoreError, match="closed"):
        await store.write(Batch())
    with pytest.raises(StoreError, match="closed"):
        await store.trades()
    await store.aclose()  # idempotent


# --- SQLite specifics -------------------------------------------------------------------------------


async def test_sqlite_keeps_everything_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "echo.db"
    s1 = SqliteStore.open(path)
    await s1.write(full_batch([event(uid(0)), event(uid(1), trade_id="t1")]))
    await s1.write(
        Batch(
            trade_updates=[TradeUpdate("t1", "closed", T0 + 5)],
            command_updates=[CommandUpdate("c1", "ok", "NO_ERROR", "{}", T0 + 2)],
        )
    )
    before = await snapshot(s1, ["t1"])
    await s1.aclose()
    s2 = SqliteStore.open(path)
    try:
        assert await snapshot(s2, ["t1"]) == before
        assert before["trades_closed"] == [trade("t1", status="closed", closed_at_ms=T0 + 5)]
    finally:
        await s2.aclose()


async def test_sqlite_open_is_idempotent_and_configures_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "echo.db"
    s1 = SqliteStore.open(path, synchronous="NORMAL")
    s2 = SqliteStore.open(path)
    try:
        await s1.write(Batch(trades=[trade("t1")]))
        assert await s2.get_trade("t1") == trade("t1")
        with sqlite3.connect(path) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
            assert versions == [(m.version,) for m in discover()]
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()
    finally:
        await s1.aclose()
        await s2.aclose()


def test_sqlite_store_in_a_folder_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"the folder {tmp_path / 'nested' / 'dir'} does not exist"):
        SqliteStore.open(tmp_path / "nested" / "dir" / "echo.db")
    assert not (tmp_path / "nested").exists(), "a typo in a path creates no folders"


async def test_a_second_exclusive_sqlite_store_names_the_holder_and_readers_are_free(tmp_path: Path) -> None:
    import os

    from echo.adapters.locks import InUse

    first = SqliteStore.open(tmp_path / "echo.db", exclusive=True)
    try:
        with pytest.raises(InUse, match=f"the store {tmp_path / 'echo.db'} is in use .*pid {os.getpid()}"):
            SqliteStore.open(tmp_path / "echo.db", exclusive=True)
        reader = SqliteStore.open(tmp_path / "echo.db", create=False)  # read-only commands take no lock
        await reader.aclose()
    finally:
        await first.aclose()
    again = SqliteStore.open(tmp_path / "echo.db", exclusive=True)  # let go on close
    await again.aclose()
    with pytest.raises(StoreError, match="no store at"):
        SqliteStore.open(tmp_path / "other.db", create=False)
    assert not (tmp_path / "other.db").exists()


def test_sqlite_rejects_unknown_synchronous(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore.open(tmp_path / "echo.db", synchronous="SOMETIMES")


def test_sqlite_open_failure_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError):
        SqliteStore.open(tmp_path / "a-file" / "echo.db")


def test_migrations_apply_in_order_once_and_roll_back_on_failure(tmp_path: Path) -> None:
    d = tmp_path / "sql"
    d.mkdir()
    (d / "0002_more.sql").write_text("INSERT INTO log VALUES ('two');\n-- done; really\n")
    (d / "0001_first.sql").write_text("CREATE TABLE log (v TEXT); INSERT INTO log VALUES ('a;b');")
    (d / "README.md").write_text("not a migration")
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        assert apply_sqlite(conn, d) == ["0001", "0002"]
        assert apply_sqlite(conn, d) == []
        assert conn.execute("SELECT v FROM log").fetchall() == [("a;b",), ("two",)]
        (d / "0003_broken.sql").write_text("INSERT INTO log VALUES ('three'); INSERT INTO nope VALUES (1);")
        with pytest.raises(StoreError, match=r"0003_broken\.sql"):
            apply_sqlite(conn, d)
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (2,)
        assert conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == [
            ("0001",),
            ("0002",),
        ]
        assert not conn.in_transaction
    finally:
        conn.close()


def test_split_statements() -> None:
    sql = (
        "-- head; comment\nCREATE TABLE a (x TEXT);\n"
        "INSERT INTO a VALUES ('1;2'); /* c; */ SELECT 1;\n-- tail\n"
    )
    assert split_statements(sql) == [
        "-- head; comment\nCREATE TABLE a (x TEXT);",
        "INSERT INTO a VALUES ('1;2');",
        "/* c; */ SELECT 1;",
    ]
    with pytest.raises(StoreError, match="unterminated"):
        split_statements("SELECT 1; SELECT 2")


def test_shipped_schema_has_every_dataclass_column(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        apply_sqlite(conn)
        for table, row_type in [
            ("trades", TradeRow),
            ("slave_tickets", TicketRow),
            ("commands", CommandRow),
            ("copy_decisions", DecisionRow),
            ("events", EventRow),
        ]:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            assert cols == [f.name for f in dataclasses.fields(row_type)], table
    finally:
        conn.close()


# --- property: both stores agree --------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=6)
_key_text = st.text("ab-_Z0é", max_size=3)
_int64 = st.integers(-(2**63), 2**63 - 1)
_float = st.floats(allow_nan=False, allow_infinity=False)
_ms = st.integers(0, 3)
_TRADE_STATUSES: tuple[TradeStatus, ...] = ("open", "closed")


class Model:
    """The keys written so far, so the test can build valid batches (and, on purpose, invalid ones)."""

    def __init__(self) -> None:
        self.n = 0
        self.trades: list[str] = []
        self.commands: list[str] = []
        self.tickets: list[tuple[str, int]] = []
        self.decisions: list[str] = []
        self.events: list[str] = []

    def fresh(self, data: st.DataObject, prefix: str) -> str:
        self.n += 1
        return f"{data.draw(_key_text)}{prefix}{self.n:04d}"


def draw_batch(data: st.DataObject, m: Model) -> tuple[Batch, bool]:
    """A valid batch over the model's keys, sometimes spoiled by one bad row; returns (batch, valid)."""
    b = Batch()
    trade_ids = [*m.trades, "orphan"]
    for _ in range(data.draw(st.integers(0, 3))):
        b.trades.append(
            TradeRow(
                trade_id=m.fresh(data, "t"),
                master_account=data.draw(_text),
                master_ticket=data.draw(_int64),
                symbol=data.draw(_text),
                master_symbol=data.draw(_text),
                side=data.draw(st.sampled_from(["BUY", "SELL"])),
                lot_size=data.draw(_float),
                price=data.draw(_float),
                magic_number=data.draw(_int64),
                trace_id=data.draw(_text),
                opened_at_ms=data.draw(_ms),
                stop_loss=data.draw(st.none() | _float),
                take_profit=data.draw(st.none() | _float),
                status=data.draw(st.sampled_from(["open", "closed"])),
                closed_at_ms=data.draw(st.none() | _int64),
            )
        )
    all_trades = trade_ids + [t.trade_id for t in b.trades]
    if m.trades or b.trades:
        for _ in range(data.draw(st.integers(0, 2))):
            tid = data.draw(st.sampled_from(m.trades + [t.trade_id for t in b.trades]))
            status: TradeStatus = data.draw(st.sampled_from(_TRADE_STATUSES))
            b.trade_updates.append(TradeUpdate(tid, status, data.draw(st.none() | _ms)))
    for _ in range(data.draw(st.integers(0, 4))):
        b.commands.append(
            CommandRow(
                command_id=m.fresh(data, "c"),
                trade_id=data.draw(st.sampled_from(all_trades)),
                account_id=data.draw(st.sampled_from(["a", "b"])),
                kind=data.draw(st.sampled_from(["execute", "close", "modify"])),
                trace_id=data.draw(_text),
                payload=data.draw(_text),
                created_at_ms=data.draw(_ms),
                status=data.draw(st.sampled_from(["sent", "ok", "failed"])),
                error_code=data.draw(st.none() | _text),
                result=data.draw(st.none() | _text),
                completed_at_ms=data.draw(st.none() | _ms),
            )
        )
    if m.commands or b.commands:
        for _ in range(data.draw(st.integers(0, 2))):
            cid = data.draw(st.sampled_from(m.commands + [c.command_id for c in b.commands]))
            b.command_updates.append(
                CommandUpdate(
                    cid,
                    data.draw(st.sampled_from(["ok", "failed"])),
                    data.draw(_text),
                    data.draw(_text),
                    data.draw(_ms),
                )
            )
    for _ in range(data.draw(st.integers(0, 3))):
        m.n += 1
        b.tickets.append(
            TicketRow(
                account_id=data.draw(st.sampled_from(["a", "b"])),
                ticket=m.n * 100 + data.draw(st.integers(0, 99)),
                trade_id=data.draw(st.sampled_from(all_trades)),
                symbol=data.draw(_text),
                lots=data.draw(_float),
                opened_at_ms=data.draw(_ms),
                status=data.draw(st.sampled_from(["open", "closed"])),
                closed_at_ms=data.draw(st.none() | _ms),
                parent_ticket=data.draw(st.none() | _int64),
            )
        )
    if m.tickets or b.tickets:
        for _ in range(data.draw(st.integers(0, 2))):
            acc, num = data.draw(st.sampled_from(m.tickets + [(k.account_id, k.ticket) for k in b.tickets]))
            b.ticket_updates.append(
                TicketUpdate(
                    acc,
                    num,
                    data.draw(st.sampled_from(["open", "closed"])),
                    data.draw(_float),
                    data.draw(st.none() | _ms),
                )
            )
    for _ in range(data.draw(st.integers(0, 3))):
        b.decisions.append(
            DecisionRow(
                decision_id=m.fresh(data, "d"),
                trade_id=data.draw(st.sampled_from(all_trades)),
                account_id=data.draw(st.sampled_from(["a", "b"])),
                decision=data.draw(st.sampled_from(["copy", "omit"])),
                reason=data.draw(_text),
                lot_size=data.draw(st.none() | _float),
                detail=data.draw(_text),
                at_ms=data.draw(_ms),
            )
        )
    for _ in range(data.draw(st.integers(0, 3))):
        b.events.append(
            EventRow(
                event_id=m.fresh(data, "e"),
                at_ms=data.draw(_ms),
                kind=data.draw(_text),
                trade_id=data.draw(st.none() | st.sampled_from(all_trades)),
                account_id=data.draw(st.none() | _text),
                command_id=data.draw(st.none() | _text),
                trace_id=data.draw(st.none() | _text),
                data=data.draw(_text),
            )
        )
    valid = True
    spoil = data.draw(
        st.sampled_from(["none", "none", "none", "dup-stored", "dup-batch", "unknown-update", "big-int"])
    )
    if spoil == "dup-stored" and m.events:
        b.events.append(event(data.draw(st.sampled_from(m.events))))
        valid = False
    elif spoil == "dup-batch" and b.decisions:
        b.decisions.append(dataclasses.replace(b.decisions[0], reason="again"))
        valid = False
    elif spoil == "unknown-update":
        b.ticket_updates.append(TicketUpdate("zz", -1, "closed", 0.0))
        valid = False
    elif spoil == "big-int" and b.commands:
        b.commands.append(command(m.fresh(data, "c"), created_at_ms=2**63))
        valid = False
    if valid:
        m.trades += [t.trade_id for t in b.trades]
        m.commands += [c.command_id for c in b.commands]
        m.tickets += [(k.account_id, k.ticket) for k in b.tickets]
        m.decisions += [d.decision_id for d in b.decisions]
        m.events += [e.event_id for e in b.events]
    return b, valid


async def outcome(s: Store, batch: Batch) -> str | None:
    try:
        await s.write(batch)
    except StoreError as exc:
        return str(exc)
    return None


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_random_batches_read_back_identically_from_both_stores(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        mem = MemoryStore()
        lite = SqliteStore.open(Path(d) / "echo.db", synchronous="OFF")
        try:
            m = Model()
            for _ in range(data.draw(st.integers(1, 5))):
                batch, valid = draw_batch(data, m)
                got_mem, got_lite = await outcome(mem, batch), await outcome(lite, batch)
                assert got_mem == got_lite
                assert (got_mem is None) == valid
            ids = sorted(set(m.trades) | {"orphan"})
            assert await snapshot(mem, ids) == await snapshot(lite, ids)
        finally:
            await lite.aclose()


# ----------------------------------------------------------------------------------- delivery journal


def journal_row(command_id: str, outcome: str = "PENDING", updated: int = 1, **changes: Any) -> JournalRow:
    row = JournalRow(command_id, "t-1", "51001", "execute", "CORE_ACCEPTED", outcome, 1, 2000, "", updated)
    return replace(row, **changes)


async def test_journal_upserts_last_row_wins(store: Store) -> None:
    await store.write(Batch(journal=[journal_row("c-1"), journal_row("c-2", updated=2)]))
    await store.write(
        Batch(
            journal=[
                journal_row("c-1", attempt=2, next_retry_at_ms=5000, updated=3, last_error="no result"),
                journal_row(
                    "c-1", stage="EA_CONFIRMED", outcome="OK", attempt=2, next_retry_at_ms=None, updated=4
                ),
            ]
        )
    )
    everything = await store.journal(None)
    assert [(j.command_id, j.outcome, j.attempt, j.updated_at_ms) for j in everything] == [
        ("c-2", "PENDING", 1, 2),
        ("c-1", "OK", 2, 4),
    ]
    assert [j.command_id for j in await store.journal("PENDING")] == ["c-2"]
    assert [j.command_id for j in await store.journal("OK")] == ["c-1"]
    assert (await store.journal(None))[1] == journal_row(
        "c-1", stage="EA_CONFIRMED", outcome="OK", attempt=2, next_retry_at_ms=None, updated=4
    )
    assert len(await store.journal(None, limit=1)) == 1


@pytest.mark.parametrize("level", ["FULL", "EXTRA", "NORMAL"])
async def test_sqlite_commits_a_batch_nothing_waits_on_without_waiting_for_the_disk(
    tmp_path: Path, level: str
) -> None:
    """A batch with ``sync=False`` commits at ``synchronous = NORMAL`` (no fsync); every other batch at
    the configured level, which the connection is back at for it. Both survive a reopen."""
    s = SqliteStore.open(tmp_path / "echo.db", synchronous=level)
    conn = s._conn
    assert conn is not None
    levels: list[str] = []

    def traced(statement: str) -> None:
        if statement == "COMMIT":
            (n,) = conn.execute("PRAGMA synchronous").fetchone()
            levels.append(["OFF", "NORMAL", "FULL", "EXTRA"][n])

    conn.set_trace_callback(traced)
    try:
        await s.write(Batch(journal=[journal_row("c-1")], sync=False))
        await s.write(Batch(journal=[journal_row("c-1", outcome="OK", updated=2)], sync=False))
        await s.write(Batch(trades=[trade("t1")], journal=[journal_row("c-2")]))
        await s.write(Batch(journal=[journal_row("c-2", outcome="OK", updated=3)], sync=False))
        await s.write(Batch(retry_events=[RetryEventRow("e-1", "c-2", 2, "x", 1)]))
    finally:
        conn.set_trace_callback(None)
        await s.aclose()
    synced = "NORMAL" if level == "NORMAL" else level
    assert levels == ["NORMAL", "NORMAL", synced, "NORMAL", synced]
    again = SqliteStore.open(tmp_path / "echo.db", synchronous=level)
    try:
        journal = [(j.command_id, j.outcome) for j in await again.journal(None)]
        assert journal == [("c-1", "OK"), ("c-2", "OK")]
        assert await again.get_trade("t1") == trade("t1")
    finally:
        await again.aclose()


async def test_sqlite_checkpoints_beside_the_writes_not_inside_a_commit(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint (inside the commit that fills the WAL) is off once writes start; the
    store's own checkpoint, in a thread beside the writes, copies the committed pages into the database
    file, and what it copied reads back after a reopen."""
    db = tmp_path / "echo.db"
    s = SqliteStore.open(db)
    s.checkpoint_every_s = 0.0
    try:
        for b in range(30):
            await s.write(Batch(trades=[trade(f"t{b:02}-{i:02}") for i in range(10)]))
        assert s._live().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        await trio.to_thread.run_sync(s._checkpoint_idle.wait)
        assert s.checkpoint_error is None
        # 300 trades are in the database file itself, not only in the WAL
        assert db.stat().st_size > 300 * 100
    finally:
        await s.aclose()
    again = SqliteStore.open(db)
    try:
        assert len(await again.trades(limit=1000)) == 300
    finally:
        await again.aclose()


async def test_sqlite_commits_in_a_worker_thread_while_the_copier_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that waits for the disk goes to a worker thread while writes come back to back (the event
    loop runs other tasks meanwhile); an idle store commits inline, and so does a batch nothing waits on.
    Every batch reads back, in order."""
    from echo.adapters.store import sqlite as sqlite_adapter

    s = SqliteStore.open(tmp_path / "echo.db")
    in_thread: list[str] = []
    ran_meanwhile: list[int] = []
    spins = 0
    real = trio.to_thread.run_sync

    async def spy(fn: Any, *args: Any, **kw: Any) -> Any:
        in_thread.append(getattr(fn, "__name__", "?"))
        before = spins
        try:
            return await real(fn, *args, **kw)
        finally:
            ran_meanwhile.append(spins - before)

    monkeypatch.setattr(trio.to_thread, "run_sync", spy)
    try:
        monkeypatch.setattr(sqlite_adapter, "_BUSY_WITHIN_S", 0.0)
        await s.write(Batch(trades=[trade("alone")]))
        await s.write(Batch(trades=[trade("alone-too")]))
        assert in_thread == []
        monkeypatch.setattr(sqlite_adapter, "_BUSY_WITHIN_S", 60.0)
        async with trio.open_nursery() as nursery:

            async def busy() -> None:
                nonlocal spins
                while True:
                    spins += 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(busy)
            for i in range(5):
                await s.write(Batch(trades=[trade(f"t{i}")]))
            await s.write(Batch(trade_updates=[TradeUpdate("t0", "closed", T0 + 1)], sync=False))
            nursery.cancel_scope.cancel()
        assert in_thread == ["_commit"] * 5
        assert all(n > 0 for n in ran_meanwhile)  # the loop ran the other task during each commit
        trades = [t.trade_id for t in await s.trades(limit=10)]
        assert trades == ["t4", "t3", "t2", "t1", "t0", "alone-too", "alone"]
        assert (await s.get_trade("t0")) == trade("t0", status="closed", closed_at_ms=T0 + 1)
    finally:
        await s.aclose()


async def test_a_batch_nothing_waits_on_reads_back_the_same(store: Store) -> None:
    await store.write(Batch(trades=[trade("t1")], sync=False))
    await store.write(Batch(trade_updates=[TradeUpdate("t1", "closed", T0 + 5)], sync=False))
    assert await store.get_trade("t1") == replace(trade("t1"), status="closed", closed_at_ms=T0 + 5)


async def test_retry_events_append_in_time_order(store: Store) -> None:
    first, second = (
        RetryEventRow("e-2", "c-1", 2, "no result", 10),
        RetryEventRow("e-1", "c-1", 3, "gone", 20),
    )
    other = RetryEventRow("e-3", "c-2", 2, "no result", 5)
    await store.write(Batch(retry_events=[second, other, first]))
    assert await store.retry_events("c-1") == [first, second]
    with pytest.raises(StoreError):
        await store.write(Batch(retry_events=[first]))


async def test_a_failed_batch_leaves_the_journal_unchanged(store: Store) -> None:
    await store.write(Batch(journal=[journal_row("c-1")]))
    dup = RetryEventRow("e-1", "c-1", 2, "x", 1)
    await store.write(Batch(retry_events=[dup]))
    with pytest.raises(StoreError):
        await store.write(Batch(journal=[journal_row("c-1", outcome="OK", updated=9)], retry_events=[dup]))
    assert (await store.journal(None))[0].outcome == "PENDING"


async def test_accounts_upsert_by_account_id(store: Store) -> None:
    first = AccountRow("51002", "slave", "agent-1", '{"account_id":"51002"}', 1)
    await store.write(Batch(accounts=[first, AccountRow("51001", "slave", "agent-1", "{}", 1)]))
    moved = AccountRow("51002", "slave", "agent-2", '{"account_id":"51002","v":2}', 2)
    await store.write(Batch(accounts=[moved]))
    assert [a.account_id for a in await store.accounts()] == ["51001", "51002"]
    assert (await store.accounts())[1] == moved


# --- handshake evaluations --------------------------------------------------------------------------------


def evaluation(n: int, account: str = "51001", at: int = 0, status: str = "ACCEPTED") -> EvaluationRow:
    return EvaluationRow(uid(at, n), account, "slave", status, 2, "1.5.0", "[]", "[]", T0 + at)


def symbol_row(ev: EvaluationRow, broker: str, status: str = "ACCEPTED") -> SymbolEvaluationRow:
    return SymbolEvaluationRow(
        ev.evaluation_id, broker.split(".")[0], broker, status, "[]", "[]", 0, ev.evaluated_at_ms
    )


async def test_evaluations_read_back_newest_first_per_account_and_purge(store: Store) -> None:
    old, mid, new = evaluation(1, at=0), evaluation(2, at=10, status="WARNING"), evaluation(3, "51002", at=20)
    await store.write(
        Batch(
            evaluations=[old, mid, new],
            symbol_evaluations=[
                symbol_row(old, "XAUUSD.m"),
                symbol_row(mid, "GER30.x"),
                symbol_row(mid, "EURUSD.x"),
            ],
        )
    )
    assert await store.evaluations() == [new, mid, old]
    assert await store.evaluations("51001", limit=1) == [mid]
    assert [r.broker_symbol for r in await store.symbol_evaluations(mid.evaluation_id)] == [
        "EURUSD.x",
        "GER30.x",
    ]
    assert (await store.symbol_evaluations(old.evaluation_id))[0] == symbol_row(old, "XAUUSD.m")
    with pytest.raises(StoreError, match="already exists"):
        await store.write(Batch(evaluations=[old]))
    assert await store.purge_evaluations(T0 + 10) == 1
    assert await store.evaluations() == [new, mid]
    assert await store.symbol_evaluations(old.evaluation_id) == []
    assert await store.purge_evaluations(T0 + 10) == 0


# --- retention ----------------------------------------------------------------------------------------------


def copied_trade(n: int, closed_at: int | None, *, ticket_open: bool = False, pending: bool = False) -> Batch:
    """One master trade copied to one slave, with every kind of row kept for it; closed at ``closed_at``
    (or open), its slave ticket open or closed, its close command answered or still pending."""
    tid, execute, close = f"t-{n}", f"c-{n}-1", f"c-{n}-2"
    status: TradeStatus = "open" if closed_at is None else "closed"
    return Batch(
        trades=[trade(tid, master_ticket=n, status=status, closed_at_ms=closed_at)],
        commands=[
            command(execute, tid, status="ok", result="{}", completed_at_ms=T0 + 1),
            command(close, tid, kind="close", created_at_ms=T0 + 2),
        ],
        tickets=[ticket(number=9000 + n, trade_id=tid, status="open" if ticket_open else "closed")],
        decisions=[decision(f"d-{n}", tid)],
        events=[event(f"e-{n}-1", trade_id=tid), event(f"e-{n}-2", trade_id=tid, command_id=close)],
        journal=[
            JournalRow(execute, tid, "2001", "execute", "EA_CONFIRMED", "OK", 1, None, "", T0 + 1),
            JournalRow(
                close,
                tid,
                "2001",
                "close",
                "CORE_ACCEPTED",
                "PENDING" if pending else "OK",
                2,
                None,
                "",
                T0 + 2,
            ),
        ],
        retry_events=[RetryEventRow(f"r-{n}", close, 2, "no result", T0 + 3)],
    )


async def everything(s: Store, tid: str) -> list[object]:
    return [
        await s.get_trade(tid),
        *await s.commands(tid),
        *await s.tickets(tid),
        *await s.decisions(tid),
        *await s.events(tid),
        *[j for j in await s.journal(None) if j.trade_id == tid],
        *await s.retry_events(f"c-{tid[2:]}-2"),
    ]


async def test_purge_closed_trades_takes_old_closed_trades_with_all_their_rows(store: Store) -> None:
    await store.write(copied_trade(1, T0 + 10))
    await store.write(copied_trade(2, T0 + 20))
    await store.write(copied_trade(3, T0 + 30))  # closed too recently
    await store.write(copied_trade(4, None))  # open at the master
    await store.write(copied_trade(5, T0 + 5, ticket_open=True))  # a slave still holds a position
    await store.write(copied_trade(6, T0 + 5, pending=True))  # a command still unanswered
    unrelated = event("e-free", kind="account_online", account_id="2001")
    await store.write(Batch(events=[unrelated]))
    kept = {f"t-{n}": await everything(store, f"t-{n}") for n in (3, 4, 5, 6)}
    assert all(len(rows) == 10 for rows in kept.values())

    # oldest first, at most ``limit`` a call
    assert await store.purge_closed_trades(T0 + 30, limit=1) == 1
    assert await everything(store, "t-1") == [None]
    assert len(await everything(store, "t-2")) == 10
    assert await store.purge_closed_trades(T0 + 30, limit=10) == 1
    assert await everything(store, "t-2") == [None]
    assert await store.purge_closed_trades(T0 + 30, limit=10) == 0

    for tid, rows in kept.items():
        assert await everything(store, tid) == rows, tid
    assert [t.trade_id for t in await store.trades(limit=10)] == ["t-6", "t-5", "t-4", "t-3"]
    assert unrelated in await store.events()
    assert await store.retry_events("c-1-2") == []
    with pytest.raises(ValueError):
        await store.purge_closed_trades(T0, limit=-1)


async def test_purged_trade_ids_can_be_written_again(store: Store) -> None:
    await store.write(copied_trade(1, T0 + 10))
    assert await store.purge_closed_trades(T0 + 11) == 1
    await store.write(copied_trade(1, T0 + 10))
    assert len(await everything(store, "t-1")) == 10
