"""The spans of a copy (``echo.services.tracing``) and their export (``echo.adapters.telemetry``): a root
span takes the master's trace id, a traceparent from another hop is its parent (garbage is ignored, never
raised), nothing is recorded when off, the exporter flushes to a real OTLP receiver on the way out, samples
by trace id, drops (and counts) what its queue cannot hold and never raises for a receiver that is down,
and log lines carry the current span's ids."""

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

from echo.adapters import telemetry
from echo.adapters.telemetry import Exporter, traces
from echo.app.logs import configure
from echo.domain.config import TelemetryConfig
from echo.services import tracing
from tests.backends import free_port
from tests.otlp import decode, otlp_receiver

MASTER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def recorded() -> Iterator[list[tracing.Span]]:
    ended: list[tracing.Span] = []
    tracing.enable(ended.append)
    try:
        yield ended
    finally:
        tracing.disable()


def test_off_by_default_and_nothing_is_recorded_when_off() -> None:
    assert not tracing.ON
    span = tracing.start("x", MASTER_TRACE)
    assert not span.get_span_context().is_valid and tracing.traceparent_of(span) == ""


def test_a_root_span_takes_the_masters_trace_id_and_a_bad_one_gets_a_fresh_trace(
    recorded: list[tracing.Span],
) -> None:
    root = tracing.start("agent.intent.receive", MASTER_TRACE)
    root.end()
    assert f"{root.get_span_context().trace_id:032x}" == MASTER_TRACE
    for bad in ("", "not hex", MASTER_TRACE.upper(), MASTER_TRACE[:-1], None):
        other = tracing.start("agent.intent.receive", bad)
        other.end()
        got = other.get_span_context()
        assert got.is_valid and f"{got.trace_id:032x}" != MASTER_TRACE
    assert len(recorded) == 6


def test_a_traceparent_from_another_hop_is_the_parent(recorded: list[tracing.Span]) -> None:
    root = tracing.start("core.send", MASTER_TRACE)
    root.end()
    child = tracing.start("agent.command.write", None, traceparent=tracing.traceparent_of(root))
    child.end()
    finished = {s.name: s for s in recorded}
    write = finished["agent.command.write"]
    assert write.parent_id == root.get_span_context().span_id and write.remote_parent
    assert f"{write.trace_id:032x}" == MASTER_TRACE and write.sampled


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


def test_log_lines_carry_the_current_spans_ids(recorded: list[tracing.Span]) -> None:
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
    recorded: list[tracing.Span],
) -> None:
    before = time.time_ns()
    write = tracing.Deferred("agent.command.write", MASTER_TRACE, "", {"account_id": "51001"})
    write.add_event("slave.delivery_ack", {"ea_timestamp_ms": 1})
    assert not recorded
    write.finish(success=True)
    (span,) = recorded
    assert before <= span.start_ns <= span.events[0][1] <= span.end_ns
    assert span.attributes == {"account_id": "51001", "success": True}
    assert f"{span.trace_id:032x}" == MASTER_TRACE


def test_no_process_loads_the_tracing_sdk_or_its_exporter_even_with_traces_on() -> None:
    """The copier's spans and their exporter are its own: neither the SDK's tracing nor its OTLP exporter
    is imported, with traces off or on."""
    code = (
        "import sys, echo.cli, echo.app.root, echo.services.agent.service, echo.services.core.service\n"
        "import echo.adapters.telemetry\n"
        "sdk = ('opentelemetry.sdk.trace', 'opentelemetry.exporter.otlp')\n"
        "print(sorted(m for m in sys.modules if m.startswith(sdk)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_only_a_sampled_traceparent_is_followed_by_more_spans() -> None:
    on = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.sampled(on) and tracing.sampled(on[:-2] + "03")
    assert not tracing.sampled(on[:-2] + "00") and not tracing.sampled("") and not tracing.sampled(on[:-1])


def test_the_exported_request_keeps_the_trace_shape(recorded: list[tracing.Span]) -> None:
    """Parents (local and remote), events with their own times, and attributes of every type, as the
    official OTLP protobuf decodes them."""
    root = tracing.start("agent.intent.receive", MASTER_TRACE, attributes={"account_id": "9001", "n": 3})
    core = tracing.start("core.handle", None, traceparent=tracing.traceparent_of(root))
    step = tracing.start("core.engine.apply", None, parent=core, start_ns=core.start_ns)
    step.end(core.start_ns + 5)
    core.set_attribute("rejected", "paused")
    core.add_event("core.sent", {"ok": True, "ratio": 0.5}, timestamp=core.start_ns + 7)
    core.end()
    root.end()
    received = {s.name: s for s in decode(telemetry.encode(recorded, {"service.name": "echo-test"}))}
    assert set(received) == {"agent.intent.receive", "core.handle", "core.engine.apply"}
    r, c, a = received["agent.intent.receive"], received["core.handle"], received["core.engine.apply"]
    assert {r.trace_id, c.trace_id, a.trace_id} == {MASTER_TRACE} and {r.service} == {"echo-test"}
    assert not r.parent_span_id and c.parent_span_id == r.span_id and a.parent_span_id == c.span_id
    assert r.attributes == {"account_id": "9001", "n": 3} and c.attributes["rejected"] == "paused"
    assert c.events == ("core.sent",) and (a.start_ns, a.end_ns) == (c.start_ns, c.start_ns + 5)


def test_sampling_is_decided_at_the_root_by_trace_id_and_followed_by_every_hop() -> None:
    ended: list[tracing.Span] = []
    tracing.enable(ended.append, 0.5)
    try:
        low, high = "0" * 16 + "0" * 15 + "1", "0" * 16 + "f" * 16  # low 64 bits below/above half
        kept, out = tracing.start("a", low), tracing.start("a", high)
        assert kept.is_recording() and not out.is_recording()
        assert tracing.sampled(tracing.traceparent_of(kept)) and not tracing.sampled(
            tracing.traceparent_of(out)
        )
        child = tracing.start("b", None, traceparent=tracing.traceparent_of(out))
        local = tracing.start("c", None, parent=kept)
        for span in (kept, out, child, local):
            span.end()
        assert [s.name for s in ended] == ["a", "c"]
    finally:
        tracing.disable()


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    exporter = Exporter("http://127.0.0.1:9/v1/traces", {})  # its thread not started: nothing drains it
    tracing.enable(exporter.put)
    try:
        for _ in range(telemetry.QUEUE + 5):
            tracing.start("agent.intent.receive", MASTER_TRACE).end()
    finally:
        tracing.disable()
    assert len(exporter.queue) == telemetry.QUEUE and exporter.dropped == 5


def test_a_receiver_that_is_down_costs_the_spans_and_raises_nothing() -> None:
    exporter = Exporter(f"http://127.0.0.1:{free_port()}/v1/traces", {})
    exporter.start()
    tracing.enable(exporter.put)
    try:
        tracing.start("agent.intent.receive", MASTER_TRACE).end()
    finally:
        tracing.disable()
        exporter.stop()
    assert exporter.failed == 1 and not exporter.queue


def test_more_than_a_batch_is_flushed_at_shutdown_in_batches() -> None:
    with otlp_receiver() as receiver:
        with traces(_otlp(receiver.url), "echo"):
            for _ in range(telemetry.BATCH * 2 + 1):
                tracing.start("agent.intent.receive", MASTER_TRACE).end()
        assert len(receiver.spans) == telemetry.BATCH * 2 + 1 and receiver.posts >= 3


_ATTRIBUTE = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=300),
)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.dictionaries(st.text(max_size=40), _ATTRIBUTE, max_size=6),
    st.lists(st.tuples(st.text(max_size=40), st.integers(0, 2**64 - 1)), max_size=4),
    st.integers(1, 2**128 - 1),
    st.integers(0, 2**64 - 1),
)
def test_any_span_is_written_as_the_official_protobuf_classes_read_it(
    name: str,
    attributes: dict[str, object],
    events: list[tuple[str, int]],
    trace_id: int,
    parent_id: int,
) -> None:
    span = tracing.Span(name, trace_id, parent_id, True, start_ns=1, attributes=attributes)
    span.events.extend((event, at_ns, attributes) for event, at_ns in events)
    span.end_ns = 2**64 - 1
    (got,) = decode(telemetry.encode([span], {"service.name": name}))
    assert (got.service, got.name, got.trace_id) == (name, name, f"{trace_id:032x}")
    assert got.parent_span_id == (f"{parent_id:016x}" if parent_id else "")
    assert (got.start_ns, got.end_ns) == (1, 2**64 - 1) and got.events == tuple(e for e, _ in events)
    assert got.attributes == attributes
