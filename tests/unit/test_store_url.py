"""Store URLs (``echo.app.stores.parse_store_url``): the three forms, and a clear refusal of anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.app.stores import parse_store_url
from echo.domain.config import ConfigError


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
