"""The configuration as a flat key tree (etcd, RFC-001 section 5) and back to the TOML shape.

One value per key, JSON-encoded (a bare word that is not JSON is read as a string, so
``etcdctl put /echo/core/symbols/unknown_action reject`` works). The tree:

    /echo/core/{fixed_lot,copy_sl_tp,follow,dedupe_window_ms}
    /echo/core/delivery/{ack_timeout_ms,retry_backoff_ms,max_retries,heartbeat_interval_ms}
    /echo/core/protocol/{min_version,max_version,blocked_versions,required_features}
    /echo/core/canonical_symbols                 [symbols] canonical
    /echo/core/symbols/unknown_action            [symbols] unknown_action
    /echo/core/router/{worker_pool_size,queue_depth_max,max_in_flight,max_behind_ms,...}   [router]
    /echo/agent/*, /echo/store/*, /echo/log/*, /echo/split/*, /echo/metrics/*
    /echo/alerts/*                               [alerts]; /echo/alerts/webhook: a JSON list of tables
    /echo/policy/{account_id|default}/{max_spread,max_slippage,max_delay_ms,copy_sl_tp,sl_offset,...}
    /echo/windows/{account_id|default}/{symbol}/{start_utc,end_utc,pre_buffer_sec,post_buffer_sec}

Keys are also named in dotted form (``policy.51001.max_spread``, ``delivery.ack_timeout_ms``) by the CLI;
``dotted_to_key`` and ``key_to_dotted`` translate."""

from __future__ import annotations

import json
from typing import Any

from echo.domain.errors import ConfigError

PREFIX = "/echo/"

_SECTION_PATHS: list[tuple[str, str]] = [
    # (key prefix, TOML section), most specific first
    ("core/delivery/", "delivery"),
    ("core/protocol/", "protocol"),
    ("core/symbols/", "symbols"),
    ("core/router/", "router"),
    ("core/", "core"),
    ("agent/", "agent"),
    ("store/", "store"),
    ("log/", "log"),
    ("split/", "split"),
    ("metrics/", "metrics"),
    ("telemetry/", "telemetry"),
    ("alerts/", "alerts"),
]
_WINDOW_FIELDS = ("start_utc", "end_utc", "pre_buffer_sec", "post_buffer_sec")


def encode_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def decode_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError as exc:  # json recurses once per nested array or object
        raise ConfigError("a JSON value nested too deep to read") from exc


def _segment(value: str, what: str) -> str:
    if not value or "/" in value:
        raise ConfigError(f"{what} {value!r} cannot be an etcd key segment")
    return value


def to_tree(raw: dict[str, Any]) -> dict[str, str]:
    """A TOML-shaped configuration as etcd keys and JSON values."""
    tree: dict[str, str] = {}
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        if section == "policy":
            for account, policy in table.items():
                if not isinstance(policy, dict):
                    raise ConfigError(f"[policy.{account}] must be a table")
                acc = _segment(str(account), "account")
                for key, value in policy.items():
                    if key != "windows":
                        tree[f"{PREFIX}policy/{acc}/{key}"] = encode_value(value)
                        continue
                    seen: set[str] = set()
                    for window in value if isinstance(value, list) else []:
                        symbol = _segment(str(window.get("symbol", "")), "window symbol")
                        if symbol in seen:
                            raise ConfigError(
                                f"policy.{account}.windows: etcd holds one window per account and symbol "
                                f"({symbol} twice)"
                            )
                        seen.add(symbol)
                        for field, v in window.items():
                            if field != "symbol":
                                tree[f"{PREFIX}windows/{acc}/{symbol}/{field}"] = encode_value(v)
            continue
        if section == "symbols":
            for key, value in table.items():
                path = "core/canonical_symbols" if key == "canonical" else f"core/symbols/{key}"
                tree[PREFIX + path] = encode_value(value)
            continue
        prefix = next((p for p, s in _SECTION_PATHS if s == section), None)
        if prefix is None:
            raise ConfigError(f"unknown section [{section}]")
        for key, value in table.items():
            tree[f"{PREFIX}{prefix}{key}"] = encode_value(value)
    return tree


def from_tree(tree: dict[str, str]) -> dict[str, Any]:
    """etcd keys under ``/echo/`` as a TOML-shaped configuration (to be validated by ``config_from_dict``).
    A key outside the known tree is a ConfigError naming it."""
    raw: dict[str, Any] = {}
    windows: dict[tuple[str, str], dict[str, Any]] = {}
    for key in sorted(tree):
        if not key.startswith(PREFIX):
            continue
        try:
            path, value = key[len(PREFIX) :], decode_value(tree[key])
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        parts = path.split("/")
        if path == "core/canonical_symbols":
            raw.setdefault("symbols", {})["canonical"] = value
        elif parts[0] == "policy" and len(parts) == 3 and parts[1] and parts[2]:
            raw.setdefault("policy", {}).setdefault(parts[1], {})[parts[2]] = value
        elif parts[0] == "windows" and len(parts) == 4 and all(parts[1:]) and parts[3] in _WINDOW_FIELDS:
            windows.setdefault((parts[1], parts[2]), {"symbol": parts[2]})[parts[3]] = value
        else:
            for prefix, section in _SECTION_PATHS:
                rest = path[len(prefix) :]
                if path.startswith(prefix) and rest and "/" not in rest:
                    raw.setdefault(section, {})[rest] = value
                    break
            else:
                raise ConfigError(f"{key}: not a configuration key (see the key tree in the README)")
    for (account, _symbol), window in sorted(windows.items()):
        raw.setdefault("policy", {}).setdefault(account, {}).setdefault("windows", []).append(window)
    return raw


def dotted_to_key(dotted: str) -> str:
    """``policy.51001.max_spread`` -> ``/echo/policy/51001/max_spread`` (and so on for every section)."""
    if dotted.startswith(PREFIX):
        return dotted
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{dotted!r}: expected SECTION.KEY (e.g. delivery.ack_timeout_ms)")
    if parts[0] == "policy" and len(parts) == 3:
        return f"{PREFIX}policy/{parts[1]}/{parts[2]}"
    if len(parts) == 2:
        tree = to_tree({parts[0]: {parts[1]: None}})
        return next(iter(tree))
    raise ConfigError(f"{dotted!r}: not a configuration key")


def key_to_dotted(key: str) -> str:
    raw = from_tree({key: "null"})
    section = next(iter(raw))
    table = raw[section]
    inner = next(iter(table))
    if section == "policy":
        return f"policy.{inner}.{next(iter(table[inner]))}"
    return f"{section}.{inner}"
