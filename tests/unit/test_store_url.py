"""Store URLs (``echo.app.stores.parse_store_url``): the three forms, and a clear refusal of anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.app.stores import ledger_url, parse_store_url
from echo.domain.config import AgentConfig, Config, ConfigError, StoreConfig


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("memory://", "memory", None),
        ("sqlite:///var/echo.db", "sqlite", Path("var/echo.db")),
        ("sqlite:////abs/echo.db", "sqlite", Path("/abs/echo.db")),
        ("postgresql://echo@127.0.0.1:5432/echo", "postgres", None),
        ("postgres://echo@db/echo?schema=s1", "postgres", None),
    ],
)
def test_the_three_forms(url: str, kind: str, path: Path | None) -> None:
    where = parse_store_url(url)
    assert (where.kind, where.url, where.path) == (kind, url, path)


@pytest.mark.parametrize("url", ["", "memory:/", "sqlite://x.db", "mysql://db", "echo.db", "SQLITE:///x"])
def test_anything_else_is_refused_naming_the_forms(url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"unsupported store url .*sqlite:///PATH, postgresql://\.\.\. or memory://"
    ):
        parse_store_url(url)


@given(st.text())
def test_any_text_is_one_form_or_a_config_error(url: str) -> None:
    try:
        where = parse_store_url(url)
    except ConfigError:
        assert url != "memory://" and not url.startswith(("sqlite:///", "postgresql://", "postgres://"))
        return
    assert where.url == url
    assert (where.path is not None) == (where.kind == "sqlite")
    if where.path is not None:
        assert where.path == Path(url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("store", ["memory://", "sqlite:///var/echo.db", "postgresql://echo@db/echo"])
def test_the_all_in_one_ledger_is_in_memory_unless_configured(store: str) -> None:
    config = Config(store=StoreConfig(url=store), agent=AgentConfig(agent_id="a1"))
    assert ledger_url(config, all_in_one=True) == "memory://"
    configured = Config(
        store=StoreConfig(url=store), agent=AgentConfig(agent_id="a1", ledger_url="sqlite:///l.db")
    )
    assert ledger_url(configured, all_in_one=True) == "sqlite:///l.db"


def test_an_agent_alone_keeps_its_ledger_on_disk_beside_an_sqlite_store() -> None:
    config = Config(store=StoreConfig(url="sqlite:///var/echo.db"), agent=AgentConfig(agent_id="a1"))
    assert ledger_url(config) == "sqlite:///var/echo-a1-ledger.db"
