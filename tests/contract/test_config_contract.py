"""The ConfigSource contract: every test runs against the TOML file and a throwaway etcd server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from echo.adapters.config.etcd import open_etcd
from echo.adapters.config.file import FileConfigSource
from echo.domain.config import ConfigError, config_from_dict
from echo.ports.config import ConfigSource
from tests.backends import etcd_server

RAW: dict[str, Any] = {
    "core": {"fixed_lot": 0.2, "follow": {"9001": ["51001", "51002"]}},
    "delivery": {"ack_timeout_ms": 800, "max_retries": 50},
    "protocol": {"min_version": 1, "blocked_versions": [], "required_features": ["spec_report/v1"]},
    "symbols": {"canonical": ["XAUUSD", "GER30"], "unknown_action": "reject"},
    "policy": {
        "default": {"max_spread": 40},
        "51001": {
            "risk_fixed": 100.0,
            "sl_offset": 20,
            "windows": [{"symbol": "*", "start_utc": "23:55", "end_utc": "00:10", "pre_buffer_sec": 0}],
        },
    },
}


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    with etcd_server() as url:
        yield url


@pytest.fixture(params=["file", pytest.param("etcd", marks=pytest.mark.etcd)])
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConfigSource]:
    if request.param == "file":
        path = tmp_path / "echo.toml"
        path.write_text("", encoding="utf-8")
        yield FileConfigSource(path, poll_s=0.05)
        return
    url = request.getfixturevalue("etcd_url")
    async with open_etcd(url) as etcd:
        await etcd.replace({})
        yield etcd


async def test_what_is_imported_reads_back_and_validates(source: ConfigSource) -> None:
    await source.replace(copy.deepcopy(RAW))
    raw = await source.read()
    assert raw == RAW
    config = config_from_dict(raw)
    assert config.policies().for_account("51001").windows[0].daily
    assert config.symbols.unknown_action == "reject"


async def test_get_and_set_by_dotted_key(source: ConfigSource) -> None:
    await source.replace(copy.deepcopy(RAW))
    assert await source.get("delivery.ack_timeout_ms") == 800
    assert await source.get("policy.51001.risk_fixed") == 100.0
    assert await source.get("delivery.heartbeat_interval_ms") is None
    await source.set("policy.51002.max_slippage", 15)
    await source.set("symbols.unknown_action", "warn")
    assert await source.get("policy.51002.max_slippage") == 15
    raw = await source.read()
    assert raw["policy"]["51002"] == {"max_slippage": 15} and raw["symbols"]["unknown_action"] == "warn"


async def test_a_bad_value_is_a_config_error_naming_the_key(source: ConfigSource) -> None:
    await source.replace(copy.deepcopy(RAW))
    await source.set("policy.51001.max_spread", -5)
    with pytest.raises(ConfigError, match=r"policy\.51001: max_spread must be"):
        config_from_dict(await source.read())


async def test_changes_are_watched(source: ConfigSource) -> None:
    await source.replace(copy.deepcopy(RAW))
    seen: list[dict[str, Any]] = []
    got = trio.Event()

    async def on_change(raw: dict[str, Any]) -> None:
        seen.append(raw)
        got.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(source.watch, on_change)
            await source.set("policy.51001.max_spread", 25)
            await got.wait()
            nursery.cancel_scope.cancel()
    assert seen[-1]["policy"]["51001"]["max_spread"] == 25
