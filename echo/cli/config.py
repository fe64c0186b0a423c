"""``config get|set|validate|export|import``: read and change the configuration, a TOML file or etcd; a
change that would not validate is refused."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from echo.cli.common import run_trio
from echo.domain.config import ConfigError


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
        return run_trio(main)
    except ConfigError as exc:
        print(f"echo-copier config: {exc}", file=sys.stderr)
        return 2


def add_parsers(sub: Any) -> None:
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
