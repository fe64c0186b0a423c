"""Alerts to people, the pure parts: deduplication window, backoff schedule, payload shapes, the alerts a
committed batch holds, the offline timer (MockClock), the bounded queue, and the [alerts] section."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from echo.adapters.alerts.webhook import Deduper, WebhookSink, as_json, backoff_schedule, payload, sentence
from echo.adapters.clock import TrioClock
from echo.domain.config import (
    ALERT_KINDS,
    AlertsConfig,
    ConfigError,
    WebhookConfig,
    alerts_from_dict,
    config_from_dict,
)
from echo.domain.config_tree import dotted_to_key, from_tree, to_tree
from echo.ports.alerts import Alert
from echo.ports.store import Batch, DecisionRow, EvaluationRow, EventRow
from echo.services.agent.alerts import POLL_S, watch_core_link
from echo.services.core.alerts import AlertFeed, alerts_of

STOP = Alert("stop_out", "critical", "the broker stopped out ticket 7", 1_767_225_600_000, "51001", "t-1")


class Recorded:
    """An in-memory AlertSink: what was emitted, in order."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.config: AlertsConfig | None = None

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def configure(self, config: AlertsConfig) -> None:
        self.config = config

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()


# ------------------------------------------------------------------------------------------- pure parts


def test_backoff_doubles_up_to_the_cap() -> None:
    assert backoff_schedule(6, 1.0, 10.0) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_schedule(0, 1.0, 10.0) == []


def test_dedupe_lets_the_same_key_through_once_per_window() -> None:
    d = Deduper(1000)
    key = ("stop_out", "51001", "t-1")
    assert d.admit(key, 0)
    assert not d.admit(key, 999)
    assert d.admit(("stop_out", "51002", "t-1"), 999)  # another account
    assert d.admit(("stop_out", "51001", "t-2"), 999)  # another trade
    assert d.admit(key, 1000)
    assert not d.admit(key, 1500)


def test_payloads_each_relay_accepts() -> None:
    slack = payload(STOP, WebhookConfig("https://hooks.slack.com/x", "slack"))
    assert list(slack) == ["text"]
    assert "stop_out" in slack["text"] and "51001" in slack["text"] and "t-1" in slack["text"]
    assert slack["text"].startswith("[CRITICAL]") and "2026-01-01T00:00:00.000Z" in slack["text"]
    assert payload(STOP, WebhookConfig("https://discord.com/api/webhooks/1", "discord")) == {
        "content": sentence(STOP)
    }
    tg = payload(STOP, WebhookConfig("https://api.telegram.org/botX/sendMessage", "telegram", chat_id="-100"))
    assert tg == {"chat_id": "-100", "text": sentence(STOP)}
    body = payload(STOP, WebhookConfig("http://127.0.0.1:9/a"))
    assert body == as_json(STOP)
    assert {k: body[k] for k in ("kind", "severity", "account_id", "trade_id", "at")} == {
        "kind": "stop_out",
        "severity": "critical",
        "account_id": "51001",
        "trade_id": "t-1",
        "at": "2026-01-01T00:00:00.000Z",
    }
    long = Alert("missed_trade", "error", "x" * 5000, 0)
    assert len(payload(long, WebhookConfig("https://d/1", "discord"))["content"]) == 2000


def test_a_committed_batch_says_which_alerts() -> None:
    b = Batch()
    b.decisions.append(DecisionRow("d1", "t-1", "51001", "omit", "slave_offline", None, "{}", 5))
    b.decisions.append(DecisionRow("d2", "t-1", "51002", "omit", "no_trade_window", None, "{}", 5))  # policy
    b.decisions.append(DecisionRow("d3", "t-1", "51003", "copy", "copied", 0.1, "{}", 5))
    stop = {"ticket": 7, "reason": "STOP_OUT", "lots": 0.1}
    b.events.append(EventRow("e1", 6, "slave_closed_by_broker", "t-1", "51004", None, None, json.dumps(stop)))
    tp = {"ticket": 8, "reason": "TP"}
    b.events.append(EventRow("e2", 6, "slave_closed_by_broker", "t-1", "51005", None, None, json.dumps(tp)))
    gave = {"command_kind": "close", "reason": "no ack"}
    b.events.append(EventRow("e3", 7, "command_gave_up", "t-1", "51006", "c1", None, json.dumps(gave)))
    b.events.append(EventRow("e4", 8, "account_offline", None, "51007"))
    b.evaluations.append(
        EvaluationRow("v1", "51008", "slave", "REJECTED", 3, "1.0", '[{"code":"X"}]', "[]", 9)
    )
    b.evaluations.append(EvaluationRow("v2", "51009", "slave", "ACCEPTED", 3, "1.0", "[]", "[]", 9))
    alerts, presence = alerts_of(b)
    assert [(a.kind, a.severity, a.account_id) for a in alerts] == [
        ("missed_trade", "error", "51001"),
        ("stop_out", "critical", "51004"),
        ("delivery_gave_up", "critical", "51006"),
        ("handshake_rejected", "error", "51008"),
    ]
    assert presence == [("51007", False, 8)]
    assert "slave offline" in alerts[0].text and "(X)" in alerts[3].text


# ---------------------------------------------------------------------------------- feed and queue


def _offline(account: str, at_ms: int, online: bool = False) -> Batch:
    b = Batch()
    b.events.append(
        EventRow(f"e-{at_ms}", at_ms, "account_online" if online else "account_offline", None, account)
    )
    return b


async def test_an_account_offline_longer_than_the_limit_is_alerted_once_and_its_return_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock, sink = TrioClock(), Recorded()
    feed = AlertFeed(sink, clock, AlertsConfig(offline_after_s=30))
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        feed.committed(_offline("51001", clock.now_ms()))
        feed.committed(_offline("51002", clock.now_ms()))
        await trio.sleep(10)
        feed.committed(_offline("51002", clock.now_ms(), online=True))  # back within the limit: nothing
        await trio.sleep(19.9)
        assert sink.alerts == []
        await trio.sleep(0.2)
        assert [(a.kind, a.account_id) for a in sink.alerts] == [("account_offline", "51001")]
        await trio.sleep(100)
        assert len(sink.alerts) == 1
        feed.committed(_offline("51001", clock.now_ms(), online=True))
        assert [(a.kind, a.account_id) for a in sink.alerts][1:] == [("account_online", "51001")]
        nursery.cancel_scope.cancel()


async def test_the_store_failing_is_one_alert_until_a_batch_is_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Recorded()
    feed = AlertFeed(sink, TrioClock(), AlertsConfig())
    feed.store_failing("held")
    feed.store_failing("held")
    feed.committed(Batch())  # nothing written (a quote): the store is not known to be back
    feed.store_failing("held")
    feed.committed(_offline("51001", 0))
    feed.store_failing("refused")
    assert [a.kind for a in sink.alerts] == ["store_failing", "store_failing"]


async def test_the_sink_dedupes_filters_and_drops_the_oldest_when_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hook = WebhookConfig("http://127.0.0.1:9/a")
    clock = TrioClock()
    sink = WebhookSink(
        AlertsConfig(webhooks=(hook,), queue=2, dedupe_window_s=60, kinds=("stop_out",)), clock.now_ms
    )
    (h,) = sink._hooks
    sink.emit(STOP)
    sink.emit(STOP)  # the same kind, account and trade: once
    sink.emit(Alert("missed_trade", "error", "not sent: not in kinds", 0, "51001", "t-1"))
    assert [a.trade_id for a in h.queue] == ["t-1"] and sink.stats["deduped"] == 1
    await trio.sleep(61)
    with capture_logs() as logs:
        for t in ("t-1", "t-2", "t-3"):
            sink.emit(Alert("stop_out", "critical", "x", clock.now_ms(), "51001", t))
    # past the window t-1 is new again; the queue of 2 then drops its oldest twice (the first t-1, then
    # the second), each with a log line
    assert [a.trade_id for a in h.queue] == ["t-2", "t-3"]
    assert sink.stats["dropped"] == 2
    assert [(e["event"], e["trade_id"]) for e in logs] == [("alert_dropped", "t-1"), ("alert_dropped", "t-1")]


# --------------------------------------------------------------------------------------------- config


def test_alerts_section_parses() -> None:
    c = config_from_dict(
        {
            "alerts": {
                "offline_after_s": 120,
                "kinds": ["stop_out", "missed_trade"],
                "webhook": [
                    {"url": "https://hooks.slack.com/services/x", "format": "slack"},
                    {"url": "http://127.0.0.1:8080/h", "headers": {"Authorization": "Bearer t"}},
                    {
                        "url": "https://api.telegram.org/bot1/sendMessage",
                        "format": "telegram",
                        "chat_id": "42",
                    },
                ],
            }
        }
    )
    assert c.alerts.offline_after_s == 120 and c.alerts.kinds == ("stop_out", "missed_trade")
    assert [w.format for w in c.alerts.webhooks] == ["slack", "json", "telegram"]
    assert c.alerts.webhooks[1].headers == {"Authorization": "Bearer t"}
    assert config_from_dict({}).alerts == AlertsConfig() and AlertsConfig().kinds == ALERT_KINDS


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"colour": 1}, "unknown key alerts.colour"),
        ({"webhook": [{"url": "ftp://x"}]}, "http:// or https://"),
        ({"webhook": [{"format": "slack"}]}, "needs a url"),
        ({"webhook": [{"url": "https://x", "format": "teams"}]}, "format must be one of"),
        ({"webhook": [{"url": "https://x", "format": "telegram"}]}, "needs chat_id"),
        ({"webhook": [{"url": "https://x", "headers": {"A B": "c"}}]}, "headers"),
        ({"webhook": [{"url": "https://x", "token": "c"}]}, "unknown key alerts.webhook.token"),
        ({"kinds": ["stopout"]}, "unknown kind 'stopout'"),
        ({"offline_after_s": "60"}, "number of seconds"),
        ({"offline_after_s": 0}, "alerts.offline_after_s must be"),
        ({"retries": 1.5}, "whole number"),
        ({"webhook": "https://x"}, "[[alerts.webhook]]"),
    ],
)
def test_bad_alerts_config_is_one_clear_line(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"alerts": raw})
    assert says in str(err.value) and "\n" not in str(err.value)


_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_values = (
    _scalar
    | st.lists(_scalar, max_size=3)
    | st.dictionaries(st.text(max_size=10), _scalar | st.lists(_scalar, max_size=2), max_size=3)
)
_keys = st.sampled_from(
    ["webhook", "kinds", "offline_after_s", "timeout_s", "retries", "queue", "backoff_s", "url", "x"]
)
_hook = st.dictionaries(
    st.sampled_from(["url", "format", "headers", "chat_id", "name", "y"]), _values | st.just("https://h/x")
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values | st.lists(_hook, max_size=2) | _hook, max_size=5) | _values)
def test_alerts_config_garbage_is_a_config_error_or_valid(raw: Any) -> None:
    try:
        c = alerts_from_dict(raw)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(c, AlertsConfig)
        for w in c.webhooks:
            payload(STOP, w)


class Link:
    """What the watcher reads of a link: ``connected``, replaced by a fresh event when a stream ends."""

    def __init__(self) -> None:
        self.connected = trio.Event()

    def up(self) -> None:
        self.connected.set()

    def down(self) -> None:
        self.connected = trio.Event()


async def test_the_agent_alerts_core_unreachable_past_the_limit_and_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, sink = Link(), Recorded()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            watch_core_link, link, sink, TrioClock(), AlertsConfig(offline_after_s=30), "agent-a"
        )
        await trio.sleep(29)
        link.up()  # connected in time: nothing
        await trio.sleep(100)
        link.down()
        await trio.sleep(30.5 + POLL_S)
        assert [(a.kind, a.details) for a in sink.alerts] == [("core_unreachable", {"agent_id": "agent-a"})]
        await trio.sleep(600)
        assert len(sink.alerts) == 1
        link.up()
        await trio.sleep(POLL_S)
        assert [a.kind for a in sink.alerts] == ["core_unreachable", "core_reachable"]
        nursery.cancel_scope.cancel()


def test_alerts_go_through_the_etcd_key_tree_and_back() -> None:
    raw = {"alerts": {"offline_after_s": 5, "webhook": [{"url": "https://x/y", "headers": {"A": "b"}}]}}
    tree = to_tree(raw)
    assert tree["/echo/alerts/webhook"] == '[{"url":"https://x/y","headers":{"A":"b"}}]'
    assert (
        from_tree(tree) == raw and dotted_to_key("alerts.offline_after_s") == "/echo/alerts/offline_after_s"
    )
    assert config_from_dict(from_tree(tree)).alerts.webhooks[0].headers == {"A": "b"}
