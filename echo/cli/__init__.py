"""``echo-copier`` (also ``python -m echo``): the command line. This module builds the parser from the
command families (``run``; ``sim``: sim-ea, demo, simulate; ``store``: show, accounts, explain, handshake,
migrate; ``config``; ``service``; ``alerts``: test) and turns a person's mistake into one line and a
non-zero exit."""

from __future__ import annotations

import argparse
import sys

import trio

from echo.cli import alerts, config, run, service, sim, store
from echo.domain.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    from echo import __version__

    p = argparse.ArgumentParser(
        prog="echo-copier", description="Echo: copy MetaTrader trades to many accounts."
    )
    p.add_argument("--version", action="version", version=f"echo-copier {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run.add_parsers(sub)
    sim.add_parsers(sub)
    store.add_parsers(sub)
    config.add_parsers(sub)
    store.add_migrate_parser(sub)
    service.add_parsers(sub)
    alerts.add_parsers(sub)
    return p


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
