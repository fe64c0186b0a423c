"""Log set-up for every command: structlog as JSON lines (production, files, the simulator) or readable
lines in a terminal, stamped with wall time or with the simulator's virtual seconds."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal, TextIO

import structlog
import trio
from opentelemetry import trace

from echo.pipe.jsonenc import to_json
from echo.services import tracing

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL,
}
"""structlog's thresholds; ``off`` also sends what passes (critical lines) nowhere."""


def configure(
    fmt: str = "console",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    clock: Literal["wall", "virtual"] = "wall",
    stdlib: Sequence[str] = (),
    cache: bool = False,
) -> None:
    """Where and how log lines go. ``stream`` defaults to stderr; ``level="off"`` writes nothing at all.

    ``clock="virtual"`` stamps each line with trio's current time in seconds (``t``, for runs on a
    ``MockClock``) instead of an ISO ``timestamp``. ``stdlib`` names standard-library loggers (the
    simulated terminals' ``echo.sim``) whose records go to the same stream in the same JSON shape.

    ``cache``: each module's logger is built once, on its first line, for the rest of the process (a
    process that configures its logs once, before it logs: ``run``); otherwise every
    call builds it again under the configuration in force, which tests change at will."""
    off = level == "off"
    out = io.StringIO() if off else stream if stream is not None else sys.stderr
    stamp: structlog.typing.Processor = (
        _virtual_time if clock == "virtual" else structlog.processors.TimeStamper(fmt="iso", utc=True)
    )
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=to_json)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
    for name in stdlib:
        std = logging.getLogger(name)
        std.handlers.clear()
        std.propagate = False
        std.setLevel(logging.CRITICAL + 10 if off else _LEVELS[level])
        if not off:
            handler = logging.StreamHandler(out)
            handler.setFormatter(_JsonFormatter(stamp))
            std.addHandler(handler)


def add_trace_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The trace_id and span_id of the current span, when traces are on and a span is current (a line's
    own trace_id, the trade's, is kept)."""
    if tracing.ON:
        sc = trace.get_current_span().get_span_context()
        if sc.is_valid:
            event.setdefault("trace_id", f"{sc.trace_id:032x}")
            event["span_id"] = f"{sc.span_id:016x}"
    return event


def _virtual_time(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    with contextlib.suppress(RuntimeError):
        event["t"] = round(trio.current_time(), 3)
    return event


class _JsonFormatter(logging.Formatter):
    """Standard-library log records as JSON lines in the shape of the structlog lines beside them."""

    def __init__(self, stamp: structlog.typing.Processor) -> None:
        super().__init__()
        self._stamp = stamp

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {"event": record.getMessage(), "logger": record.name}
        event["level"] = record.levelname.lower()
        return to_json(self._stamp(None, "", event))
