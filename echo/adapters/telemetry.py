"""The process's OpenTelemetry traces, exported by OTLP/HTTP (protobuf) to ``telemetry.endpoint``.

One TracerProvider per process (``service.name`` echo-core, echo-agent or echo for all-in-one), a
BatchSpanProcessor that exports from its own thread (a copy never waits for it; what is queued is flushed
at shutdown), and an id generator that gives a trade's first span the trace id born at its master."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

import structlog
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from echo.domain.config import TelemetryConfig
from echo.services import tracing

log = structlog.get_logger("echo.telemetry")

EXPORT_TIMEOUT_S = 5.0
"""How long one export may take (the exporter's thread waits, never the copier)."""
SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval while traces are on: the exporter's thread encodes batches of
spans in Python, and at the default 5 ms the event loop would wait that long for the interpreter each
time it wakes meanwhile."""


class MasterTraceIds(RandomIdGenerator):
    """A root span takes the trace id its trade was born with at the master (``tracing.start``)."""

    def generate_trace_id(self) -> int:
        return tracing.WANTED_TRACE_ID.get() or super().generate_trace_id()


class _ExporterLog(logging.Handler):
    """The SDK's and the exporter's complaints (a receiver that is down) as the copier's own log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        log.warning("telemetry_export_problem", error=record.getMessage()[:300], source=record.name)


def _version() -> str:
    try:
        return metadata.version("echo-copier")
    except metadata.PackageNotFoundError:
        return "unknown"


@contextmanager
def traces(config: TelemetryConfig, service_name: str) -> Iterator[None]:
    """Spans are recorded and exported while inside; the queue is flushed on the way out."""
    name = config.service_name or service_name
    resource = Resource.create(
        {"service.name": name, "service.version": _version(), "host.name": socket.gethostname()}
    )
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(config.sampling)),
        id_generator=MasterTraceIds(),
    )
    exporter = OTLPSpanExporter(endpoint=config.endpoint, timeout=EXPORT_TIMEOUT_S)
    timeout_ms = int(EXPORT_TIMEOUT_S * 1000)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=1000, export_timeout_millis=timeout_ms)
    )
    sdk_log = logging.getLogger("opentelemetry")
    handler = _ExporterLog(logging.WARNING)
    sdk_log.addHandler(handler)
    sdk_log.propagate = False
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    tracing.enable(provider.get_tracer("echo"))
    log.info("telemetry_traces_on", endpoint=config.endpoint, service_name=name, sampling=config.sampling)
    try:
        yield
    finally:
        tracing.disable()
        provider.shutdown()
        sys.setswitchinterval(switch_interval)
        sdk_log.removeHandler(handler)
        sdk_log.propagate = True
