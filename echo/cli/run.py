"""``run``: the copier (all-in-one), Core alone or an Agent alone, until Ctrl-C / SIGTERM (or Ctrl-Break on
Windows); SIGHUP (POSIX) reloads the configuration."""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio

from echo.cli.common import LOG_FORMAT_HELP, load_config, redacted
from echo.domain.config import Config, ConfigError

if TYPE_CHECKING:
    from echo.app.root import Running
    from echo.ports.config import ConfigSource


def _override(config: Config, args: argparse.Namespace) -> Config:
    """The configuration with ``run``'s overrides (--socket, --pipe, --store, --listen, --core) applied."""
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
    from echo.app.root import open_config, run_agent, run_all_in_one, run_core, settle_heap

    from_source = load_config(args.config)
    config = _override(from_source, args)
    _preflight(config, args.role)
    log_file = None
    if config.log.file:
        parent_folder(config.log.file, "log.file")
        log_file = open(config.log.file, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    configure(args.log_format or config.log.format, config.log.level, stream=log_file, cache=True)

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
                        f"echo-copier: copying; {where}; store {redacted(config.store.url)}; config "
                        f"{source.description if source else 'built-in defaults'} (changes apply live). "
                        f"{_STOPS}{_RELOADS}.",
                        file=sys.stderr,
                    )
                settle_heap()
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


def add_parsers(sub: Any) -> None:
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
    r.add_argument("--log-format", choices=["console", "json"], help=LOG_FORMAT_HELP)
    r.set_defaults(func=cmd_run)
