"""Configuration (echo.domain.config and the TOML file adapter): defaults, the example file kept in step with
the code, and every unknown key or bad value rejected by name."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.adapters.config.file import load_toml
from echo.domain.config import (
    AgentConfig,
    Config,
    ConfigError,
    CoreConfig,
    DeliverySettings,
    LogConfig,
    StoreConfig,
    config_from_dict,
)
from echo.domain.config_tree import from_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "echo.example.toml"
_COMMENTED_KEY = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*\s*=.*)$")


def _example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ defaults


def test_empty_dict_gives_the_defaults() -> None:
    config = config_from_dict({})
    assert config == Config()
    assert config.core == CoreConfig(fixed_lot=0.10, copy_sl_tp=True, follow={})
    assert config.agent == AgentConfig("agent-1", "var/echo.sock", 1 << 20, 4096)
    assert config.store == StoreConfig("sqlite:///var/echo.db", "FULL")
    assert config.log == LogConfig("console", "info", None)
    assert config.delivery == DeliverySettings(1000, 500, 100, 2000)


def test_empty_sections_give_the_defaults() -> None:
    assert config_from_dict({"core": {}, "agent": {}, "store": {}, "log": {}, "delivery": {}}) == Config()


def test_config_is_frozen() -> None:
    config = config_from_dict({})
    with pytest.raises(AttributeError):
        config.core.fixed_lot = 1.0  # type: ignore[misc]


# ----------------------------------------------------------------------------------------- the example file


def test_example_file_loads() -> None:
    raw = tomllib.loads(_example_text())
    assert raw, "the example documents at least one section"
    config = config_from_dict(raw)
    for section, keys in raw.items():
        if section == "policy":
            continue
        for key, value in keys.items():
            actual = getattr(getattr(config, section), key)
            if isinstance(value, list):  # lists load as tuples or sets
                actual, value = sorted(actual), sorted(value)
            assert actual == value, f"{section}.{key}"
    policies = config.policies()
    for account, keys in raw["policy"].items():
        policy = policies.default if account == "default" else policies.for_account(account)
        for key, value in keys.items():
            if key != "windows":
                assert getattr(policy, key) == value, f"policy.{account}.{key}"
        assert len(policy.windows) == len(keys.get("windows", []))


def test_example_file_loads_through_load_toml() -> None:
    assert load_toml(EXAMPLE) == config_from_dict(tomllib.loads(_example_text()))


def test_example_file_shows_the_defaults() -> None:
    """The example documents the defaults; a value changed in one place only would mislead."""
    config = config_from_dict(tomllib.loads(_example_text()))
    assert dataclasses.replace(config, policy=None) == Config()
    # [policy.default] shows the defaults too; the account table after it is an example
    assert config.policies().default == Config().policies().default


def test_example_file_commented_keys_load_too() -> None:
    """Keys shown commented out (``# follow = {...}``) are documentation too: uncommented, they load."""
    lines = _example_text().splitlines()
    uncommented = [(m.group(1) if (m := _COMMENTED_KEY.match(line)) else line) for line in lines]
    assert uncommented != lines, "the example shows no commented-out key any more; drop this test"
    raw = tomllib.loads("\n".join(uncommented))
    config = config_from_dict(raw)
    assert config.core.follow == raw["core"]["follow"]
    assert config.core.follow, "the commented follow example is not empty"


def test_example_file_keys_are_all_known() -> None:
    raw = tomllib.loads(_example_text())
    known = {
        f.name: {g.name for g in fields(getattr(Config(), f.name))}
        for f in fields(Config)
        if f.name != "policy"
    }
    known["policy"] = set(raw.get("policy", {}))  # account tables: checked by config_from_dict below
    assert config_from_dict(raw).policy is not None, "the example shows policies"
    for section, keys in raw.items():
        assert section in known
        assert set(keys) <= known[section], section


# ------------------------------------------------------------------------------------------ accepted values


@pytest.mark.parametrize(
    ("raw", "section", "key", "value"),
    [
        ({"core": {"fixed_lot": 1}}, "core", "fixed_lot", 1),  # an int is a fine float
        ({"core": {"fixed_lot": 0.01}}, "core", "fixed_lot", 0.01),
        ({"core": {"copy_sl_tp": False}}, "core", "copy_sl_tp", False),
        ({"core": {"follow": {"9001": ["51001"]}}}, "core", "follow", {"9001": ["51001"]}),
        ({"core": {"follow": {"9001": []}}}, "core", "follow", {"9001": []}),
        ({"agent": {"agent_id": "agent_2.eu-west"}}, "agent", "agent_id", "agent_2.eu-west"),
        ({"agent": {"max_line_bytes": 4096}}, "agent", "max_line_bytes", 4096),
        ({"agent": {"outbox_lines": 16}}, "agent", "outbox_lines", 16),
        ({"agent": {"pipe_name": "echo-eu.1"}}, "agent", "pipe_name", "echo-eu.1"),
        (
            {"agent": {"pipe_users": "PC\\trader, S-1-5-21-1-2-3-1001"}},
            "agent",
            "pipe_users",
            "PC\\trader, S-1-5-21-1-2-3-1001",
        ),
        ({"store": {"url": "memory://"}}, "store", "url", "memory://"),
        ({"store": {"url": "sqlite:////abs/echo.db"}}, "store", "url", "sqlite:////abs/echo.db"),
        ({"store": {"synchronous": "NORMAL"}}, "store", "synchronous", "NORMAL"),
        ({"store": {"retention_days": 7}}, "store", "retention_days", 7),
        ({"log": {"format": "json"}}, "log", "format", "json"),
        ({"log": {"level": "debug"}}, "log", "level", "debug"),
        ({"log": {"file": "var/echo.log"}}, "log", "file", "var/echo.log"),
        ({"delivery": {"ack_timeout_ms": 50}}, "delivery", "ack_timeout_ms", 50),
        ({"delivery": {"ack_timeout_ms": 600_000}}, "delivery", "ack_timeout_ms", 600_000),
        ({"delivery": {"retry_backoff_ms": 10}}, "delivery", "retry_backoff_ms", 10),
        ({"delivery": {"max_retries": 1}}, "delivery", "max_retries", 1),
        ({"delivery": {"max_retries": 10_000}}, "delivery", "max_retries", 10_000),
        ({"delivery": {"heartbeat_interval_ms": 100}}, "delivery", "heartbeat_interval_ms", 100),
        ({"delivery": {"heartbeat_interval_ms": 60_000}}, "delivery", "heartbeat_interval_ms", 60_000),
    ],
)
def test_accepts(raw: dict[str, Any], section: str, key: str, value: object) -> None:
    assert getattr(getattr(config_from_dict(raw), section), key) == value


# ------------------------------------------------------------------------------------------ rejected values


def _rejects(raw: dict[str, Any], *named: str) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    for name in named:
        assert name in message, f"{name!r} not named in {message!r}"
    return message


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"cores": {}}, ["[cores]", "core", "delivery"]),
        ({"core": {}, "etcd": {"url": "x"}}, ["[etcd]"]),
        ({"core": {"fixed_lots": 0.1}}, ["core.fixed_lots", "fixed_lot"]),
        ({"agent": {"socket": "x"}}, ["agent.socket", "socket_path"]),
        ({"store": {"path": "x"}}, ["store.path"]),
        ({"log": {"colour": True}}, ["log.colour"]),
        ({"delivery": {"timeout_ms": 100}}, ["delivery.timeout_ms", "ack_timeout_ms"]),
    ],
)
def test_rejects_unknown_sections_and_keys(raw: dict[str, Any], named: list[str]) -> None:
    message = _rejects(raw, *named)
    assert "unknown" in message


@pytest.mark.parametrize("section", ["core", "agent", "store", "log", "delivery"])
@pytest.mark.parametrize("value", [1, "x", ["a"], True])
def test_rejects_a_section_that_is_not_a_table(section: str, value: object) -> None:
    _rejects({section: value}, f"[{section}]")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"core": {"fixed_lot": "0.1"}}, "core.fixed_lot"),  # a string for a float
        ({"core": {"fixed_lot": True}}, "core.fixed_lot"),  # a bool is no number
        ({"core": {"copy_sl_tp": "yes"}}, "core.copy_sl_tp"),
        ({"core": {"copy_sl_tp": 1}}, "core.copy_sl_tp"),
        ({"agent": {"agent_id": 1}}, "agent.agent_id"),
        ({"agent": {"max_line_bytes": True}}, "agent.max_line_bytes"),  # a bool for an int
        ({"agent": {"max_line_bytes": 65536.0}}, "agent.max_line_bytes"),  # a float for an int
        ({"agent": {"outbox_lines": "4096"}}, "agent.outbox_lines"),
        ({"agent": {"socket_path": 3}}, "agent.socket_path"),
        ({"agent": {"pipe_name": 3}}, "agent.pipe_name"),
        ({"agent": {"pipe_name": ""}}, "agent.pipe_name"),
        ({"agent": {"pipe_name": "a\\b"}}, "agent.pipe_name"),  # a name, not a path
        ({"agent": {"pipe_name": "x" * 201}}, "agent.pipe_name"),
        ({"agent": {"pipe_users": "a(b)"}}, "agent.pipe_users"),  # no SDDL in a name
        ({"agent": {"pipe_users": "x" * 257}}, "agent.pipe_users"),
        ({"agent": {"pipe_users": "tab\there"}}, "agent.pipe_users"),
        ({"store": {"url": 1}}, "store.url"),
        ({"log": {"file": 1}}, "log.file"),
        ({"delivery": {"ack_timeout_ms": True}}, "delivery.ack_timeout_ms"),
        ({"delivery": {"max_retries": 3.0}}, "delivery.max_retries"),
        ({"delivery": {"heartbeat_interval_ms": "2000"}}, "delivery.heartbeat_interval_ms"),
    ],
)
def test_rejects_wrong_types(raw: dict[str, Any], key: str) -> None:
    _rejects(raw, key)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"core": {"fixed_lot": 0}}, ["core.fixed_lot"]),
        ({"core": {"fixed_lot": 0.0}}, ["core.fixed_lot"]),
        ({"core": {"fixed_lot": -0.1}}, ["core.fixed_lot"]),
        ({"core": {"fixed_lot": float("nan")}}, ["core.fixed_lot"]),
        ({"core": {"fixed_lot": float("inf")}}, ["core.fixed_lot"]),
        ({"agent": {"agent_id": ""}}, ["agent_id"]),
        ({"agent": {"agent_id": "agent 1"}}, ["agent_id", "agent 1"]),
        ({"agent": {"max_line_bytes": 4095}}, ["agent.max_line_bytes"]),
        ({"agent": {"outbox_lines": 15}}, ["agent.outbox_lines"]),
        ({"agent": {"stall_ms": 999}}, ["agent.stall_ms", "999"]),
        ({"agent": {"stall_ms": 600_001}}, ["agent.stall_ms"]),
        ({"router": {"max_in_flight": 9}}, ["router.max_in_flight", "9"]),
        ({"router": {"max_in_flight": 1_000_001}}, ["router.max_in_flight"]),
        ({"router": {"max_in_flight": True}}, ["router.max_in_flight"]),
        ({"router": {"max_behind_ms": 9}}, ["router.max_behind_ms", "9"]),
        ({"router": {"max_behind_ms": 60_001}}, ["router.max_behind_ms"]),
        ({"store": {"url": "mysql://db/echo"}}, ["store.url", "mysql://db/echo"]),
        ({"store": {"url": "sqlite://relative.db"}}, ["store.url"]),
        ({"store": {"url": ""}}, ["store.url"]),
        ({"store": {"synchronous": "full"}}, ["store.synchronous"]),
        ({"store": {"synchronous": "OFF"}}, ["store.synchronous"]),
        ({"store": {"retention_days": 0}}, ["store.retention_days"]),
        ({"store": {"retention_days": 36_501}}, ["store.retention_days"]),
        ({"log": {"format": "text"}}, ["log.format", "text"]),
        ({"log": {"format": "JSON"}}, ["log.format"]),
        ({"log": {"format": 1}}, ["log.format"]),
        ({"log": {"level": "trace"}}, ["log.level", "trace"]),
        ({"telemetry": {"endpoint": "127.0.0.1:4318"}}, ["telemetry.endpoint", "127.0.0.1:4318"]),
        ({"telemetry": {"endpoint": "grpc://collector:4317"}}, ["telemetry.endpoint"]),
        ({"telemetry": {"protocol": "grpc"}}, ["telemetry.protocol", "grpc"]),
        ({"telemetry": {"sampling": 1.5}}, ["telemetry.sampling", "0..1"]),
        ({"telemetry": {"sampling": -0.1}}, ["telemetry.sampling"]),
        ({"telemetry": {"sampling": float("nan")}}, ["telemetry.sampling"]),
        ({"telemetry": {"sampling": True}}, ["telemetry.sampling"]),
        ({"telemetry": {"sampling": "all"}}, ["telemetry.sampling"]),
        ({"telemetry": {"service_name": "a\nb"}}, ["telemetry.service_name"]),
        ({"telemetry": {"service_name": "x" * 101}}, ["telemetry.service_name"]),
        ({"telemetry": {"exporter": "jaeger"}}, ["unknown key telemetry.exporter"]),
    ],
)
def test_rejects_bad_values(raw: dict[str, Any], named: list[str]) -> None:
    _rejects(raw, *named)


@pytest.mark.parametrize(
    ("key", "low", "high"),
    [
        ("ack_timeout_ms", 50, 600_000),
        ("retry_backoff_ms", 10, 600_000),
        ("max_retries", 1, 10_000),
        ("heartbeat_interval_ms", 100, 60_000),
    ],
)
def test_delivery_values_out_of_range(key: str, low: int, high: int) -> None:
    for bad in (low - 1, high + 1, 0, -1):
        _rejects({"delivery": {key: bad}}, f"delivery.{key}", f"{low}..{high}")
    for good in (low, high):
        assert getattr(config_from_dict({"delivery": {key: good}}).delivery, key) == good


@pytest.mark.parametrize(
    ("follow", "named"),
    [
        ({"90 01": ["51001"]}, ["account_id", "90 01"]),  # bad master id
        ({"": ["51001"]}, ["account_id"]),
        ({"9001": ["51001", "51/002"]}, ["account_id", "51/002"]),  # bad slave id
        ({"9001": ["x" * 65]}, ["account_id"]),
        ({"9001": "51001"}, ["core.follow"]),  # not a list
        ({"9001": [51001]}, ["core.follow"]),  # not strings
        (["9001"], ["core.follow"]),  # not a table
        ("9001=51001", ["core.follow"]),
    ],
)
def test_rejects_bad_follow(follow: object, named: list[str]) -> None:
    _rejects({"core": {"follow": follow}}, *named)


def test_a_bad_value_in_one_section_is_named_even_when_others_are_fine() -> None:
    _rejects({"core": {"fixed_lot": 0.2}, "log": {"format": "xml"}}, "log.format")


# ------------------------------------------------------------------------------------------------ followers


SLAVES = ["51003", "51001", "51002"]


def test_followers_empty_follow_is_every_slave_sorted() -> None:
    core = CoreConfig()
    assert core.followers("9001", SLAVES) == ["51001", "51002", "51003"]
    assert core.followers("any-master", SLAVES) == ["51001", "51002", "51003"]
    assert core.followers("9001", []) == []


def test_followers_only_listed_and_known_slaves() -> None:
    core = CoreConfig(follow={"9001": ["51002", "51009", "51001"], "9002": ["51003"], "9003": []})
    assert core.followers("9001", SLAVES) == ["51001", "51002"]  # 51009 is not known
    assert core.followers("9002", SLAVES) == ["51003"]
    assert core.followers("9003", SLAVES) == []
    assert core.followers("9004", SLAVES) == []  # an unlisted master has no followers
    assert core.followers("9001", []) == []


def test_followers_from_a_loaded_config() -> None:
    config = config_from_dict({"core": {"follow": {"9001": ["51003", "51001"]}}})
    assert config.core.followers("9001", SLAVES) == ["51001", "51003"]
    assert config.core.followers("9002", SLAVES) == []


# ---------------------------------------------------------------------------------------------- load_toml


def test_load_toml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_text(
        '[core]\nfixed_lot = 0.2\nfollow = { "9001" = ["51001"] }\n[log]\nformat = "json"\n'
        "[delivery]\nmax_retries = 7\n",
        encoding="utf-8",
    )
    config = load_toml(path)
    assert config.core.fixed_lot == 0.2
    assert config.core.follow == {"9001": ["51001"]}
    assert config.log.format == "json"
    assert config.delivery.max_retries == 7
    assert load_toml(str(path)) == config


def test_load_toml_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_text("", encoding="utf-8")
    assert load_toml(path) == Config()


def test_load_toml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "echo.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_toml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[core\nfixed_lot = 0.1\n",
        "[core]\nfixed_lot = \n",
        "[core]\nfixed_lot = 0.1\nfixed_lot = 0.2\n",
        "[core]\ncopy_sl_tp = yes\n",
    ],
)
def test_load_toml_invalid_toml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "echo.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert str(path) in str(info.value)


def test_load_toml_bad_value_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_text("[core]\nfixed_lot = -1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"core\.fixed_lot"):
        load_toml(path)


def test_load_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_bytes(b"[core]\nfixed_lot = 0.1 # \xff\n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert str(path) in str(info.value)


def test_load_toml_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_toml(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("shape", ["[{}]", "{a={}}"])
def test_load_toml_nested_too_deep_is_a_config_error(tmp_path: Path, depth: int, shape: str) -> None:
    path = tmp_path / "echo.toml"
    value = "[" * depth + "]" * depth if shape == "[{}]" else "{a=" * depth + "1" + "}" * depth
    path.write_text(f"[core]\nfixed_lot = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deep") as info:
        load_toml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_an_etcd_value_nested_too_deep_is_a_config_error_naming_its_key(depth: int) -> None:
    tree = {"/echo/core/follow": '{"1":' * depth + "1" + "}" * depth, "/echo/core/fixed_lot": "0.2"}
    with pytest.raises(ConfigError, match=r"/echo/core/follow: .*nested too deep"):
        from_tree(tree)


_GARBAGE_VALUES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.integers(1, 3000).map(lambda d: "[" * d + "]" * d),
    st.integers(1, 3000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(19, 6000).map(lambda n: "9" * n),
    st.sampled_from(["1e999", "-1e999", "NaN", "null", "true", '"x"', "[]", "{}", '{"51001": ["51002"]}']),
)


@settings(max_examples=400, deadline=None)
@given(
    values=st.dictionaries(
        st.sampled_from(
            [
                "/echo/core/fixed_lot",
                "/echo/core/follow",
                "/echo/core/canonical_symbols",
                "/echo/agent/token",
                "/echo/delivery/ack_timeout_ms",
                "/echo/policy/51001/risk_percent",
                "/echo/policy/default/sizing",
                "/echo/windows/51001/XAUUSD/start_utc",
                "/echo/protocol/blocked_versions",
                "/echo/nonsense",
            ]
        ),
        _GARBAGE_VALUES,
        max_size=4,
    )
)
def test_garbage_etcd_values_are_a_config_or_a_config_error(values: dict[str, str]) -> None:
    with contextlib.suppress(ConfigError):
        config_from_dict(from_tree(values))


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda k, v: f"[core]\n{k} = {v}\n",
            st.sampled_from(["fixed_lot", "follow", "x"]),
            _GARBAGE_VALUES,
        ),
    )
)
def test_garbage_toml_is_a_config_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("toml") / "echo.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):
        load_toml(path)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.dictionaries(
        st.sampled_from(["endpoint", "protocol", "sampling", "service_name", "nonsense"]),
        st.one_of(
            st.text(max_size=80),
            st.floats(),
            st.integers(),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=2),
            st.sampled_from(["http://127.0.0.1:4318/v1/traces", "https://tempo:4318", "http/protobuf"]),
        ),
        max_size=4,
    )
)
def test_garbage_telemetry_sections_are_a_config_or_one_config_error(raw: dict[str, Any]) -> None:
    try:
        telemetry = config_from_dict({"telemetry": raw}).telemetry
    except ConfigError as exc:
        assert "\n" not in str(exc) and "telemetry" in str(exc)
        return
    assert 0.0 <= telemetry.sampling <= 1.0
    assert telemetry.endpoint == "" or telemetry.endpoint.startswith(("http://", "https://"))
