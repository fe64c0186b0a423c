"""The process's OpenTelemetry traces, exported by OTLP/HTTP (protobuf) to ``telemetry.endpoint``.

One exporter per process (``service.name`` echo-core, echo-agent or echo for all-in-one). An ended span
(``echo.services.tracing.Span``, plain data) is appended to a bounded queue, nothing more: a copy never
waits for the export, and when the queue is full a span is dropped and counted. The exporter's thread
takes batches of up to ``BATCH`` spans (every ``INTERVAL_S``, or sooner when a batch is full), turns them
into the official ``ExportTraceServiceRequest`` (opentelemetry-proto's compiled classes, encoded in C by
upb) and POSTs it; what is queued is flushed on the way out."""

from __future__ import annotations

import socket
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from echo.domain.config import TelemetryConfig
from echo.services import tracing

log = structlog.get_logger("echo.telemetry")

EXPORT_TIMEOUT_S = 5.0
"""How long one export may take (the exporter's thread waits, never the copier)."""
INTERVAL_S = 1.0
"""How often the exporter's thread sends what is queued."""
BATCH = 512
"""Spans per request at most; a full batch wakes the exporter's thread before its interval."""
QUEUE = 8192
"""Spans waiting for the exporter at most; more are dropped (and counted)."""
SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval while traces are on: the exporter's thread builds requests in
Python, and at the default 5 ms the event loop would wait that long for the interpreter each time it
wakes meanwhile."""

_INTERNAL = PbSpan.SpanKind.SPAN_KIND_INTERNAL


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def _attributes(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in attributes.items()]


def encode(spans: list[tracing.Span], resource: Mapping[str, Any]) -> bytes:
    """An OTLP ``ExportTraceServiceRequest`` of these spans (one resource, one scope)."""
    Event = PbSpan.Event
    out = [
        PbSpan(
            trace_id=s.trace_id.to_bytes(16, "big"),
            span_id=s.span_id.to_bytes(8, "big"),
            parent_span_id=s.parent_id.to_bytes(8, "big") if s.parent_id else b"",
            flags=0x301 if s.remote_parent else 0x101,
            name=s.name,
            kind=_INTERNAL,
            start_time_unix_nano=s.start_ns,
            end_time_unix_nano=s.end_ns,
            attributes=_attributes(s.attributes),
            events=[Event(time_unix_nano=t, name=n, attributes=_attributes(a)) for n, t, a in s.events],
        )
        for s in spans
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_attributes(resource)),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="echo"), spans=out)],
            )
        ]
    )
    body: bytes = request.SerializeToString()
    return body


class Exporter:
    """The bounded queue of ended spans and the thread that posts them (``put`` is the sink)."""

    def __init__(self, endpoint: str, resource: Mapping[str, Any]) -> None:
        self.endpoint, self.resource = endpoint, dict(resource)
        self.queue: deque[tracing.Span] = deque()
        self.dropped = 0
        """Spans dropped because the queue was full."""
        self.failed = 0
        """Spans lost to exports that failed (a receiver down or refusing)."""
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="echo-otlp-export", daemon=True)

    def put(self, span: tracing.Span) -> None:
        queue = self.queue
        if len(queue) >= QUEUE:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) == BATCH:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Send what is queued (each export within its timeout) and stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait(INTERVAL_S)
            self._wake.clear()
            stopping = self._stopping
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
                self._post(batch)
                if not stopping and len(self.queue) < BATCH:
                    break
            if stopping:
                return

    def _post(self, batch: list[tracing.Span]) -> None:
        body = encode(batch, self.resource)
        request = urllib.request.Request(
            self.endpoint, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        try:
            with urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S) as response:
                response.read()
        except (OSError, urllib.error.URLError) as e:  # HTTPError is one too
            self.failed += len(batch)
            log.warning("telemetry_export_problem", error=str(e)[:300], spans=len(batch))


def _version() -> str:
    try:
        return metadata.version("echo-copier")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextmanager
def traces(config: TelemetryConfig, service_name: str) -> Iterator[None]:
    """Spans are recorded and exported while inside; the queue is flushed on the way out."""
    name = config.service_name or service_name
    resource = {"service.name": name, "service.version": _version(), "host.name": socket.gethostname()}
    exporter = Exporter(config.endpoint, resource)
    exporter.start()
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    tracing.enable(exporter.put, config.sampling)
    log.info("telemetry_traces_on", endpoint=config.endpoint, service_name=name, sampling=config.sampling)
    try:
        yield
    finally:
        tracing.disable()
        exporter.stop()
        sys.setswitchinterval(switch_interval)
        if exporter.dropped or exporter.failed:
            log.warning("telemetry_spans_lost", dropped=exporter.dropped, failed=exporter.failed)
