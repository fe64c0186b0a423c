"""``alerts test --config FILE``: a test message to each configured webhook, one line per webhook (ok or
the error), and a non-zero exit when any failed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from echo.cli.common import load_config, run_trio


def cmd_alerts_test(args: argparse.Namespace) -> int:
    import time

    from echo.adapters.alerts.webhook import send_test
    from echo.ports.alerts import Alert

    config = load_config(args.config).alerts
    if not config.webhooks:
        print(f"echo-copier alerts: {args.config} configures no [[alerts.webhook]]", file=sys.stderr)
        return 2
    alert = Alert(
        "test",
        "info",
        "a test message from echo-copier: alerts reach this place",
        int(time.time() * 1000),
    )
    timeout_s = args.timeout if args.timeout is not None else config.timeout_s

    async def main() -> list[str | None]:
        return await send_test(config.webhooks, alert, timeout_s)

    results = run_trio(main)
    for hook, error in zip(config.webhooks, results, strict=True):
        print(f"{hook.label}: {'ok' if error is None else error}")
    return 1 if any(e is not None for e in results) else 0


def add_parsers(sub: Any) -> None:
    from echo.cli.common import seconds

    al = sub.add_parser("alerts", help="alerts to people (webhooks)")
    asub = al.add_subparsers(dest="alerts_command", required=True)
    t = asub.add_parser("test", help="send a test message to each webhook in [alerts]")
    t.add_argument("--config", required=True, help="a TOML file path or etcd://HOST:PORT")
    t.add_argument(
        "--timeout", type=seconds, help="seconds to wait for each webhook (default: alerts.timeout_s)"
    )
    t.set_defaults(func=cmd_alerts_test)
