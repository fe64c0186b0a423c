"""The metrics, the Grafana dashboard and the alert rules against a real Prometheus.

Core and an Agent run as separate processes (split mode), each serving ``/metrics`` at ``metrics.listen``;
a Prometheus started here scrapes both every 200 ms and evaluates the shipped alert rules. Simulated
terminals on the Agent's socket make the facts the dashboard shows: copies, a no-trade window, a policy
limit, a broker that refuses, a handshake REJECTED, a stop-out, an account going offline. Then every
dashboard panel's query and every rule's expression is evaluated through Prometheus's HTTP API and must
return data, and the rules for what happened are pending or firing."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port, unavailable
from tests.e2e.world import start_run

OBSERVABILITY = Path(__file__).resolve().parents[2] / "echo" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
RULES = OBSERVABILITY / "alerts.yml"

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$account": ".*"}
"""What Grafana substitutes in a panel's query before Prometheus sees it."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(name, f"{name} is not on PATH (Debian: apt-get install prometheus)")
    assert path is not None
    return path


def panel_queries() -> Iterator[tuple[str, str]]:
    """(panel title, query with Grafana's variables substituted) for every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            yield panel["title"], expr


def rule_names() -> set[str]:
    return set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(encoding="utf-8"), re.MULTILINE))


def test_promtool_accepts_the_rules_and_the_dashboard_is_complete() -> None:
    promtool = _tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = rule_names()
    for alert in ("MissedTrade", "StopOut", "AccountOffline", "DeliveryGaveUp", "JournalFailing"):
        assert f"Echo{alert}" in names
    assert "EchoHandshakeRejected" in names
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for subject in ("copy latency", "omissions", "account status", "slippage", "spread", "pending", "router"):
        assert subject in titles, subject
    assert "commit" in titles and "trade_id" not in DASHBOARD.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------- prometheus


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # a query Prometheus refuses: its error says why
            body = json.loads(exc.read())
        return body

    async def query(self, expr: str) -> dict[str, Any]:
        body: dict[str, Any] = await trio.to_thread.run_sync(lambda: self._get("/api/v1/query", query=expr))
        return body

    async def value(self, expr: str) -> float:
        """The query's first value (0 when it returns nothing)."""
        result = (await self.query(expr))["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    async def until(self, expr: str, at_least: float = 1, within_s: float = 20) -> None:
        """Poll until ``expr`` reaches ``at_least`` (Prometheus scrapes every 200 ms)."""
        deadline = trio.current_time() + within_s
        while (got := await self.value(expr)) < at_least:
            assert trio.current_time() < deadline, f"{expr} = {got}, waited for {at_least}"
            await trio.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    async def get(self, path: str) -> Any:
        return await trio.to_thread.run_sync(lambda: self._get(path))


@asynccontextmanager
async def prometheus(tmp_path: Path, targets: list[str]) -> AsyncIterator[Prometheus]:
    port = free_port()
    config = {  # JSON is YAML
        "global": {"scrape_interval": "200ms", "scrape_timeout": "200ms", "evaluation_interval": "500ms"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "echo", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
    proc = await trio.lowlevel.open_process(
        [
            _tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while not await trio.to_thread.run_sync(prom.ready):
            assert proc.returncode is None, "prometheus ended at start"
            assert time.monotonic() < deadline, "prometheus did not become ready"
            await trio.sleep(0.2)
        yield prom
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()


# -------------------------------------------------------------------------------------------- the run


def _configs(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    sock = tmp_path / "agent.sock"
    core_metrics, agent_metrics, split = free_port(), free_port(), free_port()
    core = tmp_path / "core.toml"
    core.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "echo.db"}"\n'
        f'[split]\nlisten = "127.0.0.1:{split}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{core_metrics}"\n'
        "[protocol]\nblocked_versions = [1]\n"
        '[policy."51002"]\nwindows = [{ symbol = "*", start_utc = "00:00", end_utc = "23:59" }]\n'
        '[policy."51005"]\nfixed_lot = 0.001\n'
        '[log]\nformat = "json"\n',
        encoding="utf-8",
    )
    agent = tmp_path / "agent.toml"
    agent.write_text(
        f'[agent]\nagent_id = "agent-1"\nsocket_path = "{sock}"\n'
        f'ledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'[split]\ncore = "127.0.0.1:{split}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{agent_metrics}"\n'
        '[log]\nformat = "json"\n',
        encoding="utf-8",
    )
    return core, agent, sock, [f"127.0.0.1:{core_metrics}", f"127.0.0.1:{agent_metrics}"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_prometheus_scrapes_core_and_agent_and_every_panel_and_rule_has_data(tmp_path: Path) -> None:
    core_conf, agent_conf, sock, targets = _configs(tmp_path)
    rng = random.Random(17)
    market = SimMarket(random.Random(rng.random()))

    async def connect() -> trio.abc.Stream:
        return await connect_unix(sock)

    slaves = {
        acc: SimSlaveEA(acc, slave_broker(i, market, random.Random(rng.random())), connect, _now_ms)
        for i, acc in enumerate(("51001", "51002", "51003", "51004", "51005"), 1)
    }
    slaves["51003"].broker.max_positions = 0  # its broker refuses every order
    slaves["51004"].protocol_version = 1  # a blocked version: REJECTED
    master = SimMasterEA("9001", master_broker(market, random.Random(rng.random())), connect, _now_ms, rng)

    with trio.fail_after(90):
        core = await start_run(core_conf, "core")
        agent = await start_run(agent_conf, "agent")
        try:
            async with prometheus(tmp_path, targets) as prom, trio.open_nursery() as nursery:
                nursery.start_soon(market.run)
                scopes = {}
                for acc, slave in slaves.items():
                    scopes[acc] = trio.CancelScope()
                    await nursery.start(_run_in, scopes[acc], slave)
                await nursery.start(master.run)
                await prom.until("count(echo_core_account_online == 1)", 6)
                await prom.until("sum(echo_agent_terminals_connected)", 6)

                trades = [await master.open("XAUUSD", Side.BUY, 0.5) for _ in range(2)]
                await master.wait_all_acked()
                await prom.until('sum(echo_core_copies_total{account="51001"})', 2)
                await prom.until('sum(echo_core_orders_rejected_total{account="51003"})', 2)
                slaves["51001"].broker.stop_out(_now_ms())
                await prom.until("sum(echo_core_stop_outs_total)", 1)
                for trade_id in trades:
                    await master.close(trade_id)
                await master.wait_all_acked()
                scopes["51002"].cancel()  # its terminal goes away
                await prom.until('count(echo_core_account_online{account="51002"} == 0)', 1)
                await prom.until("sum(echo_core_delivery_retries_total)", 4)

                await _every_panel_has_data(prom)
                await _every_rule_has_data_and_what_happened_alerts(prom)
                nursery.cancel_scope.cancel()
        finally:
            for proc in (agent, core):
                proc.send_signal(signal.SIGTERM)
                with trio.CancelScope(shield=True):
                    await proc.wait()
    assert core.returncode == 0 and agent.returncode == 0


async def _run_in(scope: trio.CancelScope, slave: SimSlaveEA, *, task_status: trio.TaskStatus[None]) -> None:
    with scope:
        await slave.run(task_status=task_status)


async def _every_panel_has_data(prom: Prometheus, within_s: float = 20) -> None:
    """Polled: a rate over the last minute has data once a few more scrapes gave it two points."""
    deadline = trio.current_time() + within_s
    while True:
        empty = []
        for title, expr in panel_queries():
            reply = await prom.query(expr)
            assert reply["status"] == "success", (title, expr, reply)
            if not reply["data"]["result"]:
                empty.append(f"{title}: {expr}")
        if not empty or trio.current_time() > deadline:
            break
        await trio.sleep(0.2)
    assert not empty, "panels without data:\n" + "\n".join(empty)


async def _every_rule_has_data_and_what_happened_alerts(prom: Prometheus) -> None:
    """The rules as Prometheus loaded them: each evaluates, over series that exist."""
    groups = (await prom.get("/api/v1/rules"))["data"]["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in loaded} == rule_names()
    assert all(r["health"] == "ok" for r in loaded), loaded
    missing = []
    for rule in loaded:
        reply = await prom.query(rule["query"])
        assert reply["status"] == "success", (rule["name"], reply)
        for metric in set(re.findall(r"\becho_[a-z_]+", rule["query"])):
            if await prom.value(f"count({metric})") == 0:
                missing.append(f"{rule['name']}: {metric}")
    assert not missing, "rules over series that do not exist:\n" + "\n".join(missing)
    deadline = trio.current_time() + 30
    expected = {"EchoMissedTrade", "EchoStopOut", "EchoHandshakeRejected", "EchoAccountOffline"}
    while True:
        alerts = (await prom.get("/api/v1/alerts"))["data"]["alerts"]
        active = {a["labels"]["alertname"]: a for a in alerts}
        if expected <= active.keys() or trio.current_time() > deadline:
            break
        await trio.sleep(0.3)
    assert expected <= active.keys(), sorted(active)
    assert active["EchoStopOut"]["labels"]["account"] == "51001"
    assert active["EchoHandshakeRejected"]["labels"]["account"] == "51004"
    assert active["EchoAccountOffline"]["labels"]["account"] == "51002"
    assert "EchoDeliveryGaveUp" not in active and "EchoJournalFailing" not in active
    by_account = {a["labels"]["account"] for a in alerts if a["labels"]["alertname"] == "EchoMissedTrade"}
    assert by_account == {"51003", "51004"}, by_account  # the broker that refuses, the REJECTED account
