"""``echo-copier demo``: the all-in-one copier plus simulated terminals on real Unix sockets.

Masters trade a random script (opens, partial closes, modifications, closes); every slave runs its own
simulated broker with its own symbol names and specs. When every master is flat and Core is idle, the
demo counts what the slave brokers hold and prints a summary (and one JSON line with ``--json``).
With ``split``, Core runs in this process serving gRPC and two Agents run as ``run --role agent`` child
processes, the terminals spread over their two sockets. Latency is measured from the master terminal
writing the intent to the slave terminal reading the execute_order (both terminals run in this process,
so one monotonic clock serves both)."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from echo.adapters.pipe.unix import connect_unix
from echo.app.root import Copier, CoreOnly, load_config, open_config, run_all_in_one, run_core
from echo.domain import messages as m
from echo.domain.config import Config, SplitConfig, StoreConfig
from echo.domain.errors import OMITTED_AT_SLAVE
from echo.domain.ids import trade_id_from_comment
from echo.ports.config import ConfigSource
from echo.sim.accounts import master_ids, slave_ids, trades_per_master
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA


@dataclass
class DemoOptions:
    masters: int = 1
    slaves: int = 2
    trades: int = 50
    seed: int = 7
    json: bool = False
    workdir: Path = Path("var/demo")
    store_url: str | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    pace: float = 0.04
    max_open: int = 3
    settle_timeout: float = 20.0
    on_start: Callable[[Copier], Awaitable[None]] | None = None
    """Run alongside the demo once the copier is up (for tests that act during the demo)."""
    before_trade: Callable[[str, int], Awaitable[None]] | None = None
    """Awaited by each master before it opens a trade (its account and how many it opened so far): the
    script waits there until it returns. With it a master trades one trade at a time (opens, manages and
    closes it before the next), so whatever it waited for comes between two trades."""
    config_spec: str | None = None
    """A TOML file or ``etcd://HOST:PORT``: policies, follow rules, delivery settings... (socket and store
    stay the demo's own). Changes made there during the demo apply to the next trade."""
    split: bool = False
    """Core in this process serving gRPC; two Agents as child processes (``run --role agent``)."""


@dataclass
class Latency:
    written_ns: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, str, int]] = field(default_factory=list)

    def on_execute_received(self, trade_id: str, account_id: str, t_ns: int) -> None:
        self.received.append((trade_id, account_id, t_ns))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


async def run_demo(opts: DemoOptions, console: Console) -> dict[str, Any]:
    workdir = opts.workdir / f"seed-{opts.seed}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    socket_path = workdir / "agent.sock"
    async with open_config(opts.config_spec) as source:
        return await _run_demo(opts, console, workdir, socket_path, await load_config(source), source)


async def _run_demo(
    opts: DemoOptions,
    console: Console,
    workdir: Path,
    socket_path: Path,
    base: Config,
    source: ConfigSource | None,
) -> dict[str, Any]:
    config = dataclasses.replace(
        base,
        # the Agent's ack ledger in memory, as all-in-one keeps it by default (Core's journal re-sends)
        agent=dataclasses.replace(base.agent, socket_path=str(socket_path)),
        store=StoreConfig(
            url=opts.store_url or f"sqlite:///{workdir / 'echo.db'}", synchronous=opts.synchronous
        ),
    )
    rng = random.Random(opts.seed)
    market = SimMarket(random.Random(rng.random()))
    lat = Latency()

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    sockets = [socket_path.with_name(f"agent-{n}.sock") for n in (1, 2)] if opts.split else [socket_path]

    def connect_to(i: int) -> Callable[[], Awaitable[trio.abc.Stream]]:
        path = sockets[i % len(sockets)]  # terminals spread over the Agents

        async def connect() -> trio.abc.Stream:
            return await connect_unix(path)

        return connect

    slaves = [
        SimSlaveEA(
            acc,
            slave_broker(i, market, random.Random(rng.random())),
            connect_to(i),
            now_ms,
            on_execute_received=lat.on_execute_received,
            token=config.agent.token,
        )
        for i, acc in enumerate(slave_ids(opts.slaves))
    ]
    masters = [
        SimMasterEA(
            acc,
            master_broker(market, random.Random(rng.random())),
            connect_to(i),
            now_ms,
            random.Random(rng.random()),
            token=config.agent.token,
        )
        for i, acc in enumerate(master_ids(opts.masters))
    ]
    per_master = trades_per_master(opts.trades, opts.masters)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        copier: Copier | CoreOnly
        if opts.split:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                where = f"127.0.0.1:{probe.getsockname()[1]}"
            config = dataclasses.replace(config, split=SplitConfig(where, where, base.split.token))
            copier = await nursery.start(functools.partial(run_core, config, config_source=source))
            for n, path in enumerate(sockets, 1):
                await nursery.start(_agent_process, workdir, n, path, config)
        else:
            copier = await nursery.start(functools.partial(run_all_in_one, config, config_source=source))
        copier.source_config = base
        if opts.on_start is not None and isinstance(copier, Copier):
            nursery.start_soon(opts.on_start, copier)
        nursery.start_soon(market.run)
        for s in slaves:
            await nursery.start(s.run)
        for ms in masters:
            await nursery.start(ms.run)
        everyone = {*slave_ids(opts.slaves), *master_ids(opts.masters)}
        with trio.move_on_after(10):
            await copier.core.wait_for(
                lambda: all(a in copier.core.accounts and copier.core.accounts[a].online for a in everyone)
            )
        progress = _Progress(copier, masters, slaves, opts)
        with Live(
            progress.table(), console=console, auto_refresh=False, transient=False, redirect_stdout=False
        ) as live:
            # refreshed from this loop, not by rich's own thread, which would compete with the copier

            async def refresh() -> None:
                while True:
                    live.update(progress.table(), refresh=True)
                    await trio.sleep(0.125)

            nursery.start_soon(refresh)
            async with trio.open_nursery() as scripts:
                for ms, n in zip(masters, per_master, strict=True):
                    scripts.start_soon(_script, ms, n, opts)
            # every master is flat: wait until Core has nothing in flight and every trade is complete
            with trio.move_on_after(opts.settle_timeout):
                await copier.core.wait_for(lambda: not copier.core.trades and copier.core.in_flight == 0)
            live.update(progress.table(), refresh=True)
        console.print()
        summary = await _summarize(copier, masters, slaves, lat, opts, time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return summary


async def _agent_process(
    workdir: Path, n: int, path: Path, config: Config, *, task_status: trio.TaskStatus[None]
) -> None:
    """``run --role agent`` as a child process until cancelled (then SIGTERM); its log goes to a file."""
    conf = workdir / f"agent-{n}.toml"
    conf.write_text(
        f'[agent]\nagent_id = "demo-agent-{n}"\nsocket_path = "{path}"\n'
        f'ledger_url = "sqlite:///{workdir / f"agent-{n}-ledger.db"}"\n'
        f'[split]\ncore = "{config.split.core}"\ntoken = "{config.split.token}"\n'
        f'[log]\nformat = "json"\nfile = "{workdir / f"agent-{n}.log"}"\n',
        encoding="utf-8",
    )
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "echo", "run", "--role", "agent", "--config", str(conf)],
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        said = b""
        while b"serving terminals" not in said:
            chunk = await proc.stderr.receive_some()
            if not chunk:
                raise RuntimeError(f"agent {n} ended before serving: {said.decode(errors='replace')}")
            said += chunk
        task_status.started()
        await proc.wait()
        raise RuntimeError(f"agent {n} ended during the demo (exit {proc.returncode})")
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def _script(master: SimMasterEA, n: int, opts: DemoOptions) -> None:
    if opts.before_trade is None:
        await master.run_script(n, max_open=opts.max_open, pace=opts.pace)
        return
    for opened in range(n):
        await opts.before_trade(master.account_id, opened)
        await master.run_script(1, max_open=1, pace=opts.pace)


class _Progress:
    def __init__(
        self,
        copier: Copier | CoreOnly,
        masters: list[SimMasterEA],
        slaves: list[SimSlaveEA],
        opts: DemoOptions,
    ) -> None:
        self.copier, self.masters, self.slaves, self.opts = copier, masters, slaves, opts

    def table(self) -> Table:
        st = self.copier.core.stats
        t = Table(title=f"Echo demo: {self.opts.masters} master(s) -> {self.opts.slaves} slave(s)")
        for col in (
            "master trades",
            "open now",
            "copies",
            "omitted",
            "close fills",
            "in flight",
            "failures",
        ):
            t.add_column(col, justify="right")
        opened = sum(ms.trades_opened for ms in self.masters)
        open_now = sum(len(ms.open_trades()) for ms in self.masters)
        failures = st.get("execute_failed", 0) + st.get("close_failed", 0) + st.get("modify_failed", 0)
        t.add_row(
            f"{opened}/{self.opts.trades}",
            str(open_now),
            str(st.get("copied", 0)),
            str(st.get("omitted", 0)),
            str(st.get("slave_closes", 0)),
            str(self.copier.core.in_flight),
            str(failures),
        )
        return t


async def _summarize(
    copier: Copier | CoreOnly,
    masters: list[SimMasterEA],
    slaves: list[SimSlaveEA],
    lat: Latency,
    opts: DemoOptions,
    elapsed: float,
) -> dict[str, Any]:
    master_trades = sum(ms.trades_opened for ms in masters)
    slave_accounts = [s.account_id for s in slaves]
    expected = sum(
        len(copier.config.core.followers(ms.account_id, slave_accounts)) * ms.trades_opened for ms in masters
    )
    # What the slave terminals actually filled: one fill per (trade, account) is a copy, more is a duplicate.
    fills: Counter[tuple[str, str]] = Counter()
    omit_reasons: Counter[str] = Counter()
    for s in slaves:
        for res in s.results.values():
            if isinstance(res, m.ExecutionResult):
                if res.success:
                    fills[(res.trade_id, s.account_id)] += 1
                elif res.error_code in OMITTED_AT_SLAVE:
                    omit_reasons[f"slave:{res.error_code.value}"] += 1
                else:
                    omit_reasons[f"broker:{res.error_code.value}"] += 1
    copied = len(fills)
    duplicates = sum(n - 1 for n in fills.values())
    decisions = await copier.store.decisions(limit=10_000_000)
    omit_reasons.update(d.reason for d in decisions if d.decision == "omit")
    omitted = sum(omit_reasons.values())
    open_after = sum(len(s.broker.open_orders()) for s in slaves)
    still_open = {
        (trade_id_from_comment(o.comment), s.account_id) for s in slaves for o in s.broker.open_orders()
    }
    closed = len(set(fills) - still_open)
    master_open = sum(len(ms.broker.open_orders()) for ms in masters)
    written = {t: ns for ms in masters for t, ns in ms.intent_written_ns.items()}
    samples = [(t_ns - written[t]) / 1e6 for t, _a, t_ns in lat.received if t in written]
    summary: dict[str, Any] = {
        "master_trades": master_trades,
        "masters": opts.masters,
        "slaves": opts.slaves,
        "seed": opts.seed,
        "expected_copies": expected,
        "copied": copied,
        "omitted": omitted,
        "omitted_reasons": dict(omit_reasons),
        "closed": closed,
        # close orders the slaves filled: each copy's final close and every partial close
        "close_fills": copier.core.stats.get("slave_closes", 0),
        "duplicates": duplicates,
        "lost": expected - copied - omitted,
        "open_after": open_after,
        "master_open_after": master_open,
        "partial_closes": sum(ms.partials for ms in masters),
        "modifications": sum(ms.modifies for ms in masters),
        # in split mode each Agent process logs its own (agent-N.log)
        "protocol_errors": copier.agent.protocol_errors if isinstance(copier, Copier) else None,
        "split": opts.split,
        "copy_latency_ms": {
            "n": len(samples),
            "p50": round(_percentile(samples, 0.50), 3),
            "p99": round(_percentile(samples, 0.99), 3),
            "max": round(max(samples), 3) if samples else 0.0,
            "mean": round(statistics.fmean(samples), 3) if samples else 0.0,
        },
        "registration_feedback_ms": _feedback([*masters, *slaves]),
        "router": {
            "worker_pool_size": copier.core.router.config.worker_pool_size,
            "busy_rejections": copier.core.router.stats.rejected_busy,
            "max_queue_depth": copier.core.router.stats.max_depth,
            "per_worker": copier.core.router.stats.per_worker,
        },
        "store": copier.config.store.url,
        "synchronous": copier.config.store.synchronous,
        "elapsed_s": round(elapsed, 2),
    }
    return summary


def _feedback(terminals: list[Any]) -> dict[str, float]:
    """From each handshake written to its symbol_registration_result read, over every terminal."""
    samples = [ms for t in terminals for ms in t.feedback_ms]
    return {
        "n": len(samples),
        "p50": round(_percentile(samples, 0.50), 3),
        "max": round(max(samples), 3) if samples else 0.0,
    }


_SUMMARY_ROWS = (
    ("master_trades", "master trades"),
    ("expected_copies", "expected copies (master trades x followers)"),
    ("copied", "copied (filled at a slave)"),
    ("omitted", "omitted (with a reason)"),
    ("closed", "copies closed"),
    ("close_fills", "close fills at slaves (partial closes included)"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("open_after", "slave positions open after"),
    ("partial_closes", "master partial closes"),
    ("modifications", "master modifications"),
    ("elapsed_s", "elapsed (s)"),
)
"""The summary's keys and what the table calls them: "copies closed" counts copies (one per trade and
slave), "close fills" counts close orders (a copy closed in three parts is three)."""


def print_summary(summary: dict[str, Any], console: Console) -> None:
    t = Table(title="Summary", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    for key, label in _SUMMARY_ROWS:
        t.add_row(label, str(summary[key]))
    lat = summary["copy_latency_ms"]
    t.add_row("copy latency p50 / p99 / max (ms)", f"{lat['p50']} / {lat['p99']} / {lat['max']}")
    fb = summary["registration_feedback_ms"]
    t.add_row("handshake feedback p50 / max (ms)", f"{fb['p50']} / {fb['max']}")
    r = summary["router"]
    t.add_row("router: busy rejections / deepest queue", f"{r['busy_rejections']} / {r['max_queue_depth']}")
    if summary["omitted_reasons"]:
        t.add_row("omitted because", ", ".join(f"{k}={v}" for k, v in summary["omitted_reasons"].items()))
    console.print(t)
    ok = demo_ok(summary)
    console.print("[bold green]every trade accounted for[/]" if ok else "[bold red]copy errors: see above[/]")


def demo_ok(summary: dict[str, Any]) -> bool:
    return bool(summary["lost"] == 0 and summary["duplicates"] == 0 and summary["open_after"] == 0)


def main(opts: DemoOptions) -> int:
    console = Console(stderr=opts.json)
    summary = trio.run(run_demo, opts, console)
    print_summary(summary, console)
    if opts.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stdout.flush()
    return 0 if demo_ok(summary) else 1
