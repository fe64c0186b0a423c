"""Configuration as frozen dataclasses, built from plain dicts (a TOML file or etcd) with every
unknown key and every bad value rejected by name."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from echo.domain.errors import ConfigError as ConfigError
from echo.domain.ids import parse_account_id, parse_agent_id
from echo.domain.paths import in_data_folder
from echo.domain.policy import Policies, Policy, policies_from_dict
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.domain.types import Role


@dataclass(frozen=True, slots=True)
class CoreConfig:
    fixed_lot: float = 0.10
    """Lots opened on every slave (risk-based sizing replaces this later)."""
    copy_sl_tp: bool = True
    """Copy the master's SL/TP prices at entry and mirror its modifications."""
    follow: dict[str, list[str]] = field(default_factory=dict)
    """master account -> slave accounts that copy it. Empty: every slave follows every master."""
    dedupe_window_ms: int = 7 * 86_400_000
    """How long a trade_id (by the time in its UUIDv7) is remembered for dedupe. An intent, close or modify
    for an unknown trade older than this is refused: it cannot be told from a duplicate."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.fixed_lot) or self.fixed_lot <= 0:
            raise ConfigError(f"core.fixed_lot must be > 0, got {self.fixed_lot}")
        if not 3_600_000 <= self.dedupe_window_ms <= 366 * 86_400_000:
            raise ConfigError(f"core.dedupe_window_ms must be 1 hour..366 days, got {self.dedupe_window_ms}")
        for master, slaves in self.follow.items():
            parse_account_id(master)
            for s in slaves:
                parse_account_id(s)

    def allows(self, account_id: str, role: Role) -> bool:
        """Whether an account may connect in this role. With ``follow`` empty, any account may; once
        ``follow`` names accounts it is the list of accounts: its masters connect as masters, the slaves
        it lists as slaves, and every other handshake is REJECTED."""
        if not self.follow:
            return True
        if role is Role.MASTER:
            return account_id in self.follow
        return any(account_id in slaves for slaves in self.follow.values())

    def followers(self, master: str, slaves: list[str]) -> list[str]:
        """The slaves (of those known) that copy ``master``, in a stable order."""
        if not self.follow:
            return sorted(slaves)
        return sorted(s for s in self.follow.get(master, []) if s in slaves)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent_id: str = "agent-1"
    socket_path: str = in_data_folder("echo.sock")
    max_line_bytes: int = 1 << 20
    outbox_lines: int = 4096
    """Lines queued for one EA; past three quarters, commands wait in the Agent (in order) until it reads."""
    stall_ms: int = 30_000
    """A terminal that reads nothing this long while lines wait for it is disconnected (1000..600000)."""
    ledger_url: str = ""
    """Where the ack ledger lives (``sqlite:///PATH`` or ``memory://``); empty: in memory in the all-in-one
    copier (Core's journal re-sends what has no result), else next to the store
    (``<store>-<agent_id>-ledger.db``, or in memory when the store is)."""
    ledger_hold_ms: int = 15 * 60_000
    """How long the ledger keeps a command Core has not sent again (at load and at each retry): a stale
    ledger never opens positions its Core no longer asks for."""
    token: str = ""
    """Shared secret every EA presents in its handshake (EA input ``AgentToken``); empty: none required."""
    tcp_listen: str = ""
    """HOST:PORT where terminals may also connect over TCP (EAs under Wine, EA input ``Transport = tcp``);
    empty: no TCP. A loopback address only, unless ``tcp_allow_remote``."""
    tcp_allow_remote: bool = False
    """Serve ``tcp_listen`` on an address other machines can reach (then ``token`` must be set)."""

    pipe_name: str = "echo"
    """Windows: the named pipe terminals connect to, ``\\\\.\\pipe\\NAME`` (EA input ``PipeName``)."""
    pipe_users: str = ""
    """Windows: other accounts whose terminals may open the pipe, comma-separated names (``PC\\trader``) or
    SIDs (``S-1-5-21-...``), beside this process's user, SYSTEM and the Administrators. The service adds the
    user who installed it."""

    def pipe_user_list(self) -> list[str]:
        """``pipe_users`` as a list (blank entries dropped)."""
        return [u.strip() for u in self.pipe_users.split(",") if u.strip()]

    def __post_init__(self) -> None:
        parse_agent_id(self.agent_id)
        if not 1 <= len(self.pipe_name) <= 200 or not all(
            c.isascii() and c.isprintable() and c not in "\\/" for c in self.pipe_name
        ):
            raise ConfigError(
                "agent.pipe_name must be 1..200 printable ASCII characters without \\ or /, "
                f"got {self.pipe_name!r}"
            )
        for user in self.pipe_user_list():
            if len(user) > 256 or not all(c.isprintable() and c not in "()" for c in user):
                raise ConfigError(f"agent.pipe_users: {user[:60]!r} is not a Windows account name or SID")
        if self.tcp_listen:
            host, _port = parse_host_port(self.tcp_listen, "agent.tcp_listen")
            if not is_loopback(host):
                if not self.tcp_allow_remote:
                    raise ConfigError(
                        f"agent.tcp_listen {self.tcp_listen} is reachable from other machines: use a "
                        "loopback address (127.0.0.1), or set agent.tcp_allow_remote = true and agent.token"
                    )
                if not self.token:
                    raise ConfigError(
                        f"agent.tcp_listen {self.tcp_listen} is reachable from other machines and "
                        "agent.token is not set: every EA must present a token there"
                    )
        if self.max_line_bytes < 4096:
            raise ConfigError("agent.max_line_bytes must be >= 4096")
        if self.outbox_lines < 16:
            raise ConfigError("agent.outbox_lines must be >= 16")
        if isinstance(self.stall_ms, bool) or not 1000 <= self.stall_ms <= 600_000:
            raise ConfigError(f"agent.stall_ms must be 1000..600000, got {self.stall_ms!r}")
        if self.ledger_url and not self.ledger_url.startswith(("sqlite:///", "memory://")):
            raise ConfigError(
                f"agent.ledger_url must be sqlite:///PATH or memory://, got {self.ledger_url!r}"
            )
        if not 1000 <= self.ledger_hold_ms <= 7 * 86_400_000:
            raise ConfigError(f"agent.ledger_hold_ms must be 1000..604800000, got {self.ledger_hold_ms}")
        if len(self.token) > 256 or (self.token and not self.token.isprintable()):
            raise ConfigError("agent.token must be at most 256 printable characters")


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """Delivery timing, sent to every terminal after its handshake (``delivery_config``)."""

    ack_timeout_ms: int = 1000
    retry_backoff_ms: int = 500
    max_retries: int = 100
    heartbeat_interval_ms: int = 2000

    def __post_init__(self) -> None:
        for name, low, high in (
            ("ack_timeout_ms", 50, 600_000),
            ("retry_backoff_ms", 10, 600_000),
            ("max_retries", 1, 10_000),
            ("heartbeat_interval_ms", 100, 60_000),
        ):
            v = getattr(self, name)
            if not low <= v <= high:
                raise ConfigError(f"delivery.{name} must be {low}..{high}, got {v}")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Core's router (seed 001): master events go to a pool of workers by trade_id, each with a bounded
    queue; a full queue turns an event away with ERR_BROKER_BUSY (the master sends it again). Read at
    start; a change needs a restart."""

    worker_pool_size: int = 4
    """Workers; a power of 2, 2..32. Events of one trade always reach the same worker, in order."""
    queue_depth_max: int = 8
    """Master events one worker holds before it turns new ones away (4..128)."""
    worker_timeout_ms: int = 50
    """How long a worker waits for an Agent to take a message before it treats that Agent as unavailable
    (the delivery machine sends its commands again), so one slow Agent never stalls the others (20..200)."""
    max_in_flight: int = 600
    """Commands sent to connected slaves and not answered yet past which a new trade is turned away with
    ERR_BROKER_BUSY (closes never are): admission before Core saturates (10..1000000)."""
    max_behind_ms: int = 250
    """How long the oldest message may have waited for a worker before a new trade is turned away with
    ERR_BROKER_BUSY (closes never are): Core is behind what arrives (10..60000)."""

    def __post_init__(self) -> None:
        n = self.worker_pool_size
        if not 2 <= n <= 32 or n & (n - 1):
            raise ConfigError(f"router.worker_pool_size must be a power of 2 in 2..32, got {n}")
        if not 4 <= self.queue_depth_max <= 128:
            raise ConfigError(f"router.queue_depth_max must be 4..128, got {self.queue_depth_max}")
        if isinstance(self.max_in_flight, bool) or not 10 <= self.max_in_flight <= 1_000_000:
            raise ConfigError(f"router.max_in_flight must be 10..1000000, got {self.max_in_flight!r}")
        if isinstance(self.max_behind_ms, bool) or not 10 <= self.max_behind_ms <= 60_000:
            raise ConfigError(f"router.max_behind_ms must be 10..60000, got {self.max_behind_ms!r}")
        if not 20 <= self.worker_timeout_ms <= 200:
            raise ConfigError(f"router.worker_timeout_ms must be 20..200, got {self.worker_timeout_ms}")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///" + in_data_folder("echo.db")
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    retention_days: int = 90
    """Closed trades (their commands, delivery journal, events and copy decisions) are purged this long
    after they closed, never sooner than ``core.dedupe_window_ms``."""

    def __post_init__(self) -> None:
        if not (
            self.url.startswith(("sqlite:///", "postgresql://", "postgres://")) or self.url == "memory://"
        ):
            raise ConfigError(
                "store.url must be sqlite:///PATH, postgresql://USER@HOST:PORT/DB[?schema=NAME] or "
                f"memory://, got {self.url!r}"
            )
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"store.synchronous must be FULL or NORMAL, got {self.synchronous!r}")
        if isinstance(self.retention_days, bool) or not 1 <= self.retention_days <= 36_500:
            raise ConfigError(f"store.retention_days must be 1..36500, got {self.retention_days!r}")


_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, IPv6 possibly in brackets) is this machine only."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} must be HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """Split mode: Core listens for its Agents' gRPC streams; each Agent connects to it."""

    listen: str = "127.0.0.1:7700"
    """Where Core listens (``run --role core``)."""
    core: str = "127.0.0.1:7700"
    """Where an Agent finds Core (``run --role agent``)."""
    token: str = ""
    """Agent: the secret it presents in its hello. Core: the shared secret any Agent not listed in
    ``agent_tokens`` may present (every holder can name itself any Agent: kept for compatibility, warned
    about); empty: none."""
    agent_tokens: dict[str, str] = field(default_factory=dict)
    """Core: agent id -> that Agent's own secret. A listed Agent is admitted only with its own token; with
    this set and ``token`` empty, an Agent not listed is refused."""
    tls_cert: str = ""
    """Core: PEM certificate (chain) to serve TLS with; empty: plaintext."""
    tls_key: str = ""
    """Core: its PEM private key (empty: inside ``tls_cert``)."""
    tls_ca: str = ""
    """Agent: PEM certificate(s) to verify Core with; set: the Agent connects over TLS."""
    allow_insecure: bool = False
    """Core: serve a ``listen`` address other machines can reach without a token and ``tls_cert``
    (refused at start otherwise)."""
    max_message_bytes: int = 1 << 20
    """Core: the largest message an Agent may send once its hello is accepted (its stream ends otherwise)."""
    max_hello_bytes: int = 16 << 10
    """Core: the largest hello (before the Agent has proved who it is)."""
    hello_timeout_ms: int = 5000
    """Core: a stream that has not said hello by then is refused."""
    send_queue: int = 10_000
    """Core: messages queued for one Agent; one more and its stream is closed (its accounts go offline)."""
    write_timeout_ms: int = 10_000
    """Core: an Agent that takes no message this long is cut off (its accounts go offline)."""
    control_per_s: int = 500
    """Core: quotes and state snapshots per Agent stream per second (bursts of twice that); more is shed."""
    reports_per_s: int = 50
    """Core: account announcements per Agent stream per second (bursts of ten times that); more is shed."""

    def __post_init__(self) -> None:
        parse_host_port(self.listen, "split.listen")
        parse_host_port(self.core, "split.core")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("split.tls_key needs split.tls_cert")
        if not isinstance(self.agent_tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.agent_tokens.items()
        ):
            raise ConfigError('split.agent_tokens must map agent id -> token, e.g. { "agent-a" = "..." }')
        for agent_id, token in self.agent_tokens.items():
            if not 0 < len(agent_id) <= 64 or not agent_id.isprintable():
                raise ConfigError(
                    f"split.agent_tokens: agent id {agent_id[:64]!r} must be 1..64 printable characters"
                )
            if not 16 <= len(token) <= 256 or not token.isprintable():
                raise ConfigError(
                    f"split.agent_tokens.{agent_id}: the token must be 16..256 printable characters"
                )
        bounds = {
            "max_message_bytes": (self.max_message_bytes, 1024, 64 << 20),
            "max_hello_bytes": (self.max_hello_bytes, 256, 1 << 20),
            "hello_timeout_ms": (self.hello_timeout_ms, 100, 600_000),
            "send_queue": (self.send_queue, 16, 10_000_000),
            "write_timeout_ms": (self.write_timeout_ms, 100, 600_000),
            "control_per_s": (self.control_per_s, 1, 1_000_000),
            "reports_per_s": (self.reports_per_s, 1, 1_000_000),
        }
        for key, (value, low, high) in bounds.items():
            if not low <= value <= high:
                raise ConfigError(f"split.{key} must be {low}..{high}, got {value}")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus scrape endpoint for the copier's OpenTelemetry metrics: Core's, the Agent's, or both
    (echo/services/instruments.py)."""

    listen: str = ""
    """HOST:PORT to serve ``/metrics`` on; empty: no endpoint (the metrics cost nothing then)."""

    def __post_init__(self) -> None:
        if self.listen:
            parse_host_port(self.listen, "metrics.listen")


ALERT_KINDS = (
    "missed_trade",
    "stop_out",
    "closed_by_sl",
    "account_offline",
    "account_online",
    "delivery_gave_up",
    "store_failing",
    "handshake_rejected",
    "core_unreachable",
    "core_reachable",
)
"""What can be alerted (``alerts.kinds``); ``test`` is what ``alerts test`` sends."""

WEBHOOK_FORMATS = ("slack", "discord", "telegram", "json")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One place alerts are POSTed to (``[[alerts.webhook]]``)."""

    url: str
    format: Literal["slack", "discord", "telegram", "json"] = "json"
    """``slack`` (``{"text": ...}``), ``discord`` (``{"content": ...}``), ``telegram`` (``chat_id`` and
    ``text``, for the Bot API's sendMessage) or ``json`` (the whole alert)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every POST (e.g. ``Authorization``)."""
    chat_id: str = ""
    """telegram: the chat the bot writes to."""
    name: str = ""
    """How ``alerts test`` and the logs call it (default: the URL's host)."""

    def __post_init__(self) -> None:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            ok = False
        if not ok or len(self.url) > 2048 or not self.url.isprintable():
            raise ConfigError(f"alerts.webhook.url must be an http:// or https:// URL, got {self.url[:80]!r}")
        if self.format not in WEBHOOK_FORMATS:
            raise ConfigError(
                f"alerts.webhook.format must be one of {', '.join(WEBHOOK_FORMATS)}, got {self.format!r}"
            )
        if self.format == "telegram" and not self.chat_id:
            raise ConfigError("alerts.webhook: format telegram needs chat_id")
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and k.isprintable()
            and v.isprintable()
            and k
            and not set(k) & set(" :")
            and len(k) + len(v) <= 4096
            for k, v in self.headers.items()
        ):
            raise ConfigError(
                'alerts.webhook.headers must map header name -> value, e.g. { Authorization = "..." }'
            )
        if len(self.chat_id) > 64 or not self.chat_id.isprintable() or len(self.name) > 64:
            raise ConfigError("alerts.webhook.chat_id and name must be at most 64 printable characters")

    @property
    def label(self) -> str:
        from urllib.parse import urlsplit

        return self.name or urlsplit(self.url).hostname or self.url


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alerts to people: each alert POSTed as JSON to every webhook, in a task of its own (a webhook that
    is slow or down never delays a copy). Applied while running."""

    webhooks: tuple[WebhookConfig, ...] = ()
    """``[[alerts.webhook]]`` tables; none: alerts are only log lines."""
    kinds: tuple[str, ...] = ALERT_KINDS
    """Which alerts are sent (default: all)."""
    offline_after_s: float = 60.0
    """An account offline longer than this is an alert (and its return another)."""
    dedupe_window_s: float = 300.0
    """The same kind, account and trade within this window is sent once."""
    timeout_s: float = 5.0
    """One POST's time limit."""
    retries: int = 5
    """Sends after the first, with exponential backoff, before an alert is dropped."""
    backoff_s: float = 1.0
    """The first wait before a retry; doubled each time up to ``backoff_max_s``."""
    backoff_max_s: float = 60.0
    queue: int = 1000
    """Alerts waiting per webhook; one more drops the oldest (logged and counted)."""

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in ALERT_KINDS:
                raise ConfigError(f"alerts.kinds: unknown kind {k!r} (known: {', '.join(ALERT_KINDS)})")
        bounds = {
            "offline_after_s": (self.offline_after_s, 0.1, 86_400.0),
            "dedupe_window_s": (self.dedupe_window_s, 0.0, 86_400.0),
            "timeout_s": (self.timeout_s, 0.1, 600.0),
            "retries": (self.retries, 0, 100),
            "backoff_s": (self.backoff_s, 0.01, 3600.0),
            "backoff_max_s": (self.backoff_max_s, 0.01, 86_400.0),
            "queue": (self.queue, 1, 1_000_000),
        }
        for key, (value, low, high) in bounds.items():
            if isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"alerts.{key} must be {low}..{high}, got {value!r}")


def alerts_from_dict(raw: Any) -> AlertsConfig:
    """``[alerts]`` with its ``[[alerts.webhook]]`` tables."""
    if not isinstance(raw, dict):
        raise ConfigError("[alerts] must be a table")
    known = {f.name for f in fields(AlertsConfig)} - {"webhooks"} | {"webhook"}
    for key in raw:
        if key not in known:
            shown = key if isinstance(key, str) and key.isprintable() else repr(key)
            raise ConfigError(f"unknown key alerts.{shown} (known: {', '.join(sorted(known))})")
    hooks = raw.get("webhook", [])
    if isinstance(hooks, dict):
        hooks = [hooks]
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        raise ConfigError("alerts.webhook must be [[alerts.webhook]] tables (url, format, headers, chat_id)")
    for h in hooks:
        if "url" not in h:
            raise ConfigError("alerts.webhook: every [[alerts.webhook]] needs a url")
    webhooks = tuple(_section("alerts.webhook", WebhookConfig, h) for h in hooks)
    rest = {k: v for k, v in raw.items() if k != "webhook"}
    kinds = rest.pop("kinds", None)
    if kinds is not None:
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError(f"alerts.kinds must be a list of names, e.g. {list(ALERT_KINDS[:2])}")
        rest["kinds"] = tuple(kinds)
    for key in ("offline_after_s", "dedupe_window_s", "timeout_s", "backoff_s", "backoff_max_s"):
        v = rest.get(key)
        if key in rest and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ConfigError(f"alerts.{key} must be a number of seconds, got {v!r}")
    for key in ("retries", "queue"):
        v = rest.get(key)
        if key in rest and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"alerts.{key} must be a whole number, got {v!r}")
    try:
        return AlertsConfig(webhooks=webhooks, **rest)
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"[alerts]: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """OpenTelemetry traces: one trace per trade from the master to every slave, exported by OTLP."""

    endpoint: str = ""
    """OTLP/HTTP traces URL (``http://HOST:4318/v1/traces``); empty: no traces (they cost nothing then)."""
    protocol: Literal["http/protobuf"] = "http/protobuf"
    sampling: float = 1.0
    """Share of trades traced, 0..1 (decided by the trace id, so every process agrees)."""
    service_name: str = ""
    """Overrides ``service.name`` (echo-core, echo-agent or echo for all-in-one)."""

    def __post_init__(self) -> None:
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"telemetry.endpoint must be an http:// or https:// URL, got {self.endpoint!r}")
        if self.protocol != "http/protobuf":
            raise ConfigError(f"telemetry.protocol must be http/protobuf, got {self.protocol!r}")
        if isinstance(self.sampling, bool) or not 0.0 <= self.sampling <= 1.0:
            raise ConfigError(f"telemetry.sampling must be 0..1, got {self.sampling!r}")
        if len(self.service_name) > 100 or not self.service_name.isprintable():
            raise ConfigError("telemetry.service_name must be printable, at most 100 characters")


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("console", "json"):
            raise ConfigError(f"log.format must be console or json, got {self.format!r}")
        if self.level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log.level must be debug|info|warning|error, got {self.level!r}")


@dataclass(frozen=True, slots=True)
class Config:
    core: CoreConfig = field(default_factory=CoreConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    protocol: ProtocolPolicy = field(default_factory=ProtocolPolicy)
    symbols: SymbolCatalog = field(default_factory=SymbolCatalog)
    split: SplitConfig = field(default_factory=SplitConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    policy: Policies | None = None
    """Per-account copy policies; None: every account uses ``core.fixed_lot`` and ``core.copy_sl_tp``."""

    def policies(self) -> Policies:
        if self.policy is not None:
            return self.policy
        return Policies(Policy(fixed_lot=self.core.fixed_lot, copy_sl_tp=self.core.copy_sl_tp))


T = TypeVar("T")

_SECTIONS: dict[str, type[Any]] = {
    "core": CoreConfig,
    "agent": AgentConfig,
    "store": StoreConfig,
    "log": LogConfig,
    "delivery": DeliverySettings,
    "protocol": ProtocolPolicy,
    "symbols": SymbolCatalog,
    "split": SplitConfig,
    "router": RouterConfig,
    "metrics": MetricsConfig,
    "telemetry": TelemetryConfig,
}


def _check_type(key: str, value: Any, annotation: str) -> None:
    simple = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}
    base = annotation.split(" ")[0]
    expected = simple.get(base)
    if expected is None:
        return
    if isinstance(value, bool) and bool not in expected:
        raise ConfigError(f"{key} must be {base}, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key} must be {base}, got {type(value).__name__} {value!r}")


def _section(name: str, cls: type[T], raw: Any) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {name}.{key} (known: {', '.join(sorted(known))})")
    for key, value in raw.items():
        _check_type(f"{name}.{key}", value, str(known[key].type))
    if name == "core" and "follow" in raw:
        follow = raw["follow"]
        if not isinstance(follow, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in follow.values()
        ):
            raise ConfigError("core.follow must map master account -> list of slave accounts")
    try:
        return cls(**raw)
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: an integer too big for a float
        raise ConfigError(f"[{name}]: {exc}") from exc


def config_from_dict(raw: dict[str, Any]) -> Config:
    known = [*_SECTIONS, "policy", "alerts"]
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown section [{key}] (known: {', '.join(sorted(known))})")
    sections: dict[str, Any] = {
        name: _section(name, cls, raw[name]) for name, cls in _SECTIONS.items() if name in raw
    }
    if "alerts" in raw:
        sections["alerts"] = alerts_from_dict(raw["alerts"])
    config = Config(**sections)
    if "policy" in raw:
        # [core] fixed_lot / copy_sl_tp are the defaults [policy.default] starts from
        base = Policy(fixed_lot=config.core.fixed_lot, copy_sl_tp=config.core.copy_sl_tp)
        config = Config(**sections, policy=policies_from_dict(raw["policy"], base))
    return config
