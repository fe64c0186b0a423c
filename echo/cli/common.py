"""What every command family shares: running trio with configuration errors unwrapped, reading the
configuration, printing a store URL safely, and the argument types (whole numbers, seconds)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from echo.domain.config import Config, ConfigError
from echo.domain.paths import in_data_folder

T = TypeVar("T")
DEFAULT_STORE = "sqlite:///" + in_data_folder("echo.db")


def run_trio(fn: Callable[[], Awaitable[T]]) -> T:
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


def load_config(spec: str | None) -> Config:
    """The configuration from a TOML file, ``etcd://HOST:PORT``, or the defaults (outside trio)."""
    from echo.app import root

    async def read() -> Config:
        async with root.open_config(spec) as source:
            return await root.load_config(source)

    return run_trio(read) if spec else Config()


def redacted(url: str) -> str:
    """A store URL fit to print: a password in it becomes ``***``."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


positive = int_at_least(1)
count = int_at_least(0)
LOG_FORMAT_HELP = "console (readable) or json (one object a line); default: the config's log.format"
LOG_LEVEL_HELP = "the least severe log entries written"
