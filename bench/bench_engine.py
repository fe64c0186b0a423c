"""Core's pure engine alone (no trio, no sockets, no store): what one copy costs in Core's own CPU. One
master and ``--slaves`` slaves are put online; each trade is then driven through the engine as the
all-in-one copier drives it: the master's intent, each command's ``Sent`` (the shell's send leaving), the
Agent's PIPE_DELIVERED ack and the slave's execution result, then the master's close and the same for
each close command. The clock is a hand-set one that moves 1 ms per step (no retry timer ever comes due).

Prints JSON: microseconds of this thread's CPU (other processes on a shared machine do not count) per
trade and per slave for each step (``intent_per_slave_us`` is the intent's
whole fan-out divided by the slave count), and ``per_copy_us``, the engine's CPU for one slave's open and
close all-in (the figure to set against the copier's CPU per 1,000 copies from ``bench_copy.py``). The
median of ``--rounds`` rounds of ``--trades`` trades each. ``--store FULL|NORMAL`` also writes every
transaction's batch to a SQLite store (``synchronous`` as given; a batch that sends nothing at NORMAL, as
the copier's journal does) and adds the store's CPU per copy, the rows per copy by kind and the writes
per copy: what Core's rows cost beside Core's own work. Logs go as JSON lines to a temporary file at
``--log-level`` (``warning``, the benchmark copier's setting, by default). Usage:
``python bench/bench_engine.py [--slaves 15] [--trades 300] [--rounds 5] [--log-level warning|info]
[--store FULL|NORMAL] [--one-per-group] [--profile FILE]`` (``--one-per-group``: each slave's result and
ack applied, and written, as a group of its own, as an idle copier gets them; by default a step's
messages for all slaves are one group, as a busy copier's router groups them; ``--profile`` writes a
cProfile of one more round to FILE).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echo.adapters.store.sqlite import SqliteStore
from echo.app import logs
from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.config import CoreConfig
from echo.domain.errors import ErrorCode
from echo.domain.ids import uuid7_from_int
from echo.domain.policy import Policies, Policy
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.domain.types import Role, Side, SymbolSpec
from echo.ports.store import Batch
from echo.services.core import engine, positions
from echo.services.core.context import Context
from echo.services.core.tx import Tx
from echo.services.ids import IdFactory

T0 = 1_764_000_000_000
AGENT = "agent-1"
MASTER = "9001"
EURUSD = SymbolSpec("EURUSD", "EURUSD", 5, 0.00001, 0.00001, 0.01, 100.0, 0.01, 0, 100_000.0, 1.0)
STEPS = ("intent", "sent", "delivered", "result", "close", "close_sent", "close_delivered", "close_result")


class StepClock:
    """A clock that moves 1 ms each time a step reads it through ``tick``."""

    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


def context(n_slaves: int) -> tuple[Context, StepClock, list[str]]:
    clock = StepClock(T0)
    cfg = CoreConfig()
    ctx = Context(
        clock,
        IdFactory(clock, random.Random(7)),
        cfg,
        Policies(Policy(fixed_lot=cfg.fixed_lot, copy_sl_tp=cfg.copy_sl_tp)),
        ProtocolPolicy(),
        SymbolCatalog(),
        delivery.Settings(),
        lambda at, key: None,
    )
    slaves = [str(51000 + i) for i in range(n_slaves)]
    online = [m.Handshake(MASTER, Role.MASTER, m.PROTOCOL_VERSION)]
    online += [m.Handshake(s, Role.SLAVE, m.PROTOCOL_VERSION, symbols=[EURUSD]) for s in slaves]
    engine.apply(ctx, [(AGENT, m.AccountOnline(AGENT, hs, clock.now)) for hs in online])
    return ctx, clock, slaves


_PARTS = tuple(f.name for f in fields(Batch) if f.name != "sync")
ONE_PER_GROUP = False
"""Each slave's result or ack applied as a group of its own (an idle copier), not the 15 as one group."""


@dataclass
class Rows:
    """Where each transaction's batch goes: a SQLite store (or nowhere), its CPU time and what it got."""

    store: SqliteStore | None = None
    seconds: float = 0.0
    writes: int = 0
    rows: Counter[str] = field(default_factory=Counter)

    def write(self, batch: Batch) -> None:
        if self.store is None or not batch:
            return
        t = time.thread_time()
        self.store._write(batch)  # the adapter's synchronous body (``write`` wraps it for trio)
        self.seconds += time.thread_time() - t
        self.writes += 1
        self.rows.update({p: len(getattr(batch, p)) for p in _PARTS if getattr(batch, p)})


def one_trade(
    ctx: Context, clock: StepClock, n: int, times: dict[str, float], out: Rows | None = None
) -> None:
    """One trade opened and closed through every slave, each step's time added to ``times`` (and each
    batch written to ``out``'s store)."""
    pc = time.thread_time  # CPU time of this thread: other processes on the machine do not count
    clock.now += 10
    tid = uuid7_from_int(clock.now, n)
    trace = f"{n + 1:032x}"
    ticket = 1000 + n

    def step(name: str, msgs: list[tuple[str, m.AgentToCore]]) -> Tx:
        clock.now += 1
        groups = [[msg] for msg in msgs] if ONE_PER_GROUP else [msgs]
        for group in groups:
            t = pc()
            tx = engine.apply(ctx, group)
            times[name] += pc() - t
            if out is not None:
                out.write(tx.batch)
        return tx  # the last group's (each step that uses it has one message)

    def sent(name: str, tx: Tx) -> list[m.Command]:
        clock.now += 1
        cmds: list[m.Command] = [
            s.message for s in tx.sends if isinstance(s.message, m.ExecuteOrder | m.CloseOrder)
        ]
        t = pc()
        for cmd in cmds:  # what the shell does as each command leaves (service.py)
            pend = ctx.state.pending.get(cmd.command_id)
            if pend is not None:
                positions.drive(ctx, pend, delivery.Sent(), Tx())
        times[name] += pc() - t
        return cmds

    def delivered(name: str, cmds: list[m.Command]) -> None:
        step(
            name,
            [
                (
                    AGENT,
                    m.CommandAck(
                        ctx.state.pending[c.command_id].account_id,
                        c.command_id,
                        m.AckStage.PIPE_DELIVERED,
                        m.AckResult.OK,
                    ),
                )
                for c in cmds
            ],
        )

    intent = m.TradeIntent(tid, trace, "EURUSD", Side.BUY, 0.1, 1.1, 7, ticket, stop_loss=1.09)
    tx = step("intent", [(AGENT, m.FromAccount(MASTER, intent, clock.now))])
    opens = sent("sent", tx)
    delivered("delivered", opens)
    accounts = [ctx.state.pending[c.command_id].account_id for c in opens]
    step(
        "result",
        [
            (
                AGENT,
                m.FromAccount(
                    account,
                    m.ExecutionResult(
                        c.command_id,
                        tid,
                        trace,
                        True,
                        ErrorCode.NO_ERROR,
                        ticket=ticket,
                        executed_price=1.1,
                        executed_lots=0.1,
                    ),
                    clock.now,
                ),
            )
            for account, c in zip(accounts, opens, strict=True)
        ],
    )
    event = uuid7_from_int(clock.now, n + 1)
    close = m.TradeClose(event, tid, trace, ticket, "EURUSD", 0.1, 0.0, 1.1, 7)
    tx = step("close", [(AGENT, m.FromAccount(MASTER, close, clock.now))])
    closes = sent("close_sent", tx)
    delivered("close_delivered", closes)
    step(
        "close_result",
        [
            (
                AGENT,
                m.FromAccount(
                    ctx.state.pending[c.command_id].account_id,
                    m.CloseResult(c.command_id, tid, trace, True, ErrorCode.NO_ERROR, ticket, 0.1, 1.1),
                    clock.now,
                ),
            )
            for c in closes
        ],
    )
    assert not ctx.state.trades, "every trade is closed and forgotten"


def rounds(args: argparse.Namespace, workdir: Path) -> tuple[list[dict[str, float]], list[Rows]]:
    out, stored = [], []
    for r in range(args.rounds):
        ctx, clock, _slaves = context(args.slaves)
        rows = Rows()
        if args.store:
            rows.store = SqliteStore.open(workdir / f"round{r}.db", synchronous=args.store)
        for n in range(20):  # warm-up
            one_trade(ctx, clock, n, dict.fromkeys(STEPS, 0.0), rows)
        rows.seconds, rows.writes, rows.rows = 0.0, 0, Counter()
        times = dict.fromkeys(STEPS, 0.0)
        for n in range(20, 20 + args.trades):
            one_trade(ctx, clock, n, times, rows)
        out.append({k: v / args.trades * 1e6 for k, v in times.items()})
        stored.append(rows)
    return out, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slaves", type=int, default=15)
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-level", choices=["warning", "info"], default="warning")
    parser.add_argument("--store", choices=["FULL", "NORMAL"], help="write each batch to a SQLite store")
    parser.add_argument("--one-per-group", action="store_true", help="apply results and acks one by one")
    parser.add_argument("--profile", type=Path, help="write a cProfile of one more round here")
    args = parser.parse_args()
    global ONE_PER_GROUP
    ONE_PER_GROUP = args.one_per_group
    with tempfile.TemporaryFile("w") as log_file, tempfile.TemporaryDirectory() as workdir:
        logs.configure("json", args.log_level, log_file)
        results, stored = rounds(args, Path(workdir))
        if args.profile is not None:
            prof = cprofile_round(args)
            prof.dump_stats(str(args.profile))
    per_trade = {k: round(statistics.median(r[k] for r in results), 1) for k in STEPS}
    n = args.slaves
    per_slave = {f"{k}_per_slave_us": round(v / n, 2) for k, v in per_trade.items()}
    per_copy = statistics.median(sum(r.values()) / n for r in results)
    copies = args.trades * n
    store: dict[str, object] = {}
    if args.store:
        store = {
            "store_synchronous": args.store,
            "store_per_copy_us": round(statistics.median(s.seconds / copies * 1e6 for s in stored), 1),
            "store_writes_per_copy": round(stored[0].writes / copies, 3),
            "store_rows_per_copy": {k: round(v / copies, 3) for k, v in sorted(stored[0].rows.items())},
        }
    print(
        json.dumps(
            {
                "slaves": n,
                "trades": args.trades,
                "rounds": args.rounds,
                "log_level": args.log_level,
                "one_per_group": args.one_per_group,
                "per_trade_us": per_trade,
                **per_slave,
                "per_copy_us": round(per_copy, 1),
                "cpu_s_per_1000_copies": round(per_copy / 1000, 3),
                **store,
            },
            indent=2,
        )
    )


def cprofile_round(args: argparse.Namespace) -> cProfile.Profile:
    ctx, clock, _slaves = context(args.slaves)
    for n in range(20):
        one_trade(ctx, clock, n, dict.fromkeys(STEPS, 0.0))
    prof = cProfile.Profile()
    times = dict.fromkeys(STEPS, 0.0)
    prof.enable()
    for n in range(20, 20 + args.trades):
        one_trade(ctx, clock, n, times)
    prof.disable()
    return prof


if __name__ == "__main__":
    main()
