"""The commands that read or prepare a store: ``show`` (trades and what happened to one), ``explain`` (one
trade's copy receipt), ``accounts`` (each terminal's last handshake and verdict), ``handshake evaluate``
and ``migrate``. They never create a store they only read."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import trio

from echo.app.queries import as_dict
from echo.cli.common import DEFAULT_STORE, load_config, positive, redacted


def cmd_show(args: argparse.Namespace) -> int:
    from echo.app.root import open_store

    async def main() -> dict[str, Any]:
        store = await open_store(args.store, create=False)
        print(f"store: {redacted(args.store)}", file=sys.stderr)
        try:
            if args.trade:
                trade = await store.get_trade(args.trade)
                return {
                    "trade": as_dict(trade),
                    "decisions": [as_dict(d) for d in await store.decisions(args.trade)],
                    "commands": [as_dict(c) for c in await store.commands(args.trade)],
                    "tickets": [as_dict(t) for t in await store.tickets(args.trade)],
                    "events": [as_dict(e) for e in await store.events(args.trade)],
                }
            return {"trades": [as_dict(t) for t in await store.trades(limit=args.limit)]}
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
        print(f"store: {redacted(args.store)}", file=sys.stderr)
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


def cmd_accounts(args: argparse.Namespace) -> int:
    """The accounts whose terminals reached Echo: each one's last handshake and the verdict it got."""
    from echo.app.queries import accounts
    from echo.app.root import open_store

    async def main() -> list[Any]:
        store = await open_store(args.store, create=False)
        print(f"store: {redacted(args.store)}", file=sys.stderr)
        try:
            return await accounts(store)
        finally:
            await store.aclose()

    seen = trio.run(main)
    if args.json:
        print(json.dumps([as_dict(a) for a in seen]))
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


def cmd_handshake_evaluate(args: argparse.Namespace) -> int:
    """What a configuration makes of an account's last recorded handshake (the running copier applies the
    same rules to every account when its configuration is reloaded), and the verdicts recorded for it."""
    from echo.app.queries import evaluate_last_handshake
    from echo.app.root import open_store

    config = load_config(args.config)

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


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending schema migrations of ``sql/`` to a store (versioned, idempotent, one transaction)."""
    from echo.app.migrate import UnsupportedStore, migrate
    from echo.ports.store import StoreError

    try:
        done = migrate(args.store)
    except UnsupportedStore as exc:
        print(f"echo-copier migrate: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"echo-copier migrate: {exc}", file=sys.stderr)
        return 1
    applied = ", ".join(done.applied) if done.applied else "nothing (already up to date)"
    print(f"migrated {done.where}: applied {applied}; schema version {done.latest}")
    return 0


def add_parsers(sub: Any) -> None:
    w = sub.add_parser("show", help="what the store recorded: trades, or one trade's decisions and events")
    w.add_argument(
        "--store", default=DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    w.add_argument("--trade", help="a trade_id: its decisions, commands, tickets and events")
    w.add_argument("--limit", type=positive, default=50, help="the most recent trades to list")
    w.set_defaults(func=cmd_show)
    a = sub.add_parser("accounts", help="the accounts whose terminals reached Echo, and their verdicts")
    a.add_argument(
        "--store", default=DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    a.add_argument("--json", action="store_true", help="one JSON list")
    a.set_defaults(func=cmd_accounts)
    e = sub.add_parser("explain", help="the copy receipt of one master trade: per slave, what and why")
    e.add_argument("trade_id", help="the master trade's id (as the master terminal stamped it)")
    e.add_argument(
        "--store", default=DEFAULT_STORE, help="the store to read (default: %(default)s); never created"
    )
    e.add_argument("--json", action="store_true", help="the receipt as JSON")
    e.set_defaults(func=cmd_explain)
    h = sub.add_parser("handshake", help="handshake evaluation (protocol policy and symbol catalog)")
    hsub = h.add_subparsers(dest="handshake_command", required=True)
    ev = hsub.add_parser("evaluate", help="evaluate an account's last recorded handshake against a config")
    ev.add_argument("--account", required=True, help="the account whose handshake to evaluate")
    ev.add_argument("--config", help="TOML config whose [protocol] and [symbols] apply (default: built-in)")
    ev.add_argument("--store", help="store url to read (default: the config's store.url); never created")
    ev.add_argument("--history", type=positive, default=5, help="recorded evaluations to show")
    ev.add_argument("--json", action="store_true", help="one JSON line")
    ev.set_defaults(func=cmd_handshake_evaluate)


def add_migrate_parser(sub: Any) -> None:
    mig = sub.add_parser("migrate", help="apply pending schema migrations to a store")
    mig.add_argument(
        "--store",
        required=True,
        help="postgresql://USER@HOST:PORT/DB[?schema=NAME] (the database is created if missing) or "
        "sqlite:///PATH",
    )
    mig.set_defaults(func=cmd_migrate)
