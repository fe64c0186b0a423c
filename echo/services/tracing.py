"""One trace per trade (RFC-001 section 8): the spans the shells (Agent, Core's router and service) open on
each hop of a copy, under the trace id born at the master (its 32 hex digits are the W3C trace id).

Off unless the composition root installs a tracer (``[telemetry] endpoint``): every call site checks
``tracing.ON`` first, so with traces off no span object is ever built. Between processes (and through the
in-process transport alike) a span travels as a W3C ``traceparent`` string on the transport's envelopes
(``FromAccount``/``ToAccount``); a message without one starts its span under its own trace id."""

from __future__ import annotations

import re
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

ON = False
"""Whether spans are recorded at all (the hot path's one check)."""

_tracer: trace.Tracer = trace.NoOpTracer()

WANTED_TRACE_ID: ContextVar[int] = ContextVar("echo_wanted_trace_id", default=0)
"""The trace id a root span about to start should take (the master's); read by the SDK's id generator
that the composition root installs (``echo.adapters.telemetry``)."""


class Group:
    """What a Core router worker traces while it handles one group: trace_id -> the spans of the group's
    messages in that trace (its sends are events of the last one), and the group's steps (apply, journal)
    as (name, start, end), made child spans of each message's span once the group is sent (``close``), so
    building them never delays a copy."""

    __slots__ = ("spans", "steps", "waits")

    def __init__(self) -> None:
        self.spans: dict[str, list[Span]] = {}
        self.steps: list[tuple[str, int, int]] = []
        self.waits: list[tuple[Span, int, int]] = []
        """Each message's wait in its worker's queue: (its span, enqueued, dequeued)."""

    def close(self) -> None:
        for parent, start_ns, end_ns in self.waits:
            start("core.router.queue", None, parent=parent, start_ns=start_ns).end(end_ns)
        for spans in self.spans.values():
            for span in spans:
                for name, start_ns, end_ns in self.steps:
                    start(name, None, parent=span, start_ns=start_ns).end(end_ns)
                span.end()


GROUP: ContextVar[Group | None] = ContextVar("echo_trace_group", default=None)
"""The group a Core router worker is handling (traces on, and a master's event in it)."""

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def enable(tracer: trace.Tracer) -> None:
    global ON, _tracer
    _tracer, ON = tracer, True


def disable() -> None:
    global ON, _tracer
    _tracer, ON = trace.NoOpTracer(), False


def remote_parent(traceparent: str) -> Context | None:
    """The context of a span from another hop (a W3C traceparent), or None if it is absent or invalid."""
    found = _TRACEPARENT.fullmatch(traceparent) if len(traceparent) == 55 else None
    if found is None:
        return None
    trace_id, span_id = int(found[1], 16), int(found[2], 16)
    if not trace_id or not span_id:
        return None
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(found[3], 16) & 1))
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def sampled(traceparent: str) -> bool:
    """Whether a traceparent names a span that is recorded (its trace is in the sample)."""
    return len(traceparent) == 55 and traceparent[-1] in "13579bdf"


def start(
    name: str,
    trace_id: str | None,
    *,
    traceparent: str = "",
    parent: Span | None = None,
    start_ns: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> Span:
    """A span of one hop: under ``parent`` (a span of this process), else under ``traceparent`` (one from
    another hop), else a root in the trace ``trace_id`` (a fresh trace if that is not a valid W3C id)."""
    if parent is not None:
        context = trace.set_span_in_context(parent, Context())
    else:
        found = remote_parent(traceparent) if traceparent else None
        if found is None:
            wanted = int(trace_id, 16) if trace_id and _TRACE_ID.fullmatch(trace_id) else 0
            token = WANTED_TRACE_ID.set(wanted)
            try:
                return _tracer.start_span(name, Context(), attributes=attributes, start_time=start_ns)
            finally:
                WANTED_TRACE_ID.reset(token)
        context = found
    return _tracer.start_span(name, context, attributes=attributes, start_time=start_ns)


def traceparent_of(span: Span) -> str:
    """The W3C traceparent another hop opens its span under ("" for a span that is not recorded)."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return ""
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def step(name: str, start_ns: int, end_ns: int) -> None:
    """A step of the current router group, from ``start_ns`` to ``end_ns`` (``Group``)."""
    group = GROUP.get()
    if group is not None:
        group.steps.append((name, start_ns, end_ns))


def use(span: Span) -> AbstractContextManager[Span]:
    """``span`` is the current one meanwhile (log lines carry its ids); it is not ended on exit."""
    return trace.use_span(span, end_on_exit=False)


class Deferred:
    """A span whose timestamps are taken now and whose object is built at ``finish``: off the hot path
    (the Agent's fan-out writes), and never at all for what is forgotten unfinished."""

    __slots__ = ("attributes", "events", "name", "start_ns", "trace_id", "traceparent")

    def __init__(self, name: str, trace_id: str, traceparent: str, attributes: dict[str, Any]) -> None:
        self.name, self.trace_id, self.traceparent = name, trace_id, traceparent
        self.attributes = attributes
        self.start_ns = time.time_ns()
        self.events: list[tuple[str, int, dict[str, Any]]] = []

    def add_event(self, name: str, attributes: dict[str, Any]) -> None:
        self.events.append((name, time.time_ns(), attributes))

    def finish(self, **attributes: Any) -> None:
        span = start(
            self.name,
            self.trace_id,
            traceparent=self.traceparent,
            start_ns=self.start_ns,
            attributes={**self.attributes, **attributes},
        )
        for name, at_ns, attrs in self.events:
            span.add_event(name, attrs, timestamp=at_ns)
        span.end()
