"""The spans of a copy (``echo.services.tracing``) and their export (``echo.adapters.telemetry``): a root
span takes the master's trace id, a traceparent from another hop is its parent (garbage is ignored, never
raised), nothing is recorded when off, the exporter flushes to a real OTLP receiver on the way out and
samples by trace id, and log lines carry the current span's ids."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from echo.adapters.telemetry import MasterTraceIds, traces
from echo.app.logs import configure
from echo.domain.config import TelemetryConfig
from echo.services import tracing
from tests.otlp import otlp_receiver

MASTER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def recorded() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=MasterTraceIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider.get_tracer("test"))
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def test_off_by_default_and_nothing_is_recorded_when_off() -> None:
    assert not tracing.ON
    span = tracing.start("x", MASTER_TRACE)
    assert not span.get_span_context().is_valid and tracing.traceparent_of(span) == ""


def test_a_root_span_takes_the_masters_trace_id_and_a_bad_one_gets_a_fresh_trace(
    recorded: InMemorySpanExporter,
) -> None:
    root = tracing.start("agent.intent.receive", MASTER_TRACE)
    root.end()
    assert f"{root.get_span_context().trace_id:032x}" == MASTER_TRACE
    for bad in ("", "not hex", MASTER_TRACE.upper(), MASTER_TRACE[:-1], None):
        other = tracing.start("agent.intent.receive", bad)
        other.end()
        got = other.get_span_context()
        assert got.is_valid and f"{got.trace_id:032x}" != MASTER_TRACE
    assert len(recorded.get_finished_spans()) == 6


def test_a_traceparent_from_another_hop_is_the_parent(recorded: InMemorySpanExporter) -> None:
    root = tracing.start("core.send", MASTER_TRACE)
    root.end()
    child = tracing.start("agent.command.write", None, traceparent=tracing.traceparent_of(root))
    child.end()
    finished = {s.name: s for s in recorded.get_finished_spans()}
    write = finished["agent.command.write"]
    assert write.parent is not None and write.parent.span_id == root.get_span_context().span_id
    assert write.parent.is_remote and write.context is not None
    assert f"{write.context.trace_id:032x}" == MASTER_TRACE


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.from_regex(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", fullmatch=True),
        st.just("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        st.just("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),
    )
)
def test_garbage_traceparents_are_ignored_never_raised(value: str) -> None:
    context = tracing.remote_parent(value)
    if context is not None:
        assert value.startswith("00-") and len(value) == 55


def _otlp(endpoint: str, sampling: float = 1.0) -> TelemetryConfig:
    return TelemetryConfig(endpoint=endpoint, sampling=sampling, service_name="echo-test")


def test_spans_reach_a_real_otlp_receiver_flushed_at_shutdown_and_sampling_zero_sends_none() -> None:
    with otlp_receiver() as receiver:
        with traces(_otlp(receiver.url), "echo"):
            assert tracing.ON
            tracing.start("agent.intent.receive", MASTER_TRACE).end()
        assert not tracing.ON
        assert [(s.service, s.name, s.trace_id) for s in receiver.spans] == [
            ("echo-test", "agent.intent.receive", MASTER_TRACE)
        ]
        with traces(_otlp(receiver.url, 0.0), "echo"):
            tracing.start("agent.intent.receive", MASTER_TRACE).end()
        assert len(receiver.spans) == 1


def test_log_lines_carry_the_current_spans_ids(recorded: InMemorySpanExporter) -> None:
    saved = structlog.get_config()
    out = io.StringIO()
    try:
        configure("json", "info", out)
        log = structlog.get_logger("echo.test_tracing")
        span = tracing.start("agent.intent.receive", MASTER_TRACE)
        with tracing.use(span):
            log.info("inside")
        span.end()
        log.info("outside")
    finally:
        structlog.configure(**saved)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == MASTER_TRACE
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside


def test_a_deferred_span_keeps_the_times_it_was_given_and_is_built_only_at_finish(
    recorded: InMemorySpanExporter,
) -> None:
    before = time.time_ns()
    write = tracing.Deferred("agent.command.write", MASTER_TRACE, "", {"account_id": "51001"})
    write.add_event("slave.delivery_ack", {"ea_timestamp_ms": 1})
    assert not recorded.get_finished_spans()
    write.finish(success=True)
    (span,) = recorded.get_finished_spans()
    assert span.start_time is not None and before <= span.start_time <= span.events[0].timestamp
    assert dict(span.attributes or {}) == {"account_id": "51001", "success": True}
    assert span.context is not None and f"{span.context.trace_id:032x}" == MASTER_TRACE


def test_with_traces_off_a_process_loads_no_tracing_sdk_and_no_exporter() -> None:
    """The copier's modules import the tracing API only; the SDK and OTLP load with ``[telemetry]`` on."""
    code = (
        "import sys, echo.cli, echo.app.root, echo.services.agent.service, echo.services.core.service\n"
        "sdk = ('opentelemetry.sdk.trace', 'opentelemetry.exporter.otlp')\n"
        "print(sorted(m for m in sys.modules if m.startswith(sdk)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_only_a_sampled_traceparent_is_followed_by_more_spans() -> None:
    on = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.sampled(on) and tracing.sampled(on[:-2] + "03")
    assert not tracing.sampled(on[:-2] + "00") and not tracing.sampled("") and not tracing.sampled(on[:-1])
