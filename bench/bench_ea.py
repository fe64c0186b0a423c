"""Copy latency as a user of the compiled EAs sees it, their own timers included: the all-in-one copier
(``python -m echo run --role all``, SQLite journal, ``synchronous`` FULL) as a process, one compiled
EchoMaster and ``--slaves`` compiled EchoSlaves (``mql4/harness``: the MQL4 sources translated to C++ and
built with g++ against the MT4 shim), each its own process on the copier's Unix socket, for each
``--timer-ms`` value (the ``TimerMs`` input of both EAs).

The master's terminal opens a market order every ``--interval`` seconds, as a person would (the shim's
control channel, served as the command arrives, not on the EA's timer), and closes it ``--hold`` seconds
later. Every terminal notes its trade calls with their time in a file (the shim's ``ECHO_EVENTS``), so each
sample is measured on the EAs' side: from the master's OrderSend to each slave's OrderSend (``open``), and
from the master's OrderClose to each slave's OrderClose (``close``); ``first``: the first slave, ``last``:
the last one; ``master_timer_ms``: from the master's OrderSend to its first write on the pipe after it (the
trade_intent, on the tick that noticed the order), ``after_master_write_first_ms``: the rest, to the first
slave's OrderSend (the copier, and the slave's timer). A slave order is matched to the master's by its
comment (the trade_id Core stamps on it, looked up in the copier's store by the master's ticket).

CPU of each process, in percent of one core, is read from ``/proc/PID/schedstat`` (nanoseconds on a CPU):
``idle``, connected with no trades for ``--idle`` seconds (the EAs' timers, heartbeats, quotes and
snapshots), and ``paced``, while the trades run. A short timer costs CPU in every terminal, all the time;
``--open-orders N`` leaves N orders open on the master (copied to the slaves) throughout, which the EAs walk
on their ticks.

Prints JSON: this machine's floor first (``bench/floor.py``), then one run per (TimerMs, slave count) with
p50/p99/max/mean in milliseconds, the p50s also as multiples of the copy floor. Usage: ``python
bench/bench_ea.py [--timer-ms 1,5,10,20,50] [--slaves 1,5] [--trades 40] [--interval 0.2] [--hold 0.5]
[--idle 3] [--open-orders 0]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # bench/floor.py, beside this file
from bench_copy import _stats, drain, kill_processes, open_copier, stop_processes, wait_ready

from echo.domain.ids import trade_comment
from tests.mql4.harness_support import MQL4, Terminal, build

MASTER = "9101"
MASTER_BROKER = """account 9101 USD 100000 100
tickets 90000000
symbol XAUUSD.r 2 0.01 0.01 0.01 100 0.01 0 100 1.0 2398.40 2398.60
"""
SLAVE_BROKER = """account {account} USD 10000 100
tickets {tickets}
symbol XAUUSD.m 2 0.01 0.01 0.01 100 0.01 30 100 1.0 2398.30 2398.70
"""


@dataclass(frozen=True)
class Event:
    """One line of a terminal's ``ECHO_EVENTS`` file."""

    at_ns: int
    kind: str
    """order_send, order_close or order_modify."""
    ticket: int
    comment: str


def read_events(path: Path) -> list[Event]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    out = []
    for line in text[: text.rfind("\n") + 1].splitlines():  # a line still being written: next time
        at, kind, ticket, *rest = line.split(" ", 3)
        out.append(Event(int(at), kind, int(ticket), rest[0] if rest else ""))
    return out


def cpu_ns(pid: int) -> int:
    """Nanoseconds a running process has spent on a CPU (Linux ``/proc/PID/schedstat``, all its threads)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass
class EA:
    """A compiled EA as a terminal process: its broker, files, control channel and events file."""

    name: str
    terminal: Terminal
    events: Path
    log: Path
    log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.terminal.proc is not None
        return self.terminal.proc.pid

    async def start(self, stack: ExitStack) -> None:
        t = self.terminal
        t.stop_file.unlink(missing_ok=True)
        self.log_file = stack.enter_context(self.log.open("wb"))
        t.proc = await trio.lowlevel.open_process(
            t.argv, env=t.env, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file
        )

    def said(self, text: str) -> bool:
        return text in self.log.read_text(encoding="utf-8", errors="replace")


def make_ea(exe: Path, home: Path, broker: str, sock: Path, timer_ms: int, **inputs: str) -> EA:
    env = {**os.environ, "ECHO_SOCKET": str(sock), "ECHO_EVENTS": str(home.with_suffix(".events"))}
    terminal = Terminal(
        [str(exe)], home, broker, env, home / "control.sock", {"TimerMs": str(timer_ms), **inputs}
    )
    return EA(home.name, terminal, home.with_suffix(".events"), home.with_suffix(".log"))


async def wait_until(check: Any, within_s: float, what: str) -> None:
    """Poll ``check()`` (on files the EAs write) every 5 ms; the samples' times come from the EAs, not from
    this loop."""
    with trio.move_on_after(within_s) as scope:
        while not check():  # noqa: ASYNC110 (nothing to wait on but the files)
            await trio.sleep(0.005)
    if scope.cancelled_caught:
        raise SystemExit(f"timed out waiting for {what}")


def sends(ea: EA, kind: str = "order_send") -> list[Event]:
    return [e for e in read_events(ea.events) if e.kind == kind and e.ticket > 0]


async def one_trade(master: EA, slaves: list[EA], within_s: float = 10.0) -> None:
    """Open and close one trade and wait until every slave has done both (warm-up)."""
    opened = [len(sends(s)) for s in slaves]
    closed = [len(sends(s, "order_close")) for s in slaves]
    ticket = int((await master.terminal.order("open XAUUSD.r BUY 1.0 0 0")).split()[1])
    await wait_until(
        lambda: all(len(sends(s)) > n for s, n in zip(slaves, opened, strict=True)),
        within_s,
        "a warm-up copy",
    )
    await master.terminal.order(f"close {ticket} 1.0")
    await wait_until(
        lambda: all(len(sends(s, "order_close")) > n for s, n in zip(slaves, closed, strict=True)),
        within_s,
        "a warm-up close",
    )


async def open_positions(master: EA, slaves: list[EA], n: int) -> None:
    """``n`` orders opened on the master and left open (copied to every slave): what the EAs then walk on
    every timer tick (the master's scan of its orders, the slaves' snapshots)."""
    if not n:
        return
    before = [len(sends(s)) for s in slaves]
    for _ in range(n):
        await master.terminal.order("open XAUUSD.r BUY 0.01 0 0")
    await wait_until(
        lambda: all(len(sends(s)) >= b + n for s, b in zip(slaves, before, strict=True)),
        max(30.0, n / 5),
        f"{n} open orders copied",
    )


async def paced_trades(master: EA, slaves: list[EA], trades: int, interval: float, hold: float) -> list[int]:
    """Opens every ``interval`` seconds, each closed ``hold`` seconds after it opened, on one control
    connection; returns the master's tickets once every slave has opened and closed each copy."""
    opened_before = [len(sends(s)) for s in slaves]
    closed_before = [len(sends(s, "order_close")) for s in slaves]
    start = trio.current_time()
    plan = sorted(
        [(start + k * interval, 0, k) for k in range(trades)]
        + [(start + k * interval + hold, 1, k) for k in range(trades)]
    )
    tickets: dict[int, int] = {}
    for at, action, k in plan:
        await trio.sleep_until(at)
        if action == 0:
            side = "BUY" if k % 2 else "SELL"
            tickets[k] = int((await master.terminal.order(f"open XAUUSD.r {side} 1.0 0 0")).split()[1])
        else:
            await master.terminal.order(f"close {tickets[k]} 1.0")
    await wait_until(
        lambda: all(
            len(sends(s)) >= n + trades and len(sends(s, "order_close")) >= c + trades
            for s, n, c in zip(slaves, opened_before, closed_before, strict=True)
        ),
        30,
        "every copy opened and closed",
    )
    return [tickets[k] for k in range(trades)]


def comments_by_ticket(db: Path, tickets: list[int]) -> dict[int, str]:
    """The comment Core stamps on the slaves' copies of each master ticket (from the copier's store)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT master_ticket, trade_id FROM trades WHERE master_account = ?", (MASTER,)
        ).fetchall()
    found = {int(ticket): trade_comment(trade_id) for ticket, trade_id in rows}
    return {t: found[t] for t in tickets}


def latencies(
    master: EA, slaves: list[EA], tickets: list[int], comments: dict[int, str]
) -> dict[str, list[float]]:
    """Per master ticket, milliseconds from the master's call to the first and the last slave's."""
    m_open = {e.ticket: e.at_ns for e in sends(master)}
    m_close = {e.ticket: e.at_ns for e in sends(master, "order_close")}
    s_open: list[dict[str, int]] = []
    s_close: list[dict[str, int]] = []
    for s in slaves:
        opens = sends(s)
        s_open.append({e.comment: e.at_ns for e in opens})
        comment_of = {e.ticket: e.comment for e in opens}
        s_close.append({comment_of[e.ticket]: e.at_ns for e in sends(s, "order_close")})
    writes = sorted(e.at_ns for e in sends(master, "pipe_write"))
    out: dict[str, list[float]] = {
        "open_first": [],
        "open_last": [],
        "close_first": [],
        "close_last": [],
        "master_wait": [],
        "after_master": [],
    }
    for ticket in tickets:
        c = comments[ticket]
        opens_ms = [(so[c] - m_open[ticket]) / 1e6 for so in s_open]
        # the master's first write after its order: the trade_intent, sent on the tick that noticed it
        written = writes[bisect.bisect_left(writes, m_open[ticket])]
        out["master_wait"].append((written - m_open[ticket]) / 1e6)
        out["after_master"].append(min(opens_ms) - (written - m_open[ticket]) / 1e6)
        closes_ms = [(sc[c] - m_close[ticket]) / 1e6 for sc in s_close]
        out["open_first"].append(min(opens_ms))
        out["open_last"].append(max(opens_ms))
        out["close_first"].append(min(closes_ms))
        out["close_last"].append(max(closes_ms))
    return out


def pct_of_core(before: int, after: int, seconds: float) -> float:
    return round((after - before) / 1e9 / seconds * 100, 3)


async def bench(
    args: argparse.Namespace, exes: dict[str, Path], workdir: Path, timer_ms: int, n_slaves: int
) -> dict[str, Any]:
    sock, db = workdir / "echo.sock", workdir / "echo.db"
    config = workdir / "echo.toml"
    config.write_text(
        f'[core]\nfixed_lot = 1.0\n[agent]\nsocket_path = "{sock}"\n'
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "FULL"\n[log]\nlevel = "warning"\n'
    )
    slaves = [
        make_ea(
            exes["slave"],
            workdir / f"slave-{i}",
            SLAVE_BROKER.format(account=51000 + i, tickets=70000000 + 1000000 * i),
            sock,
            timer_ms,
        )
        for i in range(n_slaves)
    ]
    master = make_ea(
        exes["master"], workdir / "master", MASTER_BROKER, sock, timer_ms, SymbolMappings="XAUUSD:XAUUSD.r"
    )
    eas = [*slaves, master]
    copier = await open_copier(config)
    procs: list[trio.Process] = [copier]
    try:
        with ExitStack() as stack:
            await wait_ready(copier)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, copier)
                for ea in eas:
                    await ea.start(stack)
                    assert ea.terminal.proc is not None
                    procs.append(ea.terminal.proc)
                # each EA logs Core's verdict on its handshake (symbol_registration_result / handshake_result)
                await wait_until(lambda: all(ea.said("handshake ") for ea in eas), 30, "every handshake")
                for _ in range(args.warmup):
                    await one_trade(master, slaves)
                await open_positions(master, slaves, args.open_orders)
                await trio.sleep(0.5)  # the warm-up's snapshots and results settled

                idle_marks = [cpu_ns(p) for p in (copier.pid, *(ea.pid for ea in eas))]
                t0 = time.monotonic()
                await trio.sleep(args.idle)
                idle_s = time.monotonic() - t0
                idle_end = [cpu_ns(p) for p in (copier.pid, *(ea.pid for ea in eas))]

                t1 = time.monotonic()
                tickets = await paced_trades(master, slaves, args.trades, args.interval, args.hold)
                paced_s = time.monotonic() - t1
                paced_end = [cpu_ns(p) for p in (copier.pid, *(ea.pid for ea in eas))]

                for ea in eas:
                    await ea.terminal.stop()
                await stop_processes([copier])
                nursery.cancel_scope.cancel()
    finally:
        await kill_processes(procs)
    comments = comments_by_ticket(db, tickets)
    lat = latencies(master, slaves, tickets, comments)

    def cpu(i: int, before: list[int], after: list[int], seconds: float) -> float:
        return pct_of_core(before[i], after[i], seconds)

    n = len(eas) + 1
    slave_idx = range(1, 1 + n_slaves)
    return {
        "timer_ms": timer_ms,
        "slaves": n_slaves,
        "trades": args.trades,
        "open_orders": args.open_orders,
        "open_first_ms": _stats(lat["open_first"]),
        "open_last_ms": _stats(lat["open_last"]),
        "close_first_ms": _stats(lat["close_first"]),
        "close_last_ms": _stats(lat["close_last"]),
        "master_timer_ms": _stats(lat["master_wait"]),
        "after_master_write_first_ms": _stats(lat["after_master"]),
        "cpu_pct_of_core": {
            "idle": {
                "master": cpu(n - 1, idle_marks, idle_end, idle_s),
                "slave_mean": round(
                    sum(cpu(i, idle_marks, idle_end, idle_s) for i in slave_idx) / n_slaves, 3
                ),
                "copier": cpu(0, idle_marks, idle_end, idle_s),
            },
            "paced": {
                "master": cpu(n - 1, idle_end, paced_end, paced_s),
                "slave_mean": round(
                    sum(cpu(i, idle_end, paced_end, paced_s) for i in slave_idx) / n_slaves, 3
                ),
                "copier": cpu(0, idle_end, paced_end, paced_s),
            },
        },
        "paced_seconds": round(paced_s, 2),
        "copier_cpu_s_per_1000_copies": round(
            (paced_end[0] - idle_end[0]) / 1e9 / (args.trades * n_slaves) * 1000, 3
        ),  # opens and closes, idle between them included
    }


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a list of integers such as 1,5,20, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def summary(runs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One line per TimerMs, from its runs with the most slaves (means when a value was run more than once):
    the open latency to the first and the last slave, and the EAs' CPU idle and paced (percent of a core)."""
    for timer in sorted({r["timer_ms"] for r in runs}):
        most = max(r["slaves"] for r in runs if r["timer_ms"] == timer)
        these = [r for r in runs if r["timer_ms"] == timer and r["slaves"] == most]

        def mean(*path: str, these: list[dict[str, Any]] = these) -> float:
            values = []
            for r in these:
                v: Any = r
                for key in path:
                    v = v[key]
                values.append(float(v))
            return round(sum(values) / len(values), 3)

        yield {
            "timer_ms": timer,
            "slaves": most,
            "rounds": len(these),
            "open_first_p50_ms": mean("open_first_ms", "p50"),
            "open_last_p50_ms": mean("open_last_ms", "p50"),
            "open_last_p99_ms": mean("open_last_ms", "p99"),
            "slave_idle_cpu_pct": mean("cpu_pct_of_core", "idle", "slave_mean"),
            "master_idle_cpu_pct": mean("cpu_pct_of_core", "idle", "master"),
            "slave_paced_cpu_pct": mean("cpu_pct_of_core", "paced", "slave_mean"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timer-ms", type=int_list, default=[1, 5, 10, 20, 50], help="TimerMs values")
    parser.add_argument("--slaves", type=int_list, default=[1, 5], help="slave counts: 1,5")
    parser.add_argument("--trades", type=int, default=40, help="paced trades per run")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between the master's opens")
    parser.add_argument("--hold", type=float, default=0.5, help="seconds from an open to its close")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement")
    parser.add_argument(
        "--open-orders", type=int, default=0, help="orders left open on the master (and copied) throughout"
    )
    parser.add_argument("--warmup", type=int, default=2, help="trades opened and closed before measuring")
    args = parser.parse_args()
    machine = floor.measure()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="echo-bench-ea-") as tmp:
        build_dir = Path(tmp) / "build"
        build_dir.mkdir()
        exes = {
            "master": build(MQL4 / "EchoMaster.mq4", build_dir),
            "slave": build(MQL4 / "EchoSlave.mq4", build_dir),
        }
        for timer_ms in args.timer_ms:
            for n_slaves in args.slaves:
                workdir = Path(tmp) / f"run{len(runs)}-t{timer_ms}-s{n_slaves}"  # a value may repeat
                workdir.mkdir()
                run = trio.run(bench, args, exes, workdir, timer_ms, n_slaves)
                for key in ("open_first_ms", "open_last_ms"):
                    run[key]["p50_x_floor"] = floor.ratio(run[key]["p50"], machine["copy_floor_us"])
                runs.append(run)
                print(json.dumps({"progress": run["timer_ms"], "slaves": n_slaves}), file=sys.stderr)
    print(json.dumps({"floor": machine, "runs": runs, "summary": list(summary(runs))}))


if __name__ == "__main__":
    main()
