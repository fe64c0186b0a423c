"""Alerts to people, end to end against a real HTTP server on a free port: a stop-out and an account
offline reach the webhook once each; a webhook that refuses connections or never answers delays no copy;
a 500 is retried and the alert delivered once; ``alerts test`` says ok or the error for each webhook.
These run on the real clock (an HTTP exchange happens in another thread, which a MockClock would not wait
for)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from echo.adapters.alerts.webhook import WebhookSink
from echo.adapters.clock import TrioClock
from echo.app.live_config import apply_config
from echo.domain import messages as m
from echo.domain.config import AlertsConfig, WebhookConfig
from echo.domain.registration import ProtocolPolicy
from echo.domain.types import Side
from echo.ports.alerts import Alert
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port
from tests.e2e.world import CLI, FlakyStore, e2e_config, fills, read_until, start_world

WAIT_S = 60.0
"""The most a test waits for the webhook (a shared machine can be slow); never a timing assert."""


class Hook:
    """A real HTTP server in a thread, recording each POST. It answers 204, or 500 to its first ``fail``
    requests, or (``hang``) holds every request unanswered until it is closed."""

    def __init__(self, *, fail: int = 0, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.answered = 0
        self._release = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._arrived = trio.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                assert hook._token is not None
                trio.from_thread.run_sync(hook._arrived.set, trio_token=hook._token)
                if hang:
                    hook._release.wait()
                    return
                status = 500 if len(hook.bodies) <= fail else 204
                hook.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                hook.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Hook:
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    async def wait_for(self, n: int) -> list[dict[str, Any]]:
        """Until the server has received ``n`` requests."""
        with trio.fail_after(WAIT_S):
            while len(self.bodies) < n:
                await self._arrived.wait()
                self._arrived = trio.Event()
        return self.bodies


async def until(predicate: Any) -> None:
    with trio.fail_after(WAIT_S):
        while not predicate():  # noqa: ASYNC110 (the sink's counters: nothing to wait on but time)
            await trio.sleep(0.01)


async def test_a_stop_out_and_an_account_offline_reach_the_webhook_once_each() -> None:
    with Hook() as hook:
        alerts = AlertsConfig(
            webhooks=(WebhookConfig(hook.url, headers={"Authorization": "Bearer s3cret"}),),
            offline_after_s=0.5,
        )
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, config=e2e_config(alerts=alerts))
            core = w.core
            stopped, scope = w.slave("51001", 1), trio.CancelScope()
            await w.start(stopped, scope)
            other = await w.add_slave("51002", 2)
            master = await w.add_master("9001")
            await w.online("9001", "51001", "51002")
            trade_id = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 2)
            assert hook.bodies == []

            stopped.broker.stop_out(w.clock.now_ms())
            (stop,) = await hook.wait_for(1)
            assert {k: stop[k] for k in ("source", "kind", "severity", "account_id", "trade_id")} == {
                "source": "echo",
                "kind": "stop_out",
                "severity": "critical",
                "account_id": "51001",
                "trade_id": trade_id,
            }
            assert stop["details"]["reason"] == "STOP_OUT" and "not reopened" in stop["text"]
            assert stop["at"].endswith("Z") and isinstance(stop["at_ms"], int)
            assert hook.headers[0]["Authorization"] == "Bearer s3cret"

            scope.cancel()  # the stopped-out terminal closes: offline, alerted after 0.5 s
            await hook.wait_for(2)
            back = SimSlaveEA("51001", stopped.broker, w.listener.connect, w.clock.now_ms)
            await nursery.start(back.run)
            await hook.wait_for(3)
            # a repeated stop-out alert would have been queued before the offline one: the order says once
            assert [(b["kind"], b["account_id"], b["trade_id"]) for b in hook.bodies] == [
                ("stop_out", "51001", trade_id),
                ("account_offline", "51001", None),
                ("account_online", "51001", None),
            ]
            assert hook.bodies[1]["severity"] == "error" and "offline" in hook.bodies[1]["text"]
            await master.close(trade_id)
            await master.wait_all_acked()
            await w.settled()
            assert fills(back) == Counter() and back.broker.open_orders() == []  # never reopened
            assert other.broker.open_orders() == []
            assert len(hook.bodies) == 3
            nursery.cancel_scope.cancel()


async def test_a_webhook_that_is_down_delays_no_copy() -> None:
    """One webhook refuses connections, the other takes each POST and never answers; copies go on."""
    with Hook(hang=True) as hangs:
        refused = WebhookConfig(f"http://127.0.0.1:{free_port()}/hook", name="refused")
        alerts = AlertsConfig(
            webhooks=(refused, WebhookConfig(hangs.url, name="hangs")),
            timeout_s=600,
            retries=2,
            backoff_s=0.05,
        )
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, config=e2e_config(alerts=alerts))
            core = w.core
            slave = await w.add_slave("51001", 1)
            stopped = await w.add_slave("51002", 2)
            master = await w.add_master("9001")
            await w.online("9001", "51001", "51002")
            first = await master.open("XAUUSD", Side.BUY, 0.2)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.stats.get("copied") == 2 and core.in_flight == 0)
            stopped.broker.stop_out(w.clock.now_ms())  # alerted ...
            (alert,) = await hangs.wait_for(1)  # ... and the webhook holds the POST
            assert (alert["kind"], alert["account_id"], alert["trade_id"]) == ("stop_out", "51002", first)
            trades = [first] + [await master.open("XAUUSD", Side.BUY, 0.2) for _ in range(4)]
            await master.wait_all_acked()
            await core.wait_for(lambda: core.stats.get("copied") == 10 and core.in_flight == 0)
            for t in trades:
                await master.close(t)
            await master.wait_all_acked()
            await w.settled()
            assert fills(slave) == Counter({t: 1 for t in trades})
            assert fills(stopped) == Counter({t: 1 for t in trades})
            assert slave.broker.open_orders() == [] and stopped.broker.open_orders() == []
            sink = core.alerts.sink if core.alerts else None
            assert isinstance(sink, WebhookSink)
            await until(lambda: sink.stats["failed"] == 1)  # the refusing webhook gave the alert up
            assert hangs.answered == 0 and len(hangs.bodies) == 1  # still holding the POST
            nursery.cancel_scope.cancel()


async def test_a_500_is_retried_and_the_alert_delivered_once() -> None:
    with Hook(fail=1) as hook:
        clock = TrioClock()
        sink = WebhookSink(
            AlertsConfig(webhooks=(WebhookConfig(hook.url, "slack"),), backoff_s=0.01), clock.now_ms
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            sink.emit(Alert("stop_out", "critical", "stopped out", clock.now_ms(), "51001", "t-1"))
            await hook.wait_for(2)
            await until(lambda: sink.stats["sent"] == 1)
            sink.emit(Alert("missed_trade", "error", "not copied", clock.now_ms(), "51001", "t-2"))
            await hook.wait_for(3)
            await until(lambda: sink.stats["sent"] == 2)
            assert hook.statuses == [500, 204, 204]
            texts = [b["text"] for b in hook.bodies]
            assert texts[0] == texts[1] and "stop_out account 51001 (trade t-1)" in texts[0]
            assert "missed_trade" in texts[2]
            assert sink.stats["retries"] == 1 and sink.stats["failed"] == 0
            nursery.cancel_scope.cancel()


async def test_alerts_added_by_a_live_reload_are_sent() -> None:
    with Hook() as hook:
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery)
            raw = {"agent": {"agent_id": "agent-e2e"}, "store": {"url": "memory://"}}
            applied = await apply_config(
                w.copier, {**raw, "alerts": {"webhook": [{"url": hook.url}]}}, "test"
            )
            assert applied.ok and applied.needs_restart == ()
            assert w.core.alerts is not None
            w.core.alerts.store_failing("held")
            (body,) = await hook.wait_for(1)
            assert body["kind"] == "store_failing" and body["severity"] == "critical"
            nursery.cancel_scope.cancel()


async def _cli(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process([*CLI, *args], capture_stdout=True, capture_stderr=True, check=False)


async def test_alerts_test_command(tmp_path: Path) -> None:
    with Hook() as ok, Hook(hang=True) as hangs:
        down = f"http://127.0.0.1:{free_port()}/hook"
        three = tmp_path / "three.toml"
        three.write_text(
            f'[alerts]\n[[alerts.webhook]]\nurl = "{ok.url}"\nname = "team"\nformat = "discord"\n'
            f'[[alerts.webhook]]\nurl = "{down}"\nname = "down"\n'
            f'[[alerts.webhook]]\nurl = "{hangs.url}"\nname = "hangs"\n'
        )
        res = await _cli("alerts", "test", "--config", str(three), "--timeout", "1")
        lines = res.stdout.decode().splitlines()
        assert res.returncode == 1, res.stderr
        assert lines[0] == "team: ok" and lines[1].startswith("down: ") and "ok" not in lines[1][5:]
        assert lines[2] == "hangs: no answer within 1 s"
        assert ok.bodies[0]["content"].startswith("[INFO] test")

        good = tmp_path / "good.toml"
        good.write_text(f'[alerts]\n[[alerts.webhook]]\nurl = "{ok.url}"\n')
        res = await _cli("alerts", "test", "--config", str(good))
        assert res.returncode == 0 and res.stdout.decode().strip() == "127.0.0.1: ok"
        assert ok.bodies[1]["kind"] == "test"

        bad = tmp_path / "bad.toml"
        bad.write_text('[alerts]\n[[alerts.webhook]]\nurl = "gopher://x"\n')
        res = await _cli("alerts", "test", "--config", str(bad))
        err = res.stderr.decode().strip()
        assert res.returncode == 2 and "\n" not in err and "http:// or https://" in err, err


async def test_a_copy_the_slaves_broker_refuses_is_a_missed_trade_alert() -> None:
    with Hook() as hook:
        alerts = AlertsConfig(webhooks=(WebhookConfig(hook.url),))
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, config=e2e_config(alerts=alerts))
            core = w.core
            full = w.slave("51001", 1)
            full.broker.max_positions = 0  # every order refused
            await w.start(full)
            fine = await w.add_slave("51002", 2)
            master = await w.add_master("9001")
            await w.online("9001", "51001", "51002")
            trade_id = await master.open("XAUUSD", Side.BUY, 0.2)
            await master.wait_all_acked()
            await core.wait_for(
                lambda: (
                    core.in_flight == 0
                    and core.stats.get("copied") == 1
                    and core.stats.get("execute_failed") == 1
                )
            )
            (body,) = await hook.wait_for(1)
            assert (body["kind"], body["severity"], body["account_id"], body["trade_id"]) == (
                "missed_trade",
                "error",
                "51001",
                trade_id,
            )
            assert "refused" in body["text"] and body["details"]["error_code"].startswith("ERR_")
            await master.close(trade_id)
            await master.wait_all_acked()
            await w.settled()
            assert fills(fine) == Counter({trade_id: 1}) and fills(full) == Counter()
            assert len(hook.bodies) == 1
            nursery.cancel_scope.cancel()


async def test_an_agent_tells_when_core_is_unreachable_and_back(tmp_path: Path) -> None:
    """``run --role agent`` with no Core to reach: only the Agent can tell; then Core starts."""
    with Hook() as hook:
        where = f"127.0.0.1:{free_port()}"
        config = tmp_path / "echo.toml"
        config.write_text(
            f'[agent]\nsocket_path = "{tmp_path / "echo.sock"}"\nledger_url = "memory://"\n'
            f'[store]\nurl = "memory://"\n[split]\ncore = "{where}"\nlisten = "{where}"\n'
            f'[alerts]\noffline_after_s = 0.3\n[[alerts.webhook]]\nurl = "{hook.url}"\n'
        )
        procs: list[trio.Process] = []
        try:
            for role, ready in (("agent", b"serving terminals"), ("core", b"Agents connect to")):
                proc = await trio.lowlevel.open_process(
                    [*CLI, "run", "--role", role, "--config", str(config)], stderr=subprocess.PIPE
                )
                procs.append(proc)
                await read_until(proc, ready)
                if role == "agent":
                    (down,) = await hook.wait_for(1)
            (_, back) = await hook.wait_for(2)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        assert (down["kind"], down["severity"], down["details"]) == (
            "core_unreachable",
            "critical",
            {"agent_id": "agent-1"},
        )
        assert back["kind"] == "core_reachable" and len(hook.bodies) == 2


async def test_a_journal_the_store_refuses_is_one_alert() -> None:
    with Hook() as hook:
        store = FlakyStore()
        alerts = AlertsConfig(webhooks=(WebhookConfig(hook.url),))
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, config=e2e_config(alerts=alerts), store=store)
            core = w.core
            slave = await w.add_slave("51001", 1)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            store.fail_next = (
                4  # the fan-out cannot be recorded even after Core's retries: the master retries
            )
            trade_id = await master.open("XAUUSD", Side.BUY, 0.2)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0 and core.stats.get("copied") == 1)
            (body,) = await hook.wait_for(1)
            assert (body["kind"], body["severity"], body["account_id"]) == ("store_failing", "critical", None)
            assert "rolled back" in body["text"]
            await master.close(trade_id)
            await master.wait_all_acked()
            await w.settled()
            assert fills(slave) == Counter({trade_id: 1}) and len(hook.bodies) == 1
            nursery.cancel_scope.cancel()


async def test_a_rejected_handshake_is_alerted_once_per_window() -> None:
    with Hook() as hook:
        alerts = AlertsConfig(webhooks=(WebhookConfig(hook.url),))
        config = e2e_config(alerts=alerts, protocol=ProtocolPolicy(blocked_versions=(m.PROTOCOL_VERSION,)))
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, config=config)
            scope = trio.CancelScope()
            await w.start(w.slave("51001", 1), scope)
            (body,) = await hook.wait_for(1)
            assert (body["kind"], body["account_id"], body["details"]["role"]) == (
                "handshake_rejected",
                "51001",
                "slave",
            )
            assert "REJECTED" in body["text"]
            scope.cancel()
            await w.core.wait_for(lambda: not w.core.accounts["51001"].online)
            await w.start(w.slave("51001", 1))  # the same verdict again, within the window: not sent again
            assert w.core.alerts is not None
            w.core.alerts.store_failing("a marker: queued after anything the second handshake raised")
            await hook.wait_for(2)
            assert [b["kind"] for b in hook.bodies] == ["handshake_rejected", "store_failing"]
            nursery.cancel_scope.cancel()
