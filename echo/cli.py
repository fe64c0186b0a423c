"""``echo-copier`` (also ``python -m echo``): run the copier, a simulated terminal, the demo, the
simulation, or look up what happened to a trade."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from echo.domain.config import Config, ConfigError, parse_host_port
from echo.domain.paths import in_data_folder

if TYPE_CHECKING:
    from echo.app.root import Running
    from echo.ports.config import ConfigSource

T = TypeVar("T")
_DEFAULT_STORE = "sqlite:///" + in_data_folder("echo.db")


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """``trio.run``, re-raising a ConfigError that nurseries (the etcd client's loop) wrapped in groups."""
    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        stack: list[BaseException] = [group]
        while stack:
            e = stack.pop()
            if isinstance(e, BaseExceptionGroup):
                stack.extend(e.exceptions)
            else:
                leaves.append(e)
        config_errors = [e for e in leaves if isinstance(e, ConfigError)]
        if config_errors and len(config_errors) == len(leaves):
            raise config_errors[0] from group
        raise


def _load_config(spec: str | None) -> Config:
    """The configuration from a TOML file, ``etcd://HOST:PORT``, or the defaults (outside trio)."""
    from echo.app.root import load_config, open_config

    async def read() -> Config:
        async with open_config(spec) as source:
            return await load_config(source)

    return _run(read) if spec else Config()


def _override(config: Config, args: argparse.Namespace) -> Config:

    if getattr(args, "socket", None):
        config = replace(config, agent=replace(config.agent, socket_path=args.socket))
    if getattr(args, "pipe", None):
        config = replace(config, agent=replace(config.agent, pipe_name=args.pipe))
    if getattr(args, "store", None):
        from echo.domain.config import StoreConfig

        config = replace(config, store=StoreConfig(args.store, config.store.synchronous))
    if getattr(args, "listen", None) or getattr(args, "core", None):
        split = config.split
        config = replace(
            config, split=replace(split, listen=args.listen or split.listen, core=args.core or split.core)
        )
    return config


if sys.platform == "win32":
    _STOP_SIGNALS = (signal.SIGINT, signal.SIGBREAK, signal.SIGTERM)
    _RELOAD_SIGNAL: int | None = None
    _STOPS = "Ctrl-C or Ctrl-Break stops"
    _RELOADS = ""
else:
    _STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
    _RELOAD_SIGNAL = signal.SIGHUP
    _STOPS = "Ctrl-C or SIGTERM stops"
    _RELOADS = "; SIGHUP reloads"
"""Windows has no SIGHUP: there a changed configuration is picked up by its watch (the file is polled,
etcd pushes), as it is on POSIX too."""


def cmd_run(args: argparse.Namespace) -> int:
    from echo.adapters.locks import parent_folder
    from echo.app.logs import configure
    from echo.app.root import open_config, run_agent, run_all_in_one, run_core

    from_source = _load_config(args.config)
    config = _override(from_source, args)
    _preflight(config, args.role)
    log_file = None
    if config.log.file:
        parent_folder(config.log.file, "log.file")
        log_file = open(config.log.file, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    configure(args.log_format or config.log.format, config.log.level, stream=log_file)

    async def main() -> None:
        watched = (*_STOP_SIGNALS, _RELOAD_SIGNAL) if _RELOAD_SIGNAL is not None else _STOP_SIGNALS
        with trio.open_signal_receiver(*watched) as signals:
            async with open_config(args.config) as source, trio.open_nursery() as nursery:
                running: Running | None = None
                if args.role == "agent":
                    # an Agent's configuration is read once: [agent], [delivery] and [split] need a restart
                    await nursery.start(run_agent, config)
                    print(
                        f"echo-copier: agent {config.agent.agent_id} serving terminals at "
                        f"{_terminals_at(config)}; Core at {config.split.core}. {_STOPS}.",
                        file=sys.stderr,
                    )
                else:
                    start = run_core if args.role == "core" else run_all_in_one
                    running = await nursery.start(functools.partial(start, config, config_source=source))
                    running.source_config = from_source
                    where = (
                        f"Agents connect to {config.split.listen}"
                        if args.role == "core"
                        else f"terminals connect to {_terminals_at(config)}"
                    )
                    print(
                        f"echo-copier: copying; {where}; store {_redacted(config.store.url)}; config "
                        f"{source.description if source else 'built-in defaults'} (changes apply live). "
                        f"{_STOPS}{_RELOADS}.",
                        file=sys.stderr,
                    )
                async for signum in signals:
                    if signum == _RELOAD_SIGNAL:
                        if running is None:
                            print("echo-copier: an agent reads its configuration at start", file=sys.stderr)
                        else:
                            await _reload(source, running)
                        continue
                    # stop accepting and copying; services close their resources as they are cancelled
                    print(f"echo-copier: {signal.Signals(signum).name}, stopping", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    break

    try:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(main)
    finally:
        if log_file is not None:
            log_file.close()
    return 0


def _terminals_at(config: Config) -> str:
    """Where terminals connect: the named pipe on Windows, the Unix socket elsewhere."""
    from echo.app.root import terminals_at

    return terminals_at(config)


def _preflight(config: Config, role: str) -> None:
    """What can be checked before anything starts: the folders of the socket and the store, and whether
    Core may serve ``split.listen`` (the services check again as they start)."""
    from echo.adapters.locks import parent_folder
    from echo.app.root import check_listen_is_safe

    if role != "core" and sys.platform != "win32":
        parent_folder(config.agent.socket_path, "agent.socket_path")
    if role != "agent" and config.store.url.startswith("sqlite:///"):
        parent_folder(config.store.url.removeprefix("sqlite:///"), "store.url")
    if role == "core":
        check_listen_is_safe(config.split)


async def _reload(source: ConfigSource | None, copier: Running) -> None:
    """SIGHUP: read the configuration again and apply it (``apply_config``); a bad one changes nothing."""
    from echo.app.root import apply_config

    if source is None:
        print("echo-copier: no configuration source to reload", file=sys.stderr)
        return
    try:
        raw = await source.read()
    except ConfigError as exc:
        raw = {"__error__": str(exc)}
    done = await apply_config(copier, raw, source.description)
    if not done.ok:
        print(f"echo-copier: reload refused, the running configuration stays: {done.error}", file=sys.stderr)
        return
    for section in done.needs_restart:
        print(f"echo-copier: [{section}] changed; it takes effect after a restart", file=sys.stderr)
    print(
        "echo-copier: configuration reloaded; core, delivery, policy, protocol and symbols applied",
        file=sys.stderr,
    )


def cmd_sim_ea(args: argparse.Namespace) -> int:
    from echo.adapters.locks import StartError
    from echo.adapters.pipe.tcp import connect_tcp
    from echo.adapters.pipe.unix import connect_unix
    from echo.app.logs import configure
    from echo.sim.market import SimMarket
    from echo.sim.master import SimMasterEA
    from echo.sim.profiles import master_broker, slave_broker
    from echo.sim.slave import SimSlaveEA

    configure(args.log_format or "console", "info")
    rng = random.Random(args.seed)
    market = SimMarket(random.Random(rng.random()))

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    if args.tcp:
        parse_host_port(args.tcp, "--tcp")  # a ConfigError naming the flag, before anything starts
    if args.tcp:
        where = f"TCP {args.tcp}"
    elif args.pipe:
        where = f"the named pipe {args.pipe}"
    else:
        where = f"the socket {args.socket}"

    async def connect() -> trio.abc.Stream:
        if args.tcp:
            return await connect_tcp(args.tcp)
        if args.pipe:
            if sys.platform == "win32":
                from echo.adapters.pipe.winpipe import connect_pipe

                return await connect_pipe(args.pipe)
            raise StartError("--pipe: named pipes are served on Windows only")
        return await connect_unix(args.socket)

    async def main() -> None:
        try:
            await (await connect()).aclose()  # an Agent answers there, or one line says it does not
        except OSError as exc:
            raise StartError(f"no agent answers at {where}: {exc.strerror or exc}") from exc
        async with trio.open_nursery() as nursery:
            nursery.start_soon(market.run)
            if args.role == "slave":
                slave = SimSlaveEA(
                    args.account,
                    slave_broker(args.profile, market, rng),
                    connect,
                    now_ms,
                    state_path=args.state,
                    token=args.token,
                )
                await nursery.start(slave.run)
                print(f"sim slave {args.account} connected to {where}", file=sys.stderr)
            else:
                master = SimMasterEA(
                    args.account,
                    master_broker(market, rng),
                    connect,
                    now_ms,
                    rng,
                    queue_path=args.state,
                    token=args.token,
                )
                await nursery.start(master.run)
                print(f"sim master {args.account} connected to {where}", file=sys.stderr)
                if args.burst:
                    await master.burst(args.burst)
                    await master.wait_all_acked()
                    print(f"sim master {args.account}: {args.burst} trades done", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                elif args.trades:
                    await master.run_script(args.trades, pace=args.pace)
                    await master.wait_all_acked()  # every event is safe with Core before the terminal quits
                    print(f"sim master {args.account}: {args.trades} trades done", file=sys.stderr)
                    nursery.cancel_scope.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from echo.adapters.locks import parent_folder
    from echo.app import demo
    from echo.app.logs import configure

    workdir = Path(args.workdir)
    parent_folder(workdir, "--workdir")
    workdir.mkdir(exist_ok=True)
    log_path = workdir / f"echo-seed-{args.seed}.log"
    log_file = log_path.open("w", encoding="utf-8")
    configure("json", args.log_level, stream=log_file)
    opts = demo.DemoOptions(
        masters=args.masters,
        slaves=args.slaves,
        trades=args.trades,
        seed=args.seed,
        json=args.json,
        workdir=workdir,
        store_url=args.store,
        synchronous=args.synchronous,
        pace=args.pace,
        config_spec=args.config,
        split=args.split,
    )
    try:
        code = demo.main(opts)
    finally:
        log_file.close()
    print(f"logs: {log_path}", file=sys.stderr)
    return code


def cmd_simulate(args: argparse.Namespace) -> int:
    from echo.adapters.locks import parent_folder
    from echo.app import simulate

    try:
        seeds = simulate.parse_seeds(args.seeds) if args.seeds else None
        opts = simulate.SimOptions(
            seed=args.seed,
            masters=args.masters,
            slaves=args.slaves,
            trades=args.trades,
            faults=simulate.Faults.parse(args.faults),
            pace=args.pace,
            max_virtual_seconds=args.max_virtual_seconds,
            store_url=args.store or "memory://",
            config=_load_config(args.config) if args.config else None,
            transport=args.transport,
        )
    except ValueError as exc:
        print(f"echo-copier simulate: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        log_file = None
        if args.log_file:
            parent_folder(args.log_file, "--log-file")
            log_file = stack.enter_context(open(args.log_file, "w", encoding="utf-8"))
        simulate.configure_logs(log_file, args.log_level)
        return simulate.main(opts, seeds=seeds, json_out=args.json)


def cmd_show(args: argparse.Namespace) -> int:
    from echo.app.root import open_store

    async def main() -> dict[str, Any]:
        store = await open_store(args.store, create=False)
        print(f"store: {_redacted(args.store)}", file=sys.stderr)
        try:
            if args.trade:
                trade = await store.get_trade(args.trade)
                return {
                    "trade": _row(trade),
                    "decisions": [_row(d) for d in await store.decisions(args.trade)],
                    "commands": [_row(c) for c in await store.commands(args.trade)],
                    "tickets": [_row(t) for t in await store.tickets(args.trade)],
                    "events": [_row(e) for e in await store.events(args.trade)],
                }
            return {"trades": [_row(t) for t in await store.trades(limit=args.limit)]}
        finally:
            await store.aclose()

    print(json.dumps(trio.run(main), indent=2, default=str))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from echo.app import explain
    from echo.app.root import open_store

    async def main() -> dict[str, Any]:
        store = await open_store(args.store, create=False)
        print(f"store: {_redacted(args.store)}", file=sys.stderr)
        try:
            return await explain.receipt(store, args.trade_id)
        finally:
            await store.aclose()

    try:
        r = trio.run(main)
    except explain.UnknownTrade as exc:
        print(f"echo-copier explain: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r, default=str))
    else:
        explain.render(r, Console())
    return 0


def _redacted(url: str) -> str:
    """A store URL fit to print: a password in it becomes ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _row(row: object) -> Any:
    if row is None:
        return None
    fields = getattr(row, "__dataclass_fields__", {})
    return {k: getattr(row, k) for k in fields}


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


_positive = _int_at_least(1)
_count = _int_at_least(0)
_LOG_FORMAT_HELP = "console (readable) or json (one object a line); default: the config's log.format"
_LOG_LEVEL_HELP = "the least severe log entries written"


def build_parser() -> argparse.ArgumentParser:
    from echo import __version__

    p = argparse.ArgumentParser(
        prog="echo-copier", description="Echo: copy MetaTrader trades to many accounts."
    )
    p.add_argument("--version", action="version", version=f"echo-copier {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the copier")
    r.add_argument(
        "--role",
        choices=["all", "core", "agent"],
        default="all",
        help="all: Core and an Agent in this process (default); core: Core serving Agents over gRPC; "
        "agent: an Agent serving terminals, joined to Core",
    )
    r.add_argument("--config", help="TOML config file or etcd://HOST:PORT (default: built-in defaults)")
    r.add_argument("--socket", help="override agent.socket_path, the Unix socket terminals connect to")
    r.add_argument(
        "--pipe",
        metavar="NAME",
        help="override agent.pipe_name, the named pipe \\\\.\\pipe\\NAME terminals connect to (Windows)",
    )
    r.add_argument("--store", help="override store.url (sqlite:///PATH, postgresql://... or memory://)")
    r.add_argument("--listen", help="override split.listen, where Core serves its Agents (HOST:PORT)")
    r.add_argument("--core", help="override split.core, where an Agent finds Core (HOST:PORT)")
    r.add_argument("--log-format", choices=["console", "json"], help=_LOG_FORMAT_HELP)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("sim-ea", help="a simulated terminal against a running agent")
    s.add_argument("--role", choices=["master", "slave"], required=True, help="the terminal's role")
    s.add_argument("--account", required=True, help="the account id the terminal presents")
    s.add_argument(
        "--socket", default=in_data_folder("echo.sock"), help="the Agent's socket (default: %(default)s)"
    )
    s.add_argument(
        "--pipe", help="Windows: the Agent's named pipe NAME (\\\\.\\pipe\\NAME) instead of --socket"
    )
    s.add_argument(
        "--tcp", metavar="HOST:PORT", help="connect over TCP instead, to the Agent's agent.tcp_listen"
    )
    s.add_argument("--profile", type=_count, default=0, help="slave broker profile index")
    s.add_argument("--seed", type=int, default=1, help="seed of the simulated market and broker")
    s.add_argument(
        "--trades", type=_count, default=0, help="master: run a random script of N trades, then exit"
    )
    s.add_argument("--pace", type=_seconds, default=0.2, help="master: mean seconds between actions")
    s.add_argument(
        "--burst",
        type=_count,
        default=0,
        help="master: open N trades back to back, then close them all; exit",
    )
    s.add_argument(
        "--state",
        help="a JSON-lines file that survives restarts: the slave's results, or the master's unacked queue",
    )
    s.add_argument("--log-format", choices=["console", "json"], help="console (default) or json")
    s.add_argument("--token", default="", help="the agent's agent.token, presented in the handshake")
    s.set_defaults(func=cmd_sim_ea)

    d = sub.add_parser("demo", help="copier + simulated terminals on real sockets, with a summary")
    d.add_argument("--masters", type=_positive, default=1, help="master terminals (1 or more)")
    d.add_argument("--slaves", type=_positive, default=2, help="slave terminals (1 or more)")
    d.add_argument("--trades", type=_positive, default=50, help="master trades in all (1 or more)")
    d.add_argument("--seed", type=int, default=7, help="seed of the trade scripts, market and brokers")
    d.add_argument("--json", action="store_true", help="last stdout line is the summary as JSON")
    d.add_argument(
        "--workdir",
        default="var/demo",
        help="folder for the demo's store, sockets and log (its parent must exist)",
    )
    d.add_argument("--store", help="store url (default: a fresh SQLite file in the workdir)")
    d.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability (store.synchronous)",
    )
    d.add_argument("--pace", type=_seconds, default=0.04, help="mean seconds between a master's actions")
    d.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help=_LOG_LEVEL_HELP
    )
    d.add_argument(
        "--config",
        help="a TOML file or etcd://HOST:PORT (policies, follow, delivery...; changes apply to the next "
        "trade); the demo still picks its own socket and store",
    )
    d.add_argument(
        "--split",
        action="store_true",
        help="split mode: Core in this process serving gRPC, two Agents as child processes",
    )
    d.set_defaults(func=cmd_demo)

    sim = sub.add_parser(
        "simulate", help="the whole system on a virtual clock with injected faults; deterministic per seed"
    )
    sim.add_argument("--seed", type=int, default=1, help="the run's seed (the same seed, the same run)")
    sim.add_argument("--seeds", help="a sweep, A..B: one line per seed and a final JSON with the counts")
    sim.add_argument("--masters", type=_positive, default=1, help="master terminals (1 or more)")
    sim.add_argument("--slaves", type=_positive, default=3, help="slave terminals (1 or more)")
    sim.add_argument("--trades", type=_positive, default=15, help="master trades in all (1 or more)")
    sim.add_argument(
        "--faults",
        default="",
        help="e.g. drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5 (per-line probabilities; "
        "crash = number of crash-restarts)",
    )
    sim.add_argument(
        "--pace", type=_seconds, default=0.1, help="mean virtual seconds between a master's actions"
    )
    sim.add_argument(
        "--max-virtual-seconds", type=_seconds, default=3600.0, help="fail if not settled by then"
    )
    sim.add_argument("--json", action="store_true", help="the summary as one JSON line")
    sim.add_argument(
        "--store", help="store url (default memory://; a fresh sqlite:/// or postgresql:// works)"
    )
    sim.add_argument("--config", help="a TOML file or etcd://HOST:PORT whose policies the run copies under")
    sim.add_argument(
        "--transport",
        choices=["inproc", "grpc"],
        default="inproc",
        help="join Core and the Agent in-process (deterministic) or over gRPC on localhost TCP",
    )
    sim.add_argument("--log-file", help="structured log (virtual timestamps); default: no log")
    sim.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help=_LOG_LEVEL_HELP
    )
    sim.set_defaults(func=cmd_simulate)

    w = sub.add_parser("show", help="what the store recorded: trades, or one trade's decisions and events")
    w.add_argument(
        "--store", default=_DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    w.add_argument("--trade", help="a trade_id: its decisions, commands, tickets and events")
    w.add_argument("--limit", type=_positive, default=50, help="the most recent trades to list")
    w.set_defaults(func=cmd_show)
    a = sub.add_parser("accounts", help="the accounts whose terminals reached Echo, and their verdicts")
    a.add_argument(
        "--store", default=_DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    a.add_argument("--json", action="store_true", help="one JSON list")
    a.set_defaults(func=cmd_accounts)
    _add_explain(sub)
    _add_service(sub)
    return p


def cmd_handshake_evaluate(args: argparse.Namespace) -> int:
    """What a configuration makes of an account's last recorded handshake (the running copier applies the
    same rules to every account on SIGHUP), and the verdicts recorded for it."""
    from echo.app.queries import evaluate_last_handshake
    from echo.app.root import open_store

    config = _load_config(args.config)

    async def main() -> dict[str, Any] | None:
        store = await open_store(args.store or config.store.url, create=False)
        try:
            return await evaluate_last_handshake(store, config, args.account, args.history)
        finally:
            await store.aclose()

    out = trio.run(main)
    if out is None:
        print(f"echo-copier handshake evaluate: no handshake recorded for {args.account}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=None if args.json else 2, default=str))
    return 0 if out["evaluation"]["status"] != "REJECTED" else 3


def cmd_accounts(args: argparse.Namespace) -> int:
    """The accounts whose terminals reached Echo: each one's last handshake and the verdict it got."""
    from echo.app.queries import accounts
    from echo.app.root import open_store

    async def main() -> list[Any]:
        store = await open_store(args.store, create=False)
        print(f"store: {_redacted(args.store)}", file=sys.stderr)
        try:
            return await accounts(store)
        finally:
            await store.aclose()

    seen = trio.run(main)
    if args.json:
        print(json.dumps([_row(a) for a in seen]))
        return 0
    if not seen:
        print("no terminal has completed a handshake yet")
    for a in seen:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a.handshake_at_ms / 1000))
        problems = f" ({', '.join(a.problems)})" if a.problems else ""
        print(
            f"{a.account_id:<12} {a.role:<6} agent {a.agent_id:<10} handshake {at} UTC  {a.verdict}{problems}"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """get / set / validate / export / import against a TOML file or etcd (``--config``)."""
    from echo.adapters.config.file import read_toml
    from echo.app.root import open_config
    from echo.domain.config import config_from_dict
    from echo.domain.config_tree import decode_value

    async def main() -> int:
        async with open_config(args.config) as source:
            assert source is not None
            what = args.config_command
            if what == "get":
                value = await source.get(args.key)
                if value is None:
                    print(f"echo-copier config: {args.key} is not set", file=sys.stderr)
                    return 1
                print(json.dumps(value))
            elif what == "set":
                value = decode_value(args.value)
                raw = await source.read()
                candidate = json.loads(json.dumps(raw))  # a copy to try the change on first
                parts = args.key.split(".")
                node = candidate
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
                config_from_dict(candidate)  # refuse a value that would not validate
                await source.set(args.key, value)
                print(f"{args.key} = {json.dumps(value)} ({source.description})")
            elif what == "validate":
                config_from_dict(await source.read())
                print(f"{source.description}: valid")
            elif what == "export":
                import tomlkit

                text = tomlkit.dumps(await source.read())
                if args.to:
                    await trio.Path(args.to).write_text(text, encoding="utf-8")
                    print(f"exported {source.description} to {args.to}")
                else:
                    print(text, end="")
            elif what == "import":
                raw = read_toml(args.file)
                config_from_dict(raw)  # only a valid file is imported
                await source.replace(raw)
                print(f"imported {args.file} into {source.description}")
            return 0

    try:
        return _run(main)
    except ConfigError as exc:
        print(f"echo-copier config: {exc}", file=sys.stderr)
        return 2


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending schema migrations of ``sql/`` to a store (versioned, idempotent, one transaction)."""
    import sqlite3

    from echo.adapters.locks import parent_folder
    from echo.adapters.store import migrations, postgres
    from echo.ports.store import StoreError

    url: str = args.store
    try:
        if url.startswith(("postgresql://", "postgres://")):
            applied = postgres.migrate(url)
            where = f"schema {postgres.split_url(url)[1]}"
        elif url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            parent_folder(path, "the store")
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                applied = migrations.apply_sqlite(conn)
            finally:
                conn.close()
            where = str(path)
        else:
            print(f"echo-copier migrate: unsupported store url {url!r}", file=sys.stderr)
            return 2
    except StoreError as exc:
        print(f"echo-copier migrate: {exc}", file=sys.stderr)
        return 1
    latest = migrations.discover()[-1].version
    done = ", ".join(applied) if applied else "nothing (already up to date)"
    print(f"migrated {where}: applied {done}; schema version {latest}")
    return 0


def _add_explain(sub: Any) -> None:
    e = sub.add_parser("explain", help="the copy receipt of one master trade: per slave, what and why")
    e.add_argument("trade_id", help="the master trade's id (as the master terminal stamped it)")
    e.add_argument(
        "--store", default=_DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    e.add_argument("--json", action="store_true", help="the receipt as JSON")
    e.set_defaults(func=cmd_explain)
    h = sub.add_parser("handshake", help="handshake evaluation (protocol policy and symbol catalog)")
    hsub = h.add_subparsers(dest="handshake_command", required=True)
    ev = hsub.add_parser("evaluate", help="evaluate an account's last recorded handshake against a config")
    ev.add_argument("--account", required=True, help="the account whose handshake to evaluate")
    ev.add_argument("--config", help="TOML config whose [protocol] and [symbols] apply (default: built-in)")
    ev.add_argument("--store", help="store url to read (default: the config's store.url); never created")
    ev.add_argument("--history", type=_positive, default=5, help="recorded evaluations to show")
    ev.add_argument("--json", action="store_true", help="one JSON line")
    ev.set_defaults(func=cmd_handshake_evaluate)
    cfg = sub.add_parser("config", help="read and change the configuration (a TOML file or etcd)")
    cfg.add_argument("--config", required=True, help="a TOML file path or etcd://HOST:PORT")
    csub = cfg.add_subparsers(dest="config_command", required=True)
    g = csub.add_parser("get", help="one value, as JSON")
    g.add_argument("key", help="SECTION.KEY or policy.ACCOUNT.KEY, e.g. policy.51001.max_spread")
    st = csub.add_parser("set", help="set one value (refused if the result would not validate)")
    st.add_argument("key", help="SECTION.KEY or policy.ACCOUNT.KEY")
    st.add_argument("value", help='JSON (30, true, [1,2], "text") or a bare word')
    csub.add_parser("validate", help="check the whole configuration")
    ex = csub.add_parser("export", help="the configuration as TOML")
    ex.add_argument("--to", help="write to this file (default: stdout)")
    im = csub.add_parser("import", help="replace the configuration with a TOML file's")
    im.add_argument("file", help="the TOML file to import")
    cfg.set_defaults(func=cmd_config)
    mig = sub.add_parser("migrate", help="apply pending schema migrations to a store")
    mig.add_argument(
        "--store",
        required=True,
        help="postgresql://USER@HOST:PORT/DB[?schema=NAME] (the database is created if missing) or "
        "sqlite:///PATH",
    )
    mig.set_defaults(func=cmd_migrate)


_NOT_WINDOWS = (
    "Windows services exist only on Windows; on Linux run `echo-copier run` under systemd "
    "(the README gives a unit)"
)


def cmd_service(args: argparse.Namespace) -> int:
    """install / uninstall / start / stop / status of the Windows service (``echo.app.winservice``)."""
    if sys.platform == "win32":
        return _service(args)
    print(f"echo-copier service: {_NOT_WINDOWS}", file=sys.stderr)
    return 2


if sys.platform == "win32":

    def _service(args: argparse.Namespace) -> int:
        from echo.app import winservice

        what, name = args.service_command, args.name
        try:
            if what == "install":
                config = _load_config(args.config)  # a bad configuration stops here, not in the service
                spec = args.config if args.config.startswith("etcd://") else os.path.abspath(args.config)
                print(winservice.install(spec, args.role, name, config))
            elif what == "uninstall":
                print(winservice.uninstall(name))
            elif what == "start":
                print(winservice.start(name))
            elif what == "stop":
                print(winservice.stop(name))
            else:
                running, lines = winservice.status(name)
                print("\n".join(lines))
                return 0 if running else 3
        except winservice.ServiceError as exc:
            print(f"echo-copier service: {exc}", file=sys.stderr)
            return 1
        return 0


def _add_service(sub: Any) -> None:
    sv = sub.add_parser("service", help="the copier as a Windows service: install, start, stop, status")
    ssub = sv.add_subparsers(dest="service_command", required=True)
    name_help = "the service's name (default: %(default)s)"
    inst = ssub.add_parser("install", help="register it: starts at boot, restarted after a failure")
    inst.add_argument("--config", required=True, help="the TOML file (or etcd://HOST:PORT) it runs with")
    inst.add_argument(
        "--role",
        choices=["all", "agent"],
        default="all",
        help="all: Core and an Agent (default); agent: an Agent joined to a Core elsewhere (split.core)",
    )
    inst.add_argument("--name", default="EchoCopier", help=name_help)
    for what, text in (
        ("uninstall", "remove it (stop it first)"),
        ("start", "start it and wait until it runs"),
        ("stop", "stop it cleanly (store closed, pipe released) and wait"),
        ("status", "its state, start type, failure actions, command and log (exit 3: not running)"),
    ):
        ssub.add_parser(what, help=text).add_argument("--name", default="EchoCopier", help=name_help)
    sv.set_defaults(func=cmd_service)


def _mistake(exc: BaseException) -> BaseException | None:
    """The error to tell a person about in one line, when ``exc`` (often a group from a nursery) is only
    about things a person can put right: configuration, a store or socket that cannot be opened or is in
    use, a port taken, a server that refuses. None for anything else (a bug keeps its traceback)."""
    from echo.adapters.locks import StartError
    from echo.ports.ledger import LedgerError
    from echo.ports.store import StoreError

    leaves: list[BaseException] = []
    stack = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        elif not isinstance(e, trio.Cancelled):
            leaves.append(e)
    if not leaves or not all(
        isinstance(e, ConfigError | StoreError | LedgerError | StartError | OSError) for e in leaves
    ):
        return None
    # ours name the thing; a bare OSError from a library, last
    return min(leaves, key=lambda e: isinstance(e, OSError))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        problem = _mistake(exc)
        if problem is None:
            raise
        what = "configuration error: " if isinstance(problem, ConfigError) else ""
        line = " ".join(str(problem).split()) or type(problem).__name__
        print(f"echo-copier {args.command}: {what}{line}", file=sys.stderr)
        return 2 if isinstance(problem, ConfigError) else 1
