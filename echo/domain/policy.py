"""Per-account copy policies (RFC-001 section 5) and no-trade windows, as validated values.

A policy answers, for one slave account: how to size an entry (fixed money risk from the stop distance,
a fixed lot, or a multiple of the master's lots), which limits an entry must pass (spread, slippage
against the master's fill, age of the intent), how stops are copied (offsets, a catastrophic stop) and
when no entry may be made at all (windows). ``[policy.default]`` applies to every account; a
``[policy."ACCOUNT"]`` table overrides it key by key.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from echo.domain.errors import ConfigError
from echo.domain.ids import parse_account_id
from echo.domain.types import normalize_symbol

Sizing = Literal["risk", "fixed_lot", "multiplier"]
MinLotAction = Literal["skip", "clamp"]

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Window:
    """No entries on ``symbol`` (canonical, or ``*`` for all) from ``start - pre_buffer`` to ``end +
    post_buffer``. ``start_utc``/``end_utc`` are either ISO-8601 UTC instants (one window, e.g. a news
    release) or ``HH:MM`` times (every day, e.g. the rollover; may cross midnight)."""

    symbol: str
    start_utc: str
    end_utc: str
    pre_buffer_sec: int = 0
    post_buffer_sec: int = 0
    daily: bool = field(init=False, default=False)
    start_ms: int = field(init=False, default=0)
    """Instant in ms, or ms after midnight for a daily window."""
    end_ms: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.symbol != "*":
            object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        for name in ("pre_buffer_sec", "post_buffer_sec"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 86_400:
                raise ConfigError(f"window {name} must be 0..86400 seconds, got {v!r}")
        start_daily, start = _parse_time(self.start_utc, "start_utc")
        end_daily, end = _parse_time(self.end_utc, "end_utc")
        if start_daily != end_daily:
            raise ConfigError("window start_utc and end_utc must both be HH:MM or both be instants")
        if not start_daily and end <= start:
            raise ConfigError(f"window end_utc {self.end_utc} must be after start_utc {self.start_utc}")
        if start_daily and start == end:
            raise ConfigError("a daily window needs start_utc != end_utc")
        object.__setattr__(self, "daily", start_daily)
        object.__setattr__(self, "start_ms", start)
        object.__setattr__(self, "end_ms", end)

    def applies_to(self, canonical: str) -> bool:
        return self.symbol in ("*", canonical)

    def blocks(self, now_ms: int) -> bool:
        """Whether ``now_ms`` falls inside the window including its buffers."""
        pre, post = self.pre_buffer_sec * 1000, self.post_buffer_sec * 1000
        if not self.daily:
            return self.start_ms - pre <= now_ms < self.end_ms + post
        # daily: the window (with buffers) as an interval of ms after midnight, possibly wrapping
        length = (self.end_ms - self.start_ms) % _DAY_MS + pre + post
        if length >= _DAY_MS:
            return True
        offset = (now_ms - (self.start_ms - pre)) % _DAY_MS
        return offset < length

    def describe(self) -> str:
        kind = "daily " if self.daily else ""
        return (
            f"{kind}{self.start_utc}..{self.end_utc} UTC on {self.symbol}"
            f" (-{self.pre_buffer_sec}s/+{self.post_buffer_sec}s)"
        )


def _parse_time(value: Any, key: str) -> tuple[bool, int]:
    if not isinstance(value, str):
        raise ConfigError(f"window {key} must be a string (HH:MM or an ISO-8601 UTC instant), got {value!r}")
    if len(value) == 5 and value[2] == ":":
        try:
            hours, minutes = int(value[:2]), int(value[3:])
        except ValueError:
            raise ConfigError(f"window {key} must be HH:MM, got {value!r}") from None
        if not (0 <= hours <= 23 and 0 <= minutes <= 59):
            raise ConfigError(f"window {key} must be HH:MM within a day, got {value!r}")
        return True, (hours * 60 + minutes) * 60_000
    try:
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"window {key} is neither HH:MM nor an ISO-8601 instant: {value!r}") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return False, int(instant.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Policy:
    """How one slave account copies. Prices and distances in the slave symbol's points."""

    sizing: Sizing = "fixed_lot"
    risk_fixed: float | None = None
    """Money risked per trade (account currency) when ``sizing = "risk"``."""
    risk_by_strategy: Mapping[str, float] = field(default_factory=dict)
    """strategy_id (or the master's magic number as text) -> money risked; overrides ``risk_fixed``."""
    fixed_lot: float = 0.10
    lot_multiplier: float = 1.0
    max_spread: float | None = None
    max_slippage: float | None = None
    max_delay_ms: int | None = None
    copy_sl_tp: bool = True
    sl_offset: float = 0.0
    """Points added to the stop-loss distance (positive: further from the entry)."""
    tp_offset: float = 0.0
    """Points added to the take-profit distance (positive: further from the entry)."""
    catastrophic_sl: float | None = None
    """A hard stop this many points from the entry when no stop-loss would be copied."""
    quote_max_age_ms: int = 5_000
    """A quote older than this does not count as the slave's price (limits that need one then omit)."""
    tick_value_max_age_ms: int = 60_000
    """Risk sizing omits the entry when the slave's last reported tick value is older than this."""
    windows: tuple[Window, ...] = ()
    min_lot_action: MinLotAction = "skip"
    """A size that rounds below the broker's ``min_lot``: ``skip`` omits the entry (``lot_below_min_lot``);
    ``clamp`` opens ``min_lot`` instead (RFC-001 section 6: "clamp [min_lot, max_lot]"), but only while
    that stays within ``max_risk_multiple`` of the size asked for."""
    max_risk_multiple: float = 1.5
    """With ``min_lot_action = "clamp"``: the most ``min_lot`` may be, as a multiple of the computed size
    (for risk sizing: of the configured risk). Beyond it the entry is omitted as with ``skip``."""

    def __post_init__(self) -> None:
        if self.sizing not in ("risk", "fixed_lot", "multiplier"):
            raise ConfigError(f"sizing must be risk, fixed_lot or multiplier, got {self.sizing!r}")
        if self.sizing == "risk" and self.risk_fixed is None and not self.risk_by_strategy:
            raise ConfigError('sizing = "risk" needs risk_fixed (or risk_by_strategy)')
        _range("risk_fixed", self.risk_fixed, 0.01, 10_000_000, optional=True)
        for strategy, risk in self.risk_by_strategy.items():
            _range(f"risk_by_strategy.{strategy}", risk, 0.01, 10_000_000)
        _range("fixed_lot", self.fixed_lot, 0.000001, 100_000)
        _range("lot_multiplier", self.lot_multiplier, 0.000001, 1_000)
        _range("max_spread", self.max_spread, 0, 1_000_000, optional=True)
        _range("max_slippage", self.max_slippage, 0, 1_000_000, optional=True)
        _range("max_delay_ms", self.max_delay_ms, 1, 86_400_000, optional=True, integer=True)
        _range("sl_offset", self.sl_offset, -1_000_000, 1_000_000)
        _range("tp_offset", self.tp_offset, -1_000_000, 1_000_000)
        _range("catastrophic_sl", self.catastrophic_sl, 1, 10_000_000, optional=True)
        _range("quote_max_age_ms", self.quote_max_age_ms, 100, 3_600_000, integer=True)
        _range("tick_value_max_age_ms", self.tick_value_max_age_ms, 1_000, 86_400_000, integer=True)
        if not isinstance(self.copy_sl_tp, bool):
            raise ConfigError(f"copy_sl_tp must be true or false, got {self.copy_sl_tp!r}")
        if self.min_lot_action not in ("skip", "clamp"):
            raise ConfigError(f"min_lot_action must be skip or clamp, got {self.min_lot_action!r}")
        _range("max_risk_multiple", self.max_risk_multiple, 1, 100)

    def risk_for(self, strategy_id: str, magic_number: int) -> float | None:
        return self.risk_by_strategy.get(
            strategy_id, self.risk_by_strategy.get(str(magic_number), self.risk_fixed)
        )

    def window_at(self, canonical: str, now_ms: int) -> Window | None:
        for w in self.windows:
            if w.applies_to(canonical) and w.blocks(now_ms):
                return w
        return None


def _range(
    key: str, value: Any, low: float, high: float, *, optional: bool = False, integer: bool = False
) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= float(value) <= high:
        raise ConfigError(f"{key} must be {low:g}..{high:g}, got {value!r}")


_POLICY_KEYS = {f.name for f in fields(Policy)}


@dataclass(frozen=True, slots=True)
class Policies:
    """The default policy and the per-account overrides, already merged."""

    default: Policy = field(default_factory=Policy)
    accounts: Mapping[str, Policy] = field(default_factory=dict)

    def for_account(self, account_id: str) -> Policy:
        return self.accounts.get(account_id, self.default)


def policy_from_dict(raw: Any, base: Policy, where: str) -> Policy:
    """``base`` with the keys of one ``[policy.X]`` table applied; errors name ``policy.X.key``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    for key in raw:
        if key not in _POLICY_KEYS:
            raise ConfigError(f"unknown key {where}.{key} (known: {', '.join(sorted(_POLICY_KEYS))})")
    changes = dict(raw)
    if "windows" in changes:
        windows = changes["windows"]
        if not isinstance(windows, list):
            raise ConfigError(f"{where}.windows must be a list of tables")
        built: list[Window] = []
        for i, w in enumerate(windows):
            if not isinstance(w, dict):
                raise ConfigError(f"{where}.windows[{i}] must be a table")
            try:
                built.append(Window(**w))
            except ConfigError as exc:
                raise ConfigError(f"{where}.windows[{i}]: {exc}") from None
            except TypeError as exc:
                raise ConfigError(f"{where}.windows[{i}]: {exc}") from None
        changes["windows"] = tuple(built)
    if "risk_by_strategy" in changes and not isinstance(changes["risk_by_strategy"], dict):
        raise ConfigError(f"{where}.risk_by_strategy must be a table of strategy -> money")
    if "risk_fixed" in changes and "sizing" not in changes and "risk_by_strategy" not in raw:
        changes["sizing"] = "risk"  # giving a risk amount means sizing by it
    try:
        return replace(base, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def policies_from_dict(raw: Any, base: Policy) -> Policies:
    """The ``[policy]`` section: ``default`` and one table per account id."""
    if not isinstance(raw, dict):
        raise ConfigError("[policy] must be a table of tables")
    default = policy_from_dict(raw.get("default", {}), base, "policy.default")
    accounts: dict[str, Policy] = {}
    for account, table in raw.items():
        if account == "default":
            continue
        try:
            parse_account_id(account)
        except ValueError as exc:
            raise ConfigError(f"[policy.{account}]: not an account id ({exc})") from None
        accounts[account] = policy_from_dict(table, default, f"policy.{account}")
    return Policies(default, accounts)
