"""One trace per trade, from the master to the slave, exported by OTLP to a real receiver (``tests.otlp``):
Core and the Agent as separate processes join one trace through the gRPC envelopes; all-in-one too; and
with ``[telemetry]`` off nothing is sent at all."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from echo.adapters.store.sqlite import SqliteStore
from tests.backends import free_port
from tests.e2e.test_processes import Split
from tests.e2e.world import CLI, read_until, sim_ea
from tests.otlp import ReceivedSpan, Receiver, otlp_receiver

pytestmark = pytest.mark.e2e

_HOPS = {
    "agent.intent.receive",
    "core.handle",
    "core.router.queue",
    "core.engine.apply",
    "core.journal.commit",
    "agent.command.write",
}


def _telemetry(receiver: Receiver) -> str:
    return f'[telemetry]\nendpoint = "{receiver.url}"\n'


async def _trace_ids(db: Path) -> list[str]:
    store = SqliteStore.open(db)
    try:
        trades = await store.trades()
        assert trades and all(t.status == "closed" for t in trades)
        return [t.trace_id for t in trades]
    finally:
        await store.aclose()


def _check_trace(spans: list[ReceivedSpan], services: set[str]) -> None:
    """Every hop is there, every parent is a span of the same trace, and the chain from the master's
    intent to the slave's result runs parent to child across the processes."""
    names = {s.name for s in spans}
    assert names >= _HOPS, sorted(_HOPS - names)
    assert {s.service for s in spans} == services
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        assert not s.parent_span_id or s.parent_span_id in by_id, f"{s.name}: parent not in the trace"
        assert s.start_ns <= s.end_ns, s.name

    def parent(s: ReceivedSpan) -> ReceivedSpan:
        return by_id[s.parent_span_id]

    handled: dict[object, list[ReceivedSpan]] = {}
    for s in spans:
        if s.name == "core.handle":
            handled.setdefault(s.attributes["message"], []).append(s)
    assert set(handled) <= {"TradeIntent", "TradeClose", "TradeModify"}, "Core: master events only"
    assert len(handled["TradeIntent"]) == 1 and handled["TradeClose"]
    for core in (s for group in handled.values() for s in group):
        received = parent(core)
        assert received.name == "agent.intent.receive" and not received.parent_span_id
        assert received.start_ns <= core.start_ns
        for name in ("core.router.queue", "core.engine.apply", "core.journal.commit"):
            assert [s for s in spans if s.name == name and parent(s) is core], name
        assert "core.sent" in core.events, "Core's sends are events of its span"
    writes = [s for s in spans if s.name == "agent.command.write"]
    assert all(parent(s).name in ("core.handle", "core.resend") for s in writes)
    opened = [s for s in writes if parent(s) is handled["TradeIntent"][0]]
    assert len(opened) == 1, "the Agent's write of the order is under Core's span of the intent"
    assert opened[0].events[-2:] == ("slave.delivery_ack", "slave.result"), opened[0].events
    closed = [s for s in writes if parent(s) in handled["TradeClose"]]
    assert closed and closed[-1].events[-1] == "slave.result"


async def test_split_core_and_agent_processes_send_one_trace_per_trade(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        split = Split(tmp_path, _telemetry(receiver))
        with trio.fail_after(90):
            try:
                await split.start()
                assert b"3 trades done" in await split.master("--trades", "3", "--pace", "0.05")
                core = split.procs[0]
                await read_until(core, b"core_trade_complete", 3)
            finally:
                codes = await split.stop()  # the exporters flush at shutdown
        assert codes[:2] == [0, 0]
        traces = receiver.traces()
    trace_ids = await _trace_ids(split.db)
    assert len(trace_ids) == 3
    assert set(traces) == set(trace_ids), "one trace per trade, under the master's trace id"
    for trace_id in trace_ids:
        _check_trace(traces[trace_id], {"echo-core", "echo-agent"})


async def test_all_in_one_sends_one_trace_per_trade(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
        config = tmp_path / "echo.toml"
        config.write_text(
            f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
            f'[log]\nformat = "json"\n{_telemetry(receiver)}'
        )
        await _copy_two_trades(config, sock)
        traces = receiver.traces()
    trace_ids = await _trace_ids(db)
    assert set(traces) == set(trace_ids) and len(trace_ids) == 2
    for trace_id in trace_ids:
        _check_trace(traces[trace_id], {"echo"})


async def test_telemetry_off_sends_nothing_even_with_otel_environment(tmp_path: Path) -> None:
    """Off is the default: no SDK reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` behind the configuration's back."""
    with otlp_receiver() as receiver:
        sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
        config = tmp_path / "echo.toml"
        config.write_text(f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n')
        base = receiver.url.removesuffix("/v1/traces")
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": base, "OTEL_TRACES_EXPORTER": "otlp"}
        await _copy_two_trades(config, sock, env)
        assert receiver.posts == 0 and not receiver.spans
    assert len(await _trace_ids(db)) == 2


async def _copy_two_trades(config: Path, sock: Path, env: dict[str, str] | None = None) -> None:
    environ = {**os.environ, **(env or {})}
    with trio.fail_after(90):
        copier = await trio.lowlevel.open_process(
            [*CLI, "run", "--role", "all", "--config", str(config)], stderr=subprocess.PIPE, env=environ
        )
        slave = None
        try:
            await read_until(copier, b"copying")
            slave = await trio.lowlevel.open_process(
                sim_ea(sock, "slave", "51001", "--profile", "1"), stderr=subprocess.PIPE
            )
            await read_until(slave, b"connected")
            master = await trio.run_process(
                sim_ea(sock, "master", "9001", "--trades", "2", "--pace", "0.05"), capture_stderr=True
            )
            assert b"2 trades done" in master.stderr
            await read_until(copier, b"core_trade_complete", 2)
        finally:
            for proc in (slave, copier):
                if proc is not None:
                    proc.send_signal(15)
                    await proc.wait()
    assert copier.returncode == 0


async def test_a_receiver_that_is_down_delays_no_copy(tmp_path: Path) -> None:
    sock, db = tmp_path / "echo.sock", tmp_path / "echo.db"
    config = tmp_path / "echo.toml"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n[store]\nurl = "sqlite:///{db}"\n'
        f'[telemetry]\nendpoint = "http://127.0.0.1:{free_port()}/v1/traces"\n'
    )
    await _copy_two_trades(config, sock)
    assert len(await _trace_ids(db)) == 2
