"""Copy latency of the all-in-one copier, measured from outside: ``echo-copier run --role all`` as its own
process (SQLite journal, ``synchronous`` FULL by default), and in this process one simulated master and
``--slaves`` simulated slaves on its socket. The master opens one trade at a time; each sample is from the
master writing its intent line to a slave reading the ``execute_order`` line (``first``: the first slave
to read it, ``last``: the fan-out complete). A pause between trades lets the results settle, so this is
the latency of an idle copier, not of one under load (``make demo-big`` shows that).

``--slaves 1,5,15,30,60`` runs once per count, each against a fresh copier, and fits the cost of one
more slave (``per_slave_us``: the slope of the fan-out-complete p50 over the slave count).

Prints JSON: this machine's floor measured first in the same run (``bench/floor.py``), then per slave
count p50/p99/max/mean in milliseconds with the p50s as multiples of the copy floor (two Unix socket hops
and one durable SQLite commit), and the copier's CPU seconds per 1,000 copies (idle between trades
included). Usage: ``python bench/bench_copy.py [--trades 300] [--slaves 1,5,15,30,60]
[--synchronous FULL|NORMAL] [--pause 0.02] [--metrics off|on|both] [--telemetry off|on|both]``.

``--telemetry on`` runs the copier with traces exported by OTLP to a receiver in this process
(``tests/otlp.py``, which counts the spans it got); ``both`` runs each slave count off, on, off and on
again and gives the overhead of traces on against off (``telemetry_overhead``).

With traces on, each run also gives ``copier_side``: per open trade, from the spans' own timestamps (the
copier's clock, not the terminals'), the p50 in microseconds of each stage from the Agent reading the
intent line: to Core's worker taking it (``to_core``), Core's decisions (``decide``), the journal's commit
(``commit``), from the commit to the Agent queueing the first slave's line (``commit_to_first_write``), and
to the first and the last slave's line queued (``first_write``, ``last_write``). ``--breakdown`` is
``--telemetry on`` for that table (the copier exports every span: a few percent slower).

``--metrics on`` serves the copier's metrics (``metrics.listen``) and scrapes ``/metrics`` every
``--scrape-every`` seconds (15, a common Prometheus setting) during the run; ``both`` runs each slave
count with metrics off, then on, then off and on again (same sitting) and gives the overhead of metrics
on against off (``metrics_overhead``: ratios, 1.05 is 5% more).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.accounts import master_ids, slave_ids
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port
from tests.otlp import ReceivedSpan, otlp_receiver

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # bench/floor.py, beside this file


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(v[len(v) // 2], 3),
        "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 3),
        "max": round(v[-1], 3),
        "mean": round(statistics.fmean(v), 3),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def rss_mb(pid: int) -> float:
    """Resident memory of a running process in MB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def wait_ready(proc: trio.Process, said: bytes = b"copying") -> None:
    """Until the process's log says ``said`` (the copier is serving)."""
    assert proc.stderr is not None
    seen = b""
    while said not in seen:
        chunk = await proc.stderr.receive_some()
        if not chunk:
            raise SystemExit(f"the copier ended: {seen.decode(errors='replace')}")
        seen += chunk


async def open_copier(config: Path) -> trio.Process:
    """``echo-copier run --role all`` under ``config`` as its own process (its log on a pipe: ``_wait_ready``,
    then ``_drain``)."""
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "echo", "run", "--role", "all", "--config", str(config)],
        stderr=subprocess.PIPE,
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def start_terminals(
    nursery: trio.Nursery,
    market: SimMarket,
    rng: random.Random,
    connect: Callable[[], Awaitable[trio.abc.Stream]],
    on_execute: Callable[[str, str, int], None],
    slave_accounts: list[str],
    master_id: str = master_ids(1)[0],
    master_seed: int = 3,
    slave_connect: Callable[[int], Callable[[], Awaitable[trio.abc.Stream]]] | None = None,
    slaves_out: list[SimSlaveEA] | None = None,
) -> SimMasterEA:
    """A simulated master and its slaves (broker profiles by position) on ``connect`` (slave ``i`` on
    ``slave_connect(i)`` when given), running; returns the master once Core has evaluated every one's
    handshake. The slaves are appended to ``slaves_out`` when given."""
    slaves = [
        SimSlaveEA(
            account,
            slave_broker(i, market, random.Random(rng.random())),
            slave_connect(i) if slave_connect is not None else connect,
            now_ms,
            on_execute_received=on_execute,
        )
        for i, account in enumerate(slave_accounts)
    ]
    master = SimMasterEA(master_id, master_broker(market, random.Random(master_seed)), connect, now_ms, rng)
    for terminal in [*slaves, master]:
        await nursery.start(terminal.run)
    while not all(t.feedback_ms for t in [*slaves, master]):  # noqa: ASYNC110 (every handshake evaluated)
        await trio.sleep(0.01)
    if slaves_out is not None:
        slaves_out.extend(slaves)
    return master


async def stop_processes(processes: list[trio.Process], grace_s: float = 30.0) -> None:
    """SIGTERM each process and wait for it to exit, SIGKILL after ``grace_s``. Call it while their logs
    are still drained: a process blocked writing a full log pipe never gets to its exit."""
    live = [p for p in processes if p.returncode is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace_s):
        for proc in live:
            await proc.wait()
    await kill_processes(live)


async def kill_processes(processes: list[trio.Process]) -> None:
    """SIGKILL whatever is still running and reap it (the way out when a benchmark fails)."""
    with trio.CancelScope(shield=True):
        for proc in processes:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def drain(proc: trio.Process, tail: bytearray | None = None) -> None:
    """Read a child's log pipe to its end, so the child never blocks writing it; the last 2,000 bytes
    are kept in ``tail`` when given (what a process that died said last)."""
    assert proc.stderr is not None
    while chunk := await proc.stderr.receive_some():
        if tail is not None:
            tail += chunk
            del tail[:-2000]


class Copies:
    """When each slave read each trade's ``execute_order`` (``on_execute`` for ``start_terminals``)."""

    def __init__(self, slaves: int) -> None:
        self.slaves = slaves
        self.received: dict[str, list[int]] = defaultdict(list)
        self.complete: dict[str, trio.Event] = defaultdict(trio.Event)

    def on_execute(self, trade_id: str, _account: str, t_ns: int) -> None:
        self.received[trade_id].append(t_ns)
        if len(self.received[trade_id]) == self.slaves:
            self.complete[trade_id].set()


async def idle_copies(
    master: SimMasterEA, copies: Copies, trades: int, warmup: int, pause: float
) -> tuple[list[float], list[float]]:
    """One trade at a time, opened and closed with the results settled in between: the milliseconds from
    the master writing its intent to the first slave, and to the last one, reading the order."""
    first: list[float] = []
    last: list[float] = []
    for n in range(warmup + trades):
        trade_id = await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.1)
        with trio.fail_after(10):
            await copies.complete[trade_id].wait()
        written = master.intent_written_ns[trade_id]
        if n >= warmup:
            first.append((min(copies.received[trade_id]) - written) / 1e6)
            last.append((max(copies.received[trade_id]) - written) / 1e6)
        await master.wait_all_acked()
        await master.close(trade_id)
        await master.wait_all_acked()
        await trio.sleep(pause)
    return first, last


async def scrape(url: str, every_s: float) -> None:
    """Read ``/metrics`` every ``every_s`` seconds, as Prometheus would, until the copier stops."""
    while True:
        try:
            await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            return  # the copier is stopping
        await trio.sleep(every_s)


async def bench(
    args: argparse.Namespace, workdir: Path, n_slaves: int, metrics: bool = False, otlp: str = ""
) -> dict[str, object]:
    sock, db = workdir / "echo.sock", workdir / "echo.db"
    config = workdir / "echo.toml"
    port = free_port()
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n'
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "{args.synchronous}"\n'
        '[log]\nlevel = "warning"\n'
        + (f'[metrics]\nlisten = "127.0.0.1:{port}"\n' if metrics else "")
        + (f'[telemetry]\nendpoint = "{otlp}"\nsampling = {args.sampling}\n' if otlp else "")
    )
    copier = await open_copier(config)
    copies = Copies(n_slaves)

    async def connect() -> trio.abc.Stream:
        return await connect_unix(str(sock))

    cpu = 0.0
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    try:
        await wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, copier)
            nursery.start_soon(market.run)
            if metrics:
                nursery.start_soon(scrape, f"http://127.0.0.1:{port}/metrics", args.scrape_every)
            master = await start_terminals(
                nursery, market, rng, connect, copies.on_execute, slave_ids(n_slaves)
            )
            await trio.sleep(0.5)
            cpu_before = cpu_seconds(copier.pid)
            first, last = await idle_copies(master, copies, args.trades, args.warmup, args.pause)
            cpu = cpu_seconds(copier.pid) - cpu_before
            await stop_processes([copier])
            nursery.cancel_scope.cancel()
    finally:
        await kill_processes([copier])
    return {
        "slaves": n_slaves,
        "trades": args.trades,
        "synchronous": args.synchronous,
        "metrics": metrics,
        "telemetry": bool(otlp),
        **({"sampling": args.sampling} if otlp else {}),
        "first_slave_ms": _stats(first),
        "fanout_complete_ms": _stats(last),
        "copier_cpu_s_per_1000_copies": round(cpu / (args.trades * n_slaves) * 1000, 3),
    }


def slope_us(xs: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` (ms) over ``xs``, in microseconds per unit; None with one point."""
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
                 / sum((x - mx) ** 2 for x in xs) * 1000, 1)  # fmt: skip


def slave_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a list of slave counts such as 1,5,15, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"slave counts must be >= 1, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--slaves", type=slave_counts, default=[15], help="one count or a list: 1,5,15")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between trades")
    parser.add_argument("--metrics", choices=["off", "on", "both"], default="off")
    parser.add_argument("--scrape-every", type=float, default=15.0, help="seconds between scrapes")
    parser.add_argument(
        "--telemetry",
        choices=["off", "on", "both"],
        default="off",
        help="traces exported by OTLP to a local receiver; both: off, on, off, on, with the overhead",
    )
    parser.add_argument("--sampling", type=float, default=1.0, help="telemetry.sampling with traces on")
    parser.add_argument(
        "--breakdown", action="store_true", help="--telemetry on, for where an open's time goes in the copier"
    )
    args = parser.parse_args()
    if args.breakdown:
        args.telemetry = "on"
    if args.metrics == "both" and args.telemetry == "both":
        parser.error("--metrics both and --telemetry both: compare one at a time")
    sides = {"off": [False], "on": [True], "both": [False, True, False, True]}
    modes = [(m, t) for m in sides[args.metrics] for t in sides[args.telemetry]]
    machine = floor.measure()
    runs = []
    with otlp_receiver() if args.telemetry != "off" else nullcontext() as receiver:
        for n_slaves in args.slaves:
            for metrics, traces in modes:
                with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
                    before = len(receiver.spans) if receiver else 0
                    otlp = receiver.url if receiver and traces else ""
                    run: dict[str, Any] = trio.run(bench, args, Path(tmp), n_slaves, metrics, otlp)
                if otlp:
                    spans = receiver.spans[before:]
                    run["spans_exported"] = len(spans)
                    run["copier_side"] = copier_side(spans)
                for key in ("first_slave_ms", "fanout_complete_ms"):
                    run[key]["p50_x_floor"] = floor.ratio(run[key]["p50"], machine["copy_floor_us"])
                runs.append(run)
    plain = list(
        {r["slaves"]: r for r in reversed(runs) if not r["metrics"] and not r["telemetry"]}.values()
    )  # one per count
    result: dict[str, Any] = {
        "floor": machine,
        "runs": runs,
        "per_slave_us": slope_us(
            [r["slaves"] for r in plain], [r["fanout_complete_ms"]["p50"] for r in plain]
        ),
    }
    if args.metrics == "both":
        result["metrics_overhead"] = overhead(runs, "metrics")
    if args.telemetry == "both":
        result["telemetry_overhead"] = overhead(runs, "telemetry")
    print(json.dumps(result))


def copier_side(spans: list[ReceivedSpan]) -> dict[str, float]:
    """Where each open trade's time went inside the copier (see the module's doc), p50s in microseconds."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        children[s.parent_span_id].append(s)
    stages: dict[str, list[float]] = defaultdict(list)
    for handle in spans:
        if handle.name != "core.handle" or handle.attributes.get("message") != "TradeIntent":
            continue
        receive = by_id.get(handle.parent_span_id)
        kids = {k.name: k for k in children[handle.span_id]}
        writes = sorted(k.start_ns for k in children[handle.span_id] if k.name == "agent.command.write")
        if (
            receive is None
            or not writes
            or "core.journal.commit" not in kids
            or "core.engine.apply" not in kids
        ):
            continue
        t0, apply, commit = receive.start_ns, kids["core.engine.apply"], kids["core.journal.commit"]
        for name, ns in (
            ("to_core", handle.start_ns - t0),
            ("decide", apply.end_ns - apply.start_ns),
            ("commit", commit.end_ns - commit.start_ns),
            ("commit_to_first_write", writes[0] - commit.end_ns),
            ("first_write", writes[0] - t0),
            ("last_write", writes[-1] - t0),
        ):
            stages[name].append(ns / 1000)
    return {
        "trades": len(stages["first_write"]),
        **{name: round(statistics.median(v), 1) for name, v in stages.items()},
    }


def overhead(runs: list[dict[str, Any]], flag: str) -> dict[str, dict[str, float]]:
    """Per slave count: ``flag`` (metrics or telemetry) on against off (means of the runs of each), as
    ratios (1.05: 5% more)."""
    out: dict[str, dict[str, float]] = {}
    for n in sorted({r["slaves"] for r in runs}):

        def mean(key: str, sub: str | None, on: bool, n: int = n) -> float:
            values = [r[key][sub] if sub else r[key] for r in runs if r["slaves"] == n and r[flag] == on]
            return statistics.fmean(values)

        out[str(n)] = {
            name: round(mean(key, sub, True) / mean(key, sub, False), 3)
            for name, key, sub in (
                ("first_slave_p50", "first_slave_ms", "p50"),
                ("fanout_complete_p50", "fanout_complete_ms", "p50"),
                ("fanout_complete_p99", "fanout_complete_ms", "p99"),
                ("cpu_per_copy", "copier_cpu_s_per_1000_copies", None),
            )
        }
    return out


if __name__ == "__main__":
    main()
