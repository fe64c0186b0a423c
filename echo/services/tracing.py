"""One trace per trade (RFC-001 section 8): the spans the shells (Agent, Core's router and service) open on
each hop of a copy, under the trace id born at the master (its 32 hex digits are the W3C trace id).

Off unless the composition root installs a sink (``[telemetry] endpoint``): every call site checks
``tracing.ON`` first, so with traces off no span object is ever built. On, a span is a small plain
object of ours (``Span``: ids, times, attributes, events), not an SDK span: building one costs a few
microseconds, and an ended span goes as it is to the sink (the exporter, ``echo.adapters.telemetry``)
which turns batches of them into OTLP protobuf on its own thread. Between processes (and through the
in-process transport alike) a span travels as a W3C ``traceparent`` string on the transport's envelopes
(``FromAccount``/``ToAccount``); a message without one starts its span under its own trace id."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanContext, TraceFlags
from opentelemetry.util import types

ON = False
"""Whether spans are recorded at all (the hot path's one check)."""

_sink: Callable[[Span], None] = lambda _span: None  # noqa: E731
_bound = 1 << 64
"""A root is in the sample when the low 64 bits of its trace id are below this (``TraceIdRatioBased``)."""

_ids = random.Random()
_CURRENT: ContextVar[Span | None] = ContextVar("echo_current_span", default=None)


class Span(trace.Span):
    """A span of ours: what OTLP needs of it, kept as plain attributes until the exporter encodes it.
    ``sampled`` False is a span outside the sample: it carries its trace on (``traceparent_of``) and
    records nothing."""

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "name",
        "parent_id",
        "remote_parent",
        "sampled",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        parent_id: int,
        sampled: bool,
        *,
        remote_parent: bool = False,
        start_ns: int | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.trace_id, self.parent_id, self.sampled = name, trace_id, parent_id, sampled
        self.remote_parent = remote_parent
        self.span_id = _ids.getrandbits(64) or 1
        self.start_ns = start_ns or time.time_ns()
        self.end_ns = 0
        self.attributes: dict[str, Any] = attributes if attributes is not None else {}  # the span's own
        self.events: list[tuple[str, int, Mapping[str, Any]]] = []

    def get_span_context(self) -> SpanContext:
        flags = TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT)
        return SpanContext(self.trace_id, self.span_id, is_remote=False, trace_flags=flags)

    def is_recording(self) -> bool:
        return self.sampled and not self.end_ns

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self.sampled:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self.sampled:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.sampled:
            self.events.append((name, timestamp or time.time_ns(), attributes or {}))

    def end(self, end_time: int | None = None) -> None:
        if self.sampled and not self.end_ns:
            self.end_ns = end_time or time.time_ns()
            _sink(self)

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.add_event(
            "exception", {"exception.type": type(exception).__name__, "exception.message": str(exception)}
        )


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


def enable(sink: Callable[[Span], None], sampling: float = 1.0) -> None:
    """Spans are recorded from now on; each one ended goes to ``sink`` (it must never block). A trade's
    trace is in the sample with probability ``sampling`` (decided by its trace id, as OTel's
    ``TraceIdRatioBased``; every hop of it follows the first)."""
    global ON, _sink, _bound
    _sink, _bound, ON = sink, round(max(0.0, min(1.0, sampling)) * (1 << 64)), True


def disable() -> None:
    global ON, _sink
    _sink, ON = (lambda _span: None), False


def remote_parent(traceparent: str) -> tuple[int, int, bool] | None:
    """The (trace id, span id, sampled) of a span from another hop (a W3C traceparent), or None if it is
    absent or invalid."""
    found = _TRACEPARENT.fullmatch(traceparent) if len(traceparent) == 55 else None
    if found is None:
        return None
    trace_id, span_id = int(found[1], 16), int(found[2], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(found[3], 16) & 1)


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
    another hop), else a root in the trace ``trace_id`` (a fresh trace if that is not a valid W3C id).
    The span keeps ``attributes`` (not a copy). With traces off: the invalid span, which records nothing
    and carries no trace."""
    if not ON:
        return _OFF
    if parent is not None:
        return Span(
            name, parent.trace_id, parent.span_id, parent.sampled, start_ns=start_ns, attributes=attributes
        )
    found = remote_parent(traceparent) if traceparent else None
    if found is not None:
        tid, pid, on = found
        return Span(name, tid, pid, on, remote_parent=True, start_ns=start_ns, attributes=attributes)
    tid = int(trace_id, 16) if trace_id and _TRACE_ID.fullmatch(trace_id) else 0
    tid = tid or _ids.getrandbits(128) or 1
    on = (tid & 0xFFFFFFFFFFFFFFFF) < _bound
    return Span(name, tid, 0, on, start_ns=start_ns, attributes=attributes)


class _Off(Span):
    """The span ``start`` gives with traces off (``traceparent_of`` is "", nothing is recorded)."""

    def get_span_context(self) -> SpanContext:
        return INVALID_SPAN.get_span_context()


_OFF = _Off("", 0, 0, False)


def traceparent_of(span: Span) -> str:
    """The W3C traceparent another hop opens its span under ("" for a span that is not recorded)."""
    if not span.trace_id:
        return ""
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{'01' if span.sampled else '00'}"


def step(name: str, start_ns: int, end_ns: int) -> None:
    """A step of the current router group, from ``start_ns`` to ``end_ns`` (``Group``)."""
    group = GROUP.get()
    if group is not None:
        group.steps.append((name, start_ns, end_ns))


def use(span: Span) -> AbstractContextManager[trace.Span]:
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
            attributes={**self.attributes, **attributes} if attributes else self.attributes,
        )
        span.events.extend(self.events)
        span.end()
