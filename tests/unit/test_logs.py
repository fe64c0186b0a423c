"""The one log set-up (``echo.app.logs.configure``): wall or virtual time, standard-library loggers routed
into the same JSON lines, and ``off``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
import trio
import trio.testing

from echo.app.logs import configure

LOGGER = "echo.test_logs"


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    """The suite's logging configuration (tests/conftest.py) is restored after each test."""
    saved = structlog.get_config()
    std = logging.getLogger(LOGGER)
    saved_std = (list(std.handlers), std.propagate, std.level)
    try:
        yield
    finally:
        structlog.configure(**saved)
        std.handlers[:], std.propagate, std.level = saved_std[0], saved_std[1], saved_std[2]


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_virtual_time_stamps_every_line_with_trio_seconds_and_routes_stdlib_loggers() -> None:
    out = io.StringIO()
    configure("json", "info", out, clock="virtual", stdlib=(LOGGER,))

    async def main() -> None:
        await trio.sleep(1.25)
        structlog.get_logger().info("copied", trade_id="t1")
        structlog.get_logger().debug("below the level")
        logging.getLogger(LOGGER).info("terminal connected")
        logging.getLogger(LOGGER).debug("below the level too")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert lines(out) == [
        {"trade_id": "t1", "event": "copied", "level": "info", "t": 1.25},
        {"event": "terminal connected", "logger": LOGGER, "level": "info", "t": 1.25},
    ]


def test_wall_time_stamps_an_iso_timestamp() -> None:
    out = io.StringIO()
    configure("json", "debug", out, stdlib=(LOGGER,))
    structlog.get_logger().debug("started")
    logging.getLogger(LOGGER).warning("slow")
    first, second = lines(out)
    assert (first["event"], first["level"]) == ("started", "debug")
    assert (second["event"], second["level"], second["logger"]) == ("slow", "warning", LOGGER)
    for line in (first, second):
        assert str(line["timestamp"]).endswith("Z") and "t" not in line


def test_off_writes_nothing_anywhere() -> None:
    out = io.StringIO()
    configure("json", "off", out, clock="virtual", stdlib=(LOGGER,))
    structlog.get_logger().critical("even this")
    logging.getLogger(LOGGER).critical("or this")
    assert out.getvalue() == ""
    assert not logging.getLogger(LOGGER).isEnabledFor(logging.CRITICAL)
