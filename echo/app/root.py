"""The composition root: builds and runs the copier's roles (all-in-one, Core alone, an Agent alone, and
split in one process) from a configuration: store, transport, Core, Agent and its pipe server."""

from __future__ import annotations

import gc
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import structlog
import trio

from echo import __version__
from echo.adapters.aio import asyncio_loop
from echo.adapters.clock import SystemClock
from echo.adapters.locks import StartError
from echo.adapters.pipe.group import ListenerGroup
from echo.adapters.pipe.tcp import TcpPipeListener
from echo.adapters.pipe.unix import UnixPipeListener
from echo.adapters.pipe.winpipe import pipe_path
from echo.adapters.transport.grpc import GrpcAgentLink, GrpcCoreHub, client_tls, server_tls
from echo.adapters.transport.grpc_guard import Limits
from echo.adapters.transport.inproc import InProcTransport

# the store and the configuration source, re-exported: the command line and the demo import them from here
from echo.app.live_config import Applied as Applied
from echo.app.live_config import Running as Running
from echo.app.live_config import apply_config as apply_config
from echo.app.live_config import follow_config as follow_config
from echo.app.live_config import load_config as load_config
from echo.app.live_config import open_config as open_config
from echo.app.stores import ledger_url as ledger_url
from echo.app.stores import open_ledger as open_ledger
from echo.app.stores import open_store as open_store
from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.config import (
    Config,
    ConfigError,
    SplitConfig,
    is_loopback,
    parse_host_port,
)
from echo.ports.clock import Clock
from echo.ports.config import ConfigSource
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.store import Store
from echo.ports.transport import CoreHub
from echo.services.agent.alerts import watch_core_link
from echo.services.agent.service import Agent
from echo.services.core.alerts import AlertFeed
from echo.services.core.service import Core
from echo.services.ids import IdFactory

log = structlog.get_logger("echo.app")


def terminals_at(config: Config) -> str:
    """Where this copier's terminals connect: the named pipe on Windows, the Unix socket elsewhere, and TCP
    at ``agent.tcp_listen`` too when that is set."""
    own = pipe_path(config.agent.pipe_name) if sys.platform == "win32" else config.agent.socket_path
    return f"{own} and TCP {config.agent.tcp_listen}" if config.agent.tcp_listen else own


def agent_listener(config: Config) -> PipeListener:
    """Where the Agent's terminals connect: ``\\\\.\\pipe\\<agent.pipe_name>`` on Windows, the Unix socket at
    ``agent.socket_path`` elsewhere, and TCP at ``agent.tcp_listen`` as well when that is set (a warning
    when other machines can reach it)."""
    own: PipeListener
    if sys.platform == "win32":
        from echo.adapters.pipe.winpipe import WinPipeListener

        own = WinPipeListener(config.agent.pipe_name, config.agent.pipe_user_list())
    else:
        own = UnixPipeListener(config.agent.socket_path)
    if not config.agent.tcp_listen:
        return own
    host, _port = parse_host_port(config.agent.tcp_listen, "agent.tcp_listen")
    if not is_loopback(host):
        log.warning(
            "agent_tcp_remote",
            listen=config.agent.tcp_listen,
            note="terminals on other machines can connect; each must present agent.token",
        )
    return ListenerGroup([own, TcpPipeListener(config.agent.tcp_listen)])


@dataclass
class Copier:
    """A running all-in-one copier (what tests and the demo look at)."""

    config: Config
    store: Store
    core: Core
    agent: Agent
    source_config: Config | None = None
    """The configuration as the config source last gave it (before command-line overrides)."""


@dataclass
class CoreOnly:
    """Core running alone (split mode), serving its Agents over gRPC."""

    config: Config
    store: Store
    core: Core
    hub: GrpcCoreHub
    source_config: Config | None = None


def _metrics(config: Config) -> AbstractContextManager[None]:
    """The Prometheus endpoint at ``metrics.listen``, or nothing when it is empty."""
    if not config.metrics.listen:
        return nullcontext()
    from echo.adapters.metrics import prometheus_endpoint  # the SDK loads only when metrics are served

    return prometheus_endpoint(*parse_host_port(config.metrics.listen, "metrics.listen"))


def _telemetry(config: Config, service_name: str) -> AbstractContextManager[None]:
    """Traces exported by OTLP to ``telemetry.endpoint``, or nothing when it is empty."""
    if not config.telemetry.endpoint:
        return nullcontext()
    from echo.adapters.telemetry import traces  # the exporter loads only when traces are on

    return traces(config.telemetry, service_name)


def check_listen_is_safe(split: SplitConfig) -> None:
    """Core serving beyond this machine needs both Agent tokens (``split.agent_tokens`` or ``split.token``)
    and TLS (``split.tls_cert``): without a token any host could stream as an Agent, without TLS the tokens
    and the trades travel in the clear.
    ``split.allow_insecure`` serves it anyway. A ConfigError naming what is missing otherwise."""
    host, _port = parse_host_port(split.listen, "split.listen")
    if is_loopback(host) or split.allow_insecure or ((split.token or split.agent_tokens) and split.tls_cert):
        return
    missing = " and ".join(
        what
        for what, have in (
            ("split.agent_tokens (or split.token)", split.token or split.agent_tokens),
            ("split.tls_cert", split.tls_cert),
        )
        if not have
    )
    raise ConfigError(
        f"split.listen {split.listen} is reachable from other machines and {missing} is not set: set "
        "split.agent_tokens (or split.token) and split.tls_cert, or split.allow_insecure = true to serve it "
        "anyway"
    )


async def _serve_hub(hub: GrpcCoreHub, listen: str, *, task_status: trio.TaskStatus[None]) -> None:
    """``hub.serve``, a port that cannot be had said in one line naming it."""
    try:
        await hub.serve(task_status=task_status)
    except OSError as exc:
        raise StartError(f"split.listen {listen}: cannot serve gRPC there: {exc.strerror or exc}") from exc


def _grpc_hub(config: Config) -> GrpcCoreHub:
    """Core's gRPC end at ``split.listen``: the token, keepalive at the heartbeat, the delivery settings
    every hello carries, and TLS when a certificate is configured."""
    split, d = config.split, config.delivery
    host, port = parse_host_port(split.listen, "split.listen")
    return GrpcCoreHub(
        host,
        port,
        token=split.token,
        agent_tokens=split.agent_tokens,
        core_version=__version__,
        heartbeat_interval_ms=d.heartbeat_interval_ms,
        delivery=m.DeliveryHeartbeat(
            m.DeliveryConfig(d.ack_timeout_ms, d.retry_backoff_ms, d.max_retries, d.heartbeat_interval_ms)
        ),
        tls=server_tls(split.tls_cert, split.tls_key) if split.tls_cert else None,
        limits=Limits(
            max_message_bytes=split.max_message_bytes,
            max_hello_bytes=split.max_hello_bytes,
            hello_timeout_s=split.hello_timeout_ms / 1000,
            send_queue=split.send_queue,
            write_timeout_s=split.write_timeout_ms / 1000,
            control_per_s=split.control_per_s,
            reports_per_s=split.reports_per_s,
        ),
    )


def _grpc_link(config: Config, host: str, port: int) -> GrpcAgentLink:
    """An Agent's gRPC end, dialling Core at ``host:port``."""
    split = config.split
    return GrpcAgentLink(
        host,
        port,
        config.agent.agent_id,
        token=split.token,
        heartbeat_interval_ms=config.delivery.heartbeat_interval_ms,
        tls=client_tls(split.tls_ca) if split.tls_ca else None,
    )


def _core(config: Config, hub: CoreHub, store: Store, clock: Clock, ids: IdFactory | None) -> Core:
    d = config.delivery
    return Core(
        hub,
        store,
        clock,
        config.core,
        delivery_settings=delivery.Settings.of(d),
        ids=ids,
        policies=config.policies(),
        protocol=config.protocol,
        catalog=config.symbols,
        router=config.router,
        retention_days=config.store.retention_days,
        alerts=_alerts(config, clock),
    )


def _alerts(config: Config, clock: Clock) -> AlertFeed:
    """Alerts to people: POSTed to ``[[alerts.webhook]]`` (none configured: log lines only, until a
    reload adds one)."""
    from echo.adapters.alerts.webhook import WebhookSink

    return AlertFeed(WebhookSink(config.alerts, clock.now_ms), clock, config.alerts)


async def run_core(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    config_source: ConfigSource | None = None,
    task_status: trio.TaskStatus[CoreOnly] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Core alone (``run --role core``): its Agents stream to it over gRPC at ``split.listen``."""
    clock = clock or SystemClock()
    check_listen_is_safe(config.split)
    own_store = store is None
    store = store or await open_store(config.store.url, config.store.synchronous, exclusive=True)
    try:
        with _metrics(config), _telemetry(config, "echo-core"):
            async with asyncio_loop(), trio.open_nursery() as nursery:
                hub = _grpc_hub(config)
                await nursery.start(_serve_hub, hub, config.split.listen)
                core = _core(config, hub, store, clock, None)
                await nursery.start(core.run)
                running = CoreOnly(config, store, core, hub)
                if config_source is not None:
                    await nursery.start(follow_config, config_source, running)
                task_status.started(running)
    finally:
        if own_store:
            with trio.CancelScope(shield=True):
                await store.aclose()


async def run_agent(
    config: Config,
    *,
    listener: PipeListener | None = None,
    clock: Clock | None = None,
    ledger: AckLedger | None = None,
    task_status: trio.TaskStatus[Agent] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An Agent alone (``run --role agent``): serves its terminals and streams to Core at ``split.core``."""
    clock = clock or SystemClock()
    host, port = parse_host_port(config.split.core, "split.core")
    listener = listener or agent_listener(config)
    _claim(listener)
    own_ledger = ledger is None
    try:
        ledger = ledger or open_ledger(ledger_url(config))
    except BaseException:
        _release(listener)
        raise
    try:
        with _metrics(config), _telemetry(config, "echo-agent"):
            await _agent_alone(config, host, port, listener, clock, ledger, task_status)
    finally:
        if own_ledger:
            ledger.close()
        _release(listener)


async def _agent_alone(
    config: Config,
    host: str,
    port: int,
    listener: PipeListener,
    clock: Clock,
    ledger: AckLedger,
    task_status: trio.TaskStatus[Agent],
) -> None:
    async with asyncio_loop(), trio.open_nursery() as nursery:
        link = _grpc_link(config, host, port)
        await nursery.start(link.run)
        if config.alerts.webhooks:  # Core unreachable: only the Agent can tell (read at start)
            from echo.adapters.alerts.webhook import WebhookSink

            sink = WebhookSink(config.alerts, clock.now_ms)
            await nursery.start(watch_core_link, link, sink, clock, config.alerts, config.agent.agent_id)
        agent = Agent(link, listener, clock, config.agent, config.delivery, ledger)
        await nursery.start(agent.run)
        task_status.started(agent)


def _claim(listener: PipeListener) -> None:
    """A Unix socket or a named pipe is claimed before anything else opens: a second copier on it stops
    here."""
    claim = getattr(listener, "claim", None)  # a Unix socket, a named pipe
    if callable(claim):
        claim()


def _release(listener: PipeListener) -> None:
    release = getattr(listener, "release", None)
    if callable(release):
        release()


async def run_split_in_process(
    config: Config,
    *,
    store: Store,
    listener: PipeListener,
    clock: Clock,
    ids: IdFactory | None = None,
    ledger: AckLedger,
    task_status: trio.TaskStatus[Copier] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Core and one Agent in this process, joined by the gRPC transport over localhost TCP at
    ``split.listen`` (``simulate --transport grpc``: the same wiring as ``run --role core`` plus
    ``run --role agent``, on whatever clock the caller runs). The caller provides the trio-asyncio loop."""
    host, port = parse_host_port(config.split.listen, "split.listen")
    async with trio.open_nursery() as nursery:
        hub = _grpc_hub(config)
        await nursery.start(hub.serve)
        core = _core(config, hub, store, clock, ids)
        await nursery.start(core.run)
        link = _grpc_link(config, host, port)
        await nursery.start(link.run)
        await link.connected.wait()
        agent = Agent(link, listener, clock, config.agent, config.delivery, ledger)
        await nursery.start(agent.run)
        task_status.started(Copier(config, store, core, agent))


async def run_all_in_one(
    config: Config,
    *,
    store: Store | None = None,
    listener: PipeListener | None = None,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
    ledger: AckLedger | None = None,
    config_source: ConfigSource | None = None,
    task_status: trio.TaskStatus[Copier] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run Core and one Agent in this process until cancelled. Starts Core first, then the Agent (whose
    pipe server accepts terminals only once Core is listening); with a ``config_source``, its changes
    apply while running (``apply_config``)."""
    clock = clock or SystemClock()
    listener = listener or agent_listener(config)
    _claim(listener)
    own_store = store is None
    try:
        store = store or await open_store(config.store.url, config.store.synchronous, exclusive=True)
    except BaseException:
        _release(listener)
        raise
    own_ledger = ledger is None
    try:
        ledger = ledger or open_ledger(ledger_url(config, all_in_one=True))
    except BaseException:
        _release(listener)
        if own_store:
            await store.aclose()
        raise
    transport = InProcTransport()
    try:
        with _metrics(config), _telemetry(config, "echo"):
            async with trio.open_nursery() as nursery:
                core = _core(config, transport.hub(), store, clock, ids)
                await nursery.start(core.run)
                link = await transport.connect(config.agent.agent_id)
                agent = Agent(link, listener, clock, config.agent, config.delivery, ledger)
                await nursery.start(agent.run)
                copier = Copier(config, store, core, agent)
                if config_source is not None:
                    await nursery.start(follow_config, config_source, copier)
                task_status.started(copier)
    finally:
        if own_ledger:
            ledger.close()
        if own_store:
            with trio.CancelScope(shield=True):
                await store.aclose()
        _release(listener)


def settle_heap() -> None:
    """Once the process serves: collect what start-up left and move every object alive now (modules,
    configuration, compiled statements, about 80,000) out of the cyclic garbage collector's scans for
    good (``gc.freeze``). The collector's full passes then look at what the copier builds while it runs:
    a full pass over start-up's objects took 20-70 ms, a pause every trade in flight waited out."""
    gc.collect()
    gc.freeze()
