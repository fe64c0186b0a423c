"""The configuration source (a TOML file or etcd): opening it, reading it, and applying its changes to
a running copier (or Core alone) while the last good configuration stays in force."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog
import trio

from echo.adapters.config.file import FileConfigSource
from echo.delivery import machine as delivery
from echo.domain.config import Config, ConfigError, config_from_dict
from echo.ports.config import ConfigSource
from echo.services.core.service import Core

log = structlog.get_logger("echo.app")


@asynccontextmanager
async def open_config(spec: str | None) -> AsyncIterator[ConfigSource | None]:
    """``etcd://HOST:PORT``, a TOML file path, or None (the built-in defaults)."""
    if spec is None:
        yield None
    elif spec.startswith("etcd://"):
        from echo.adapters.config.etcd import open_etcd  # grpc and protobuf load only when etcd is used

        async with open_etcd(spec) as etcd:
            yield etcd
    else:
        yield FileConfigSource(spec)


async def load_config(source: ConfigSource | None) -> Config:
    return config_from_dict(await source.read()) if source is not None else Config()


class Running(Protocol):
    """What a configuration change is applied to: the all-in-one copier, or Core alone."""

    config: Config
    core: Core
    source_config: Config | None


async def follow_config(
    source: ConfigSource, copier: Running, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Apply the source's changes as they come. When the source is unreachable (etcd down or paused) the
    last good configuration stays in force and copying goes on; the watch is re-established with backoff,
    and what changed meanwhile is read and applied once it is back."""

    async def on_change(raw: dict[str, Any]) -> None:
        await apply_config(copier, raw, source.description)

    backoff, started, failed = 0.5, False, False
    while True:
        error: str | None = None
        try:
            async with trio.open_nursery() as watching:
                await watching.start(source.watch, on_change)
                if not started:
                    started = True
                    task_status.started()
                if failed:
                    log.info("config_source_back", source=source.description)
                    await on_change(await source.read())
                    failed, backoff = False, 0.5
        except* (ConfigError, OSError) as group:
            error = "; ".join(str(e) for e in group.exceptions)
        if error is None:
            continue
        failed = True
        log.warning("config_source_unavailable", source=source.description, error=error, retry_s=backoff)
        if not started:
            started = True
            task_status.started()
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)


@dataclass(frozen=True, slots=True)
class Applied:
    ok: bool
    error: str = ""
    needs_restart: tuple[str, ...] = ()


async def apply_config(copier: Running, raw: dict[str, Any], where: str) -> Applied:
    """A changed configuration, applied while running: [core], [policy], [protocol], [symbols],
    [delivery] and [alerts] at once (every account evaluated again, terminals told); [agent], [store],
    [log], [split], [router] and [metrics] are reported as needing a restart. An invalid one is refused
    with the key and the reason, and the last good configuration stays in force."""
    try:
        if "__error__" in raw:
            raise ConfigError(str(raw["__error__"]))
        new = config_from_dict(raw)
    except ConfigError as exc:
        log.error("config_rejected", source=where, error=str(exc), kept="the last good configuration")
        return Applied(False, str(exc))
    old = copier.config
    baseline = copier.source_config or old
    d = new.delivery
    await copier.core.set_delivery(delivery.Settings.of(d), d.heartbeat_interval_ms)
    await copier.core.set_rules(new.core, new.policies(), new.protocol, new.symbols)
    if copier.core.alerts is not None and new.alerts != old.alerts:
        copier.core.alerts.configure(new.alerts)
    # compared with what the source said before (command-line overrides are not changes)
    restart = [
        s
        for s in ("agent", "store", "log", "split", "router", "metrics", "telemetry")
        if getattr(new, s) != getattr(baseline, s)
    ]
    copier.source_config = new
    if restart:
        log.warning("config_needs_restart", source=where, sections=restart)
    copier.config = replace(
        old,
        core=new.core,
        delivery=new.delivery,
        policy=new.policy,
        protocol=new.protocol,
        symbols=new.symbols,
        alerts=new.alerts,
    )
    log.info("config_applied", source=where, needs_restart=restart)
    return Applied(True, needs_restart=tuple(restart))
