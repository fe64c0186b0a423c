"""Alerts POSTed as JSON to webhooks. Each webhook has its own bounded queue and its own trio task: a full
queue drops its oldest alert (logged and counted), never blocks; a failed POST is retried with exponential
backoff up to a cap; the same kind, account and trade within ``dedupe_window_s`` is sent once. Nothing here
ever waits inside ``emit``: a webhook that is slow or down costs the copies nothing."""

from __future__ import annotations

import json
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
import trio
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from echo.domain.config import AlertsConfig, WebhookConfig
from echo.ports.alerts import Alert

log = structlog.get_logger("echo.alerts")

_LIVE: weakref.WeakSet[WebhookSink] = weakref.WeakSet()
"""Sinks running in this process, read by the metrics callback."""


def _observe(_options: CallbackOptions) -> Iterator[Observation]:
    totals: dict[str, int] = {}
    for sink in list(_LIVE):
        for key, n in sink.stats.items():
            totals[key] = totals.get(key, 0) + n
    for key, n in sorted(totals.items()):
        yield Observation(n, {"result": key})


metrics.get_meter("echo.alerts").create_observable_counter(
    "echo_alerts_total",
    callbacks=[_observe],
    description="Alerts to webhooks by result: sent, retries, failed, dropped (queue full), deduped",
)

DISCORD_LIMIT = 2000
TELEGRAM_LIMIT = 4096


# ---------------------------------------------------------------------------------------- pure parts


def backoff_schedule(retries: int, first_s: float, cap_s: float) -> list[float]:
    """The waits before each retry: ``first_s`` doubled each time, never above ``cap_s``."""
    return [min(cap_s, first_s * 2.0**i) for i in range(retries)]


class Deduper:
    """Says whether an alert is new: the same key (kind, account, trade) within ``window_ms`` of the last
    time it was let through is not. Forgets keys older than the window as it goes."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._last: dict[tuple[str, str, str], int] = {}

    def admit(self, key: tuple[str, str, str], now_ms: int) -> bool:
        if len(self._last) > 10_000:
            self._last = {k: t for k, t in self._last.items() if now_ms - t < self.window_ms}
        last = self._last.get(key)
        if last is not None and now_ms - last < self.window_ms:
            return False
        self._last[key] = now_ms
        return True


def iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sentence(alert: Alert) -> str:
    """The line a person reads in a chat: severity, kind, account, trade, what happened, when."""
    where = f" account {alert.account_id}" if alert.account_id else ""
    trade = f" (trade {alert.trade_id})" if alert.trade_id else ""
    return f"[{alert.severity.upper()}] {alert.kind}{where}{trade}: {alert.text} at {iso(alert.at_ms)}"


def as_json(alert: Alert) -> dict[str, Any]:
    return {
        "source": "echo",
        "kind": alert.kind,
        "severity": alert.severity,
        "account_id": alert.account_id,
        "trade_id": alert.trade_id,
        "text": alert.text,
        "at": iso(alert.at_ms),
        "at_ms": alert.at_ms,
        "details": alert.details,
    }


def payload(alert: Alert, hook: WebhookConfig) -> dict[str, Any]:
    """The body a webhook of ``hook.format`` accepts."""
    if hook.format == "slack":
        return {"text": sentence(alert)}
    if hook.format == "discord":
        return {"content": sentence(alert)[:DISCORD_LIMIT]}
    if hook.format == "telegram":
        return {"chat_id": hook.chat_id, "text": sentence(alert)[:TELEGRAM_LIMIT]}
    return as_json(alert)


# ------------------------------------------------------------------------------------------ delivery


class PostError(Exception):
    """One POST failed: the webhook's status or the network's error, in one line."""


async def post(client: httpx.AsyncClient, hook: WebhookConfig, alert: Alert, timeout_s: float) -> None:
    """POST one alert; PostError unless the webhook answers 2xx."""
    body = json.dumps(payload(alert, hook), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "echo-copier", **hook.headers}
    try:
        resp = await client.post(hook.url, content=body, headers=headers, timeout=timeout_s)
    except httpx.TimeoutException:
        raise PostError(f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise PostError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    if not 200 <= resp.status_code < 300:
        raise PostError(f"HTTP {resp.status_code} {resp.text[:200]!r}")


def _identity(hook: WebhookConfig) -> tuple[object, ...]:
    return (hook.url, hook.format, hook.chat_id, hook.name, tuple(sorted(hook.headers.items())))


class _Hook:
    """One webhook: its queue and whether its task has something to do."""

    def __init__(self, config: WebhookConfig, size: int) -> None:
        self.config = config
        self.queue: deque[Alert] = deque()
        self.size = size
        self.wake = trio.Event()


class WebhookSink:
    """The ``AlertSink`` that POSTs to ``[[alerts.webhook]]``."""

    def __init__(self, config: AlertsConfig, now_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self.stats: dict[str, int] = {"sent": 0, "dropped": 0, "failed": 0, "retries": 0, "deduped": 0}
        self._hooks: list[_Hook] = []
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self.config = config
        self._dedupe = Deduper(int(config.dedupe_window_s * 1000))
        self.configure(config)
        _LIVE.add(self)

    def configure(self, config: AlertsConfig) -> None:
        """New settings: hooks kept by URL keep their queue; new ones start; removed ones stop."""
        old = {_identity(h.config): h for h in self._hooks}
        running = set(old)
        self.config = config
        self._dedupe.window_ms = int(config.dedupe_window_s * 1000)
        hooks = []
        for wc in config.webhooks:
            h = old.pop(_identity(wc), None) or _Hook(wc, config.queue)
            h.size = config.queue
            while len(h.queue) > h.size:
                h.queue.popleft()
            hooks.append(h)
            if self._nursery is not None and _identity(wc) not in running:
                self._nursery.start_soon(self._deliver, h)
        for gone in old.values():
            gone.queue.clear()
            gone.wake.set()  # its task sees it is no longer listed and ends
        self._hooks = hooks

    def emit(self, alert: Alert) -> None:
        if (alert.kind not in self.config.kinds and alert.kind != "test") or not self._hooks:
            return
        if not self._dedupe.admit(alert.key, self._now_ms()):
            self.stats["deduped"] += 1
            return
        for h in self._hooks:
            if len(h.queue) >= h.size:
                lost = h.queue.popleft()
                self.stats["dropped"] += 1
                log.warning(
                    "alert_dropped",
                    webhook=h.config.label,
                    kind=lost.kind,
                    account_id=lost.account_id,
                    trade_id=lost.trade_id,
                    reason="queue full",
                    dropped_total=self.stats["dropped"],
                )
            h.queue.append(alert)
            h.wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for h in self._hooks:
                    nursery.start_soon(self._deliver, h)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            if self._client is not None:
                with trio.CancelScope(shield=True):
                    await self._client.aclose()
                self._client = None

    def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made when a webhook first has something to send (a copier without webhooks
        never makes one)."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def _deliver(self, h: _Hook) -> None:
        while h in self._hooks:
            if not h.queue:
                await h.wake.wait()
                h.wake = trio.Event()
                continue
            alert = h.queue[0]
            cfg = self.config
            waits = backoff_schedule(cfg.retries, cfg.backoff_s, cfg.backoff_max_s)
            for attempt, wait in enumerate([*waits, None], start=1):
                try:
                    await post(self._http(), h.config, alert, cfg.timeout_s)
                except PostError as exc:
                    if wait is None:
                        self.stats["failed"] += 1
                        log.error(
                            "alert_not_delivered",
                            webhook=h.config.label,
                            kind=alert.kind,
                            attempts=attempt,
                            error=str(exc),
                        )
                        break
                    self.stats["retries"] += 1
                    log.warning(
                        "alert_retry",
                        webhook=h.config.label,
                        kind=alert.kind,
                        attempt=attempt,
                        error=str(exc),
                        wait_s=wait,
                    )
                    await trio.sleep(wait)
                else:
                    self.stats["sent"] += 1
                    log.info(
                        "alert_sent", webhook=h.config.label, kind=alert.kind, account_id=alert.account_id
                    )
                    break
            if h.queue and h.queue[0] is alert:
                h.queue.popleft()


async def send_test(hooks: tuple[WebhookConfig, ...], alert: Alert, timeout_s: float) -> list[str | None]:
    """``alerts test``: one POST to each webhook, all at once; the error of each, or None."""
    results: list[str | None] = [None] * len(hooks)
    async with httpx.AsyncClient() as client:

        async def one(i: int) -> None:
            try:
                await post(client, hooks[i], alert, timeout_s)
            except PostError as exc:
                results[i] = str(exc)

        async with trio.open_nursery() as nursery:
            for i in range(len(hooks)):
                nursery.start_soon(one, i)
    return results
