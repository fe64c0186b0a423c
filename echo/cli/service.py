"""``service install|uninstall|start|stop|status``: the copier as a Windows service
(``echo.app.winservice_control``, imported on Windows only); elsewhere one line says to use systemd."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from echo.cli.common import load_config

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
        from echo.app import winservice_control as winservice

        what, name = args.service_command, args.name
        try:
            if what == "install":
                config = load_config(args.config)  # a bad configuration stops here, not in the service
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


def add_parsers(sub: Any) -> None:
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
