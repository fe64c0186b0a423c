"""The router's pure parts (worker choice, what counts as a master event, its settings) and the Router
itself on a mock clock: per-trade order, control first, busy rejections, and the metrics seed 001 names."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from echo.domain import messages as m
from echo.domain.config import ConfigError, RouterConfig, config_from_dict
from echo.domain.config_tree import from_tree, to_tree
from echo.domain.errors import ErrorCode
from echo.domain.ids import uuid7
from echo.domain.routing import is_master_event, trade_of, worker_for
from echo.domain.types import Side
from echo.services.core.router import DISPATCH_DURATION, Router

_reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))

TRADE = uuid7(1764063000000, bytes(range(10)))
COMMAND = uuid7(1764063000001, bytes(range(10, 20)))
TRACE = "0af7651916cd43dd8448eb211c80319c"


def intent(trade_id: str = TRADE) -> m.AgentToCore:
    return m.FromAccount(
        "9001", m.TradeIntent(trade_id, TRACE, "EURUSD", Side.BUY, 0.1, 1.1, 1, 7001), received_ms=1
    )


def result(trade_id: str) -> m.AgentToCore:
    return m.FromAccount(
        "51001",
        m.ExecutionResult(COMMAND, trade_id, TRACE, True, ErrorCode.NO_ERROR, 5, 1.1, 0.1, 1),
        received_ms=1,
    )


@given(st.text("0123456789abcdefABCDEF-", min_size=1, max_size=60), st.sampled_from([2, 4, 8, 16, 32]))
def test_a_trade_always_lands_on_the_same_worker_whatever_its_case(trade_id: str, n: int) -> None:
    w = worker_for(trade_id, n)
    assert 0 <= w < n
    assert worker_for(trade_id.upper(), n) == worker_for(trade_id.lower(), n) == w


def test_ids_spread_over_the_workers() -> None:
    counts = [0] * 8
    for i in range(8000):
        counts[worker_for(f"018f2b6c-{i:04x}-7000-8000-{i:012x}", 8)] += 1
    assert min(counts) > 800, counts


def test_only_a_masters_events_may_be_turned_away() -> None:
    assert is_master_event(intent())
    assert trade_of(intent()) == TRADE
    assert not is_master_event(result(TRADE)) and trade_of(result(TRADE)) == TRADE
    quotes = m.FromAccount("51001", m.Quotes([]), received_ms=1)
    assert trade_of(quotes) is None and not is_master_event(quotes)
    ack = m.CommandAck("51001", COMMAND, m.AckStage.PIPE_DELIVERED, m.AckResult.OK)
    assert trade_of(ack) is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"worker_pool_size": 6}, "power of 2 in 2..32"),
        ({"worker_pool_size": 64}, "power of 2 in 2..32"),
        ({"worker_pool_size": 1}, "power of 2 in 2..32"),
        ({"queue_depth_max": 3}, "queue_depth_max must be 4..128"),
        ({"queue_depth_max": 129}, "queue_depth_max must be 4..128"),
        ({"worker_timeout_ms": 19}, "worker_timeout_ms must be 20..200"),
        ({"worker_timeout_ms": 201}, "worker_timeout_ms must be 20..200"),
        ({"workers": 4}, "unknown key router.workers"),
    ],
)
def test_router_settings_out_of_range_are_refused_by_name(raw: dict[str, int], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config_from_dict({"router": raw})


def test_router_settings_live_under_core_router_in_etcd() -> None:
    raw = {"router": {"worker_pool_size": 8, "queue_depth_max": 16, "worker_timeout_ms": 100}}
    tree = to_tree(raw)
    assert tree["/echo/core/router/worker_pool_size"] == "8"
    assert from_tree(tree) == raw
    assert config_from_dict(raw).router == RouterConfig(8, 16, 100)
    assert RouterConfig() == RouterConfig(4, 8, 50)  # seed 001's defaults


class Recorder:
    """Stands in for Core: records what each transaction applied and when it finished."""

    def __init__(self) -> None:
        self.applied: list[list[str]] = []
        self.finished: list[list[str]] = []
        self.rejected: list[tuple[str, int, int]] = []
        self.gate = trio.Event()

    @staticmethod
    def name(msg: m.AgentToCore) -> str:
        if isinstance(msg, m.FromAccount):
            inner = msg.message
            return f"{type(inner).__name__}:{getattr(inner, 'trade_id', msg.account_id)}"
        return type(msg).__name__

    def apply(self, items: list[tuple[str, m.AgentToCore]]) -> list[str]:
        names = [self.name(msg) for _, msg in items]
        self.applied.append(names)
        return names

    async def finish(self, tx: list[str]) -> None:
        await self.gate.wait()  # a journal that has not written yet
        self.finished.append(tx)

    def reject(self, agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> list[str]:
        self.rejected.append((self.name(msg), worker_id, depth))
        return [f"busy:{self.name(msg)}"]


def router(rec: Recorder, commands: dict[str, str], **settings: int) -> Router[list[str]]:
    return Router(
        RouterConfig(**settings),
        apply=rec.apply,
        finish=rec.finish,
        reject_busy=rec.reject,
        trade_of_command=commands.get,
    )


def _points(name: str) -> list[Any]:
    data = _reader.get_metrics_data()
    if data is None:
        return []
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for p in metric.data.data_points
    ]


def _total(name: str) -> float:
    """The metric summed over its labels (cumulative: other tests in this process count too); a
    histogram (kept outside the SDK): its count."""
    if name == DISPATCH_DURATION.name:
        return float(sum(sum(cell[:-1]) for _, cell in DISPATCH_DURATION.snapshot()))
    return float(sum(getattr(p, "value", 0) for p in _points(name)))


def _by_reason() -> dict[str, float]:
    """The router's rejections summed by reason (over every other label)."""
    totals: dict[str, float] = {}
    for p in _points("echo_core_router_rejections_total"):
        totals[p.attributes["reason"]] = totals.get(p.attributes["reason"], 0) + p.value
    return totals


async def test_the_router_keeps_a_trades_order_applies_control_first_and_turns_away_when_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    names = (
        "echo_core_router_rejections_total",
        "echo_core_router_dispatch_total",
        "echo_core_router_queue_depth",
        "echo_core_router_dispatch_duration_ms",
    )
    before = {n: _total(n) for n in names}
    # by reason (other tests in this process may have turned messages away for other reasons)
    reasons_before = _by_reason()
    rec = Recorder()
    ids = (uuid7(1764063000000 + i, i.to_bytes(10, "big")) for i in range(100))
    same = [t for t in ids if worker_for(t, 2) == 0]
    r = router(rec, {COMMAND: same[0]}, worker_pool_size=2, queue_depth_max=4)
    online = m.FromAccount("9001", m.Quotes([]), received_ms=1)
    async with trio.open_nursery() as nursery:
        for worker_id in range(2):
            nursery.start_soon(r._worker, worker_id)
        nursery.start_soon(r._control)
        # one group: a control message, 6 intents for worker 0, a slave result and the Agent's ack
        group = [("a", online), *(("a", intent(t)) for t in same[:6]), ("a", result(same[0]))]
        group.append(("a", m.CommandAck("51001", COMMAND, m.AckStage.PIPE_DELIVERED, m.AckResult.OK)))
        r.dispatch(group)
        # control was applied at once, before any trade message
        assert rec.applied[0] == ["Quotes:9001"]
        # worker 0 holds 4 master events; the 5th and 6th were turned away with the depth they met
        assert [x[0] for x in rec.rejected] == [f"TradeIntent:{t}" for t in same[4:6]]
        assert {(w, d) for _, w, d in rec.rejected} == {(0, 4)}
        assert r.stats.rejected_busy == 2
        await trio.testing.wait_all_tasks_blocked()
        # the worker took its queue as one transaction, in arrival order (results and acks never refused)
        expected = [f"TradeIntent:{t}" for t in same[:4]] + [f"ExecutionResult:{same[0]}", "CommandAck"]
        assert rec.applied[1] == expected
        # while its journal write is outstanding the worker's queue has room again
        r.dispatch([("a", intent(same[6]))])
        rec.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [f"TradeIntent:{same[6]}"] in rec.finished and len(rec.finished) == 5
        assert r.stats.dispatched == 7 and r.stats.per_worker == [7, 0]
        nursery.cancel_scope.cancel()

    delta = {n: _total(n) - before[n] for n in names}
    assert delta == {
        "echo_core_router_rejections_total": 2,
        "echo_core_router_dispatch_total": 7,
        "echo_core_router_queue_depth": 0,  # back to empty
        "echo_core_router_dispatch_duration_ms": 7,  # one enqueue -> dispatch sample per message
    }
    labels = [p.attributes for n in names for p in _points(n)]
    labels += [dict(key) for key, _ in DISPATCH_DURATION.snapshot()]
    assert all(a["component"] == "core.router" and "trade_id" not in a for a in labels)
    assert {r: n - reasons_before.get(r, 0) for r, n in _by_reason().items()} == {
        **{r: 0 for r in reasons_before},
        "queue_full": 2,
    }


def close_event(trade_id: str) -> m.AgentToCore:
    return m.FromAccount(
        "9001",
        m.TradeClose(str(uuid7(1764063000500, bytes(10))), trade_id, TRACE, 7001, "EURUSD", 0.1, 0.0, 1.1, 1),
        received_ms=1,
    )


async def test_opens_are_turned_away_past_max_in_flight_and_closes_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    in_flight = [0]
    r = Router(
        RouterConfig(worker_pool_size=2, queue_depth_max=4, max_in_flight=10),
        apply=rec.apply,
        finish=rec.finish,
        reject_busy=rec.reject,
        trade_of_command={}.get,
        in_flight=lambda: in_flight[0],
    )
    ids = [uuid7(1764063000000 + i, i.to_bytes(10, "big")) for i in range(40)]
    r.dispatch([("a", intent(ids[0]))])
    assert not rec.rejected
    in_flight[0] = 10
    r.dispatch([("a", intent(ids[1])), ("a", close_event(ids[2]))])
    assert [x[0] for x in rec.rejected] == [f"TradeIntent:{ids[1]}"]
    assert r.stats.rejected_in_flight == r.stats.rejected_busy == 1
    # a worker's full queue turns opens away but never closes
    same = [t for t in ids if worker_for(t, 2) == 0]
    in_flight[0] = 0
    r.dispatch([("a", close_event(t)) for t in same[:8]])
    assert len(rec.rejected) == 1, "a close was turned away"


async def test_opens_are_turned_away_while_a_message_has_waited_max_behind_ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing takes the queues (no worker runs): once the oldest message has waited max_behind_ms, Core is
    behind what arrives and a new open is turned away; a close still is not."""
    rec = Recorder()
    r = router(rec, {}, worker_pool_size=2, queue_depth_max=128, max_behind_ms=250)
    ids = [uuid7(1764063000000 + i, i.to_bytes(10, "big")) for i in range(4)]
    r.dispatch([("a", intent(ids[0]))])
    assert r.behind_s() == 0.0
    await trio.sleep(0.2)
    r.dispatch([("a", intent(ids[1]))])
    assert not rec.rejected and r.behind_s() >= 0.2
    await trio.sleep(0.05)
    r.dispatch([("a", intent(ids[2])), ("a", close_event(ids[3]))])
    assert [x[0] for x in rec.rejected] == [f"TradeIntent:{ids[2]}"]
