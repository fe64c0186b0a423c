"""``echo-copier simulate``: the whole system on a virtual clock with line faults and crash-restarts.

Each run is its own ``trio.run`` on a MockClock, so these tests are plain functions. A seed is a scenario:
the same seed gives the same summary, and on the seeds below every trade is copied once and closed."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
import trio

from echo.adapters.store.postgres import split_url
from echo.app.simulation import (
    Faults,
    FaultSpecError,
    SimOptions,
    main,
    parse_seeds,
    run_simulation,
    simulation_ok,
)
from tests.backends import postgres_schema

pytestmark = pytest.mark.e2e

FAULTS = Faults.parse("drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=3")


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """No log lines during the simulations (they cost more than the simulated work); the suite's logging
    configuration is restored afterwards."""
    saved = structlog.get_config()
    sim_log = logging.getLogger("echo.sim")
    saved_level = sim_log.level
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    sim_log.setLevel(logging.CRITICAL + 10)
    try:
        yield
    finally:
        structlog.configure(**saved)
        sim_log.setLevel(saved_level)


def _opts(seed: int, masters: int = 1, trades: int = 15, faults: Faults = FAULTS) -> SimOptions:
    return SimOptions(
        seed=seed, masters=masters, slaves=3, trades=trades, faults=faults, max_virtual_seconds=900
    )


def test_same_seed_same_summary() -> None:
    first = run_simulation(_opts(11, masters=2, trades=12))
    second = run_simulation(_opts(11, masters=2, trades=12))
    assert first == second
    assert first["faults"]["dropped"] > 0 and sum(first["faults"]["crashes"].values()) == 3


def test_another_seed_another_run() -> None:
    assert run_simulation(_opts(11, trades=8)) != run_simulation(_opts(12, trades=8))


@pytest.mark.parametrize(("seed", "masters"), [(1, 1), (5, 1), (10, 2), (13, 2)])
def test_every_trade_copied_once_and_closed_despite_faults(seed: int, masters: int) -> None:
    summary = run_simulation(_opts(seed, masters=masters))
    assert simulation_ok(summary), _explain(summary)
    assert summary["settled"]
    assert summary["lost"] == summary["duplicates"] == summary["open_after"] == 0
    assert summary["master_trades"] == 15 and summary["master_open_after"] == 0
    assert summary["copied"] + summary["omitted"] == summary["expected_copies"] == 45
    faults = summary["faults"]
    for kind in ("dropped", "duplicated", "reordered", "disconnects"):
        assert faults[kind] > 0, f"no line was {kind}: the run proves nothing about it"
    assert sum(faults["crashes"].values()) == 3
    assert summary["core"].get("resends", 0) > 0


def test_the_simulation_runs_core_and_the_agent_over_grpc_too() -> None:
    """The same faults with Core and the Agent joined by gRPC over localhost TCP, the copier process
    crashed and restarted (its gRPC server with it) and the Agent reconnecting by itself."""
    opts = SimOptions(
        seed=3, masters=1, slaves=3, trades=12, faults=FAULTS, max_virtual_seconds=900, transport="grpc"
    )
    summary = run_simulation(opts)
    assert simulation_ok(summary), _explain(summary)
    assert summary["copied"] + summary["omitted"] == summary["expected_copies"] == 36
    assert sum(summary["faults"]["crashes"].values()) == 3


@pytest.mark.postgres
def test_the_simulation_settles_on_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL's calls run in a thread; virtual time stands still meanwhile, so a run settles as on
    SQLite. Each seed of a multi-seed run gets a schema of its own (seeds never meet each other's trades),
    dropped once the seed passes."""
    with postgres_schema() as url:
        opts = dataclasses.replace(_opts(1, masters=2, trades=10), store_url=url)
        assert main(opts, seeds=[1, 2, 3, 4]) == 0, capsys.readouterr()
        lines = capsys.readouterr().out.splitlines()
        summary = json.loads(lines[-1])
        assert summary["ok"] == 4 and summary["totals"]["expected_copies"] == 120
        assert summary["totals"]["copied"] + summary["totals"]["omitted"] == 120
        assert summary["totals"]["dropped"] > 0 and summary["totals"]["crash_copier"] > 0
        assert all(" ok " in line for line in lines[:4]), lines
        assert leftover_schemas(url) == []


def leftover_schemas(url: str) -> list[str]:
    conninfo, schema = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{schema}\\_s%",)
        ).fetchall()
    return [r[0] for r in rows]


def test_no_faults_is_a_plain_run() -> None:
    summary = run_simulation(_opts(3, faults=Faults()))
    assert simulation_ok(summary), _explain(summary)
    assert summary["copied"] == 45 and summary["core"].get("resends", 0) == 0
    assert summary["faults"] == {
        "dropped": 0,
        "duplicated": 0,
        "reordered": 0,
        "disconnects": 0,
        "crashes": {"copier": 0, "slave": 0, "master": 0},
    }


def test_trio_scheduler_state_is_restored() -> None:
    run_mod: Any = trio._core._run
    before = (run_mod._r.getstate(), run_mod._ALLOW_DETERMINISTIC_SCHEDULING)
    run_simulation(_opts(2, trades=3, faults=Faults()))
    assert (run_mod._r.getstate(), run_mod._ALLOW_DETERMINISTIC_SCHEDULING) == before


def test_fault_spec() -> None:
    f = Faults.parse("drop=0.05, dup=0.1,reorder=0,disconnect=0.01,crash=5")
    assert (f.drop, f.dup, f.reorder, f.disconnect, f.crash) == (0.05, 0.1, 0.0, 0.01, 5)
    assert Faults.parse("") == Faults() and not Faults().on_lines
    assert Faults.parse(str(f)) == f
    for bad in ("drop=1.5", "lose=0.1", "crash=-1", "crash=1.5", "drop", "drop=0.1,drop=0.2"):
        with pytest.raises(FaultSpecError):
            Faults.parse(bad)
    assert parse_seeds("3") == [3] and parse_seeds("1..4") == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        parse_seeds("5..1")


def _explain(summary: dict[str, Any]) -> str:
    keys = ("seed", "settled", "lost", "duplicates", "open_after", "problems", "crash_events", "unsettled")
    return str({k: summary.get(k) for k in keys})
