"""The AckLedger contract: every test runs against MemoryLedger and SqliteLedger; the SQLite file is also
reopened, as an Agent restart would."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.ledger.sqlite import SqliteLedger
from echo.ports.ledger import AckLedger, LedgerEntry, LedgerError


def entry(n: int, attempts: int = 0, affirmed: int = 1000) -> LedgerEntry:
    return LedgerEntry(
        f"cmd-{n}", f"5100{n % 3}", b'{"type":"execute_order","n":%d}\n' % n, affirmed, attempts
    )


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AckLedger]:
    led: AckLedger = MemoryLedger() if request.param == "memory" else SqliteLedger.open(tmp_path / "acks.db")
    yield led
    led.close()


def test_empty_ledger_loads_nothing(ledger: AckLedger) -> None:
    assert ledger.load() == []


def test_puts_load_back_in_arrival_order(ledger: AckLedger) -> None:
    ledger.apply([entry(3), entry(1)], [])
    ledger.apply([entry(2)], [])
    assert [e.command_id for e in ledger.load()] == ["cmd-3", "cmd-1", "cmd-2"]
    assert ledger.load()[0] == entry(3)


def test_a_put_of_a_held_command_updates_it_and_keeps_its_place(ledger: AckLedger) -> None:
    ledger.apply([entry(1), entry(2)], [])
    ledger.apply([entry(1, attempts=4, affirmed=9000)], [])
    loaded = ledger.load()
    assert [e.command_id for e in loaded] == ["cmd-1", "cmd-2"]
    assert (loaded[0].attempts, loaded[0].affirmed_ms) == (4, 9000)


def test_deletes_win_and_unknown_deletes_are_harmless(ledger: AckLedger) -> None:
    ledger.apply([entry(1), entry(2)], ["cmd-1", "cmd-404"])
    assert [e.command_id for e in ledger.load()] == ["cmd-2"]


def test_a_closed_ledger_refuses_with_ledger_error(ledger: AckLedger) -> None:
    ledger.close()
    with pytest.raises(LedgerError):
        ledger.load()
    with pytest.raises(LedgerError):
        ledger.apply([entry(1)], [])


def test_sqlite_ledger_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "acks.db"
    first = SqliteLedger.open(path)
    first.apply([entry(1), entry(2, attempts=2)], ["cmd-1"])
    first.close()
    again = SqliteLedger.open(path)
    assert again.load() == [entry(2, attempts=2)]
    again.close()


def test_sqlite_ledger_refuses_a_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "acks.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(LedgerError, match="schema 99"):
        SqliteLedger.open(path)


def test_sqlite_ledger_in_a_folder_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match=f"the folder {tmp_path / 'agent'} does not exist"):
        SqliteLedger.open(tmp_path / "agent" / "acks.db")
    assert not (tmp_path / "agent").exists()


def test_sqlite_ledger_in_an_unwritable_place_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError):
        SqliteLedger.open(blocker / "acks.db")


OPS = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 8), st.integers(0, 5)), max_size=4),
        st.lists(st.integers(0, 8).map(lambda n: f"cmd-{n}"), max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_memory_and_sqlite_agree_on_any_sequence(ops: list[tuple[list[tuple[int, int]], list[str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mem, sql = MemoryLedger(), SqliteLedger.open(Path(tmp) / "acks.db")
        try:
            for puts, deletes in ops:
                batch = list({n: entry(n, a) for n, a in puts}.values())
                mem.apply(batch, deletes)
                sql.apply(batch, deletes)
            assert mem.load() == sql.load()
        finally:
            sql.close()
