"""Handshake evaluation: protocol versions, features, the symbol catalog, duplicates, master mappings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.domain import messages as m
from echo.domain.config import ConfigError, config_from_dict
from echo.domain.registration import ProtocolPolicy, SymbolCatalog, evaluate, worst
from echo.domain.types import Role, SymbolSpec

GOLD = SymbolSpec("XAUUSD.m", "XAUUSD.m", 2, 0.01, 0.01, 0.01, 50.0, 0.01, 30)
DAX = SymbolSpec("GER30.x", "GER30.x", 1, 0.1, 0.1, 0.1, 50.0, 0.1, 20)
A = m.RegistrationStatus.ACCEPTED
W = m.RegistrationStatus.WARNING
R = m.RegistrationStatus.REJECTED


def slave(version: int = 2, symbols: list[SymbolSpec] | None = None, **kw: object) -> m.Handshake:
    return m.Handshake(
        "51001", Role.SLAVE, version, symbols=[GOLD, DAX] if symbols is None else symbols, **kw
    )  # type: ignore[arg-type]


def judge(hs: m.Handshake, protocol: ProtocolPolicy | None = None, catalog: SymbolCatalog | None = None):  # type: ignore[no-untyped-def]
    return evaluate(
        hs,
        protocol or ProtocolPolicy(),
        catalog or SymbolCatalog(),
        agent_id="agent-1",
        core_version="0.1.0",
        evaluation_id="019aba59-35c5-725d-ba82-d12d8748d738",
        now_ms=5,
    )


def test_a_clean_handshake_is_accepted_with_every_symbol_usable() -> None:
    ev = judge(slave())
    assert ev.status is A and sorted(ev.symbols) == ["GER30", "XAUUSD"]
    assert [(e.canonical_symbol, e.broker_symbol, e.status) for e in ev.result.symbols] == [
        ("XAUUSD", "XAUUSD.m", A),
        ("GER30", "GER30.x", A),
    ]
    assert (ev.result.account_id, ev.result.pipe_role, ev.result.agent_id) == ("51001", Role.SLAVE, "agent-1")


@pytest.mark.parametrize(
    ("version", "protocol", "status", "code"),
    [
        (1, ProtocolPolicy(), W, "PROTOCOL_VERSION_LEGACY"),
        (1, ProtocolPolicy(min_version=2), R, "PROTOCOL_VERSION_UNSUPPORTED"),
        (2, ProtocolPolicy(blocked_versions=(2,)), R, "PROTOCOL_VERSION_UNSUPPORTED"),
        (2, ProtocolPolicy(), A, None),
    ],
)
def test_protocol_versions(
    version: int, protocol: ProtocolPolicy, status: m.RegistrationStatus, code: str | None
) -> None:
    ev = judge(slave(version), protocol)
    assert ev.status is status
    codes = [i.code for i in (*ev.result.errors, *ev.result.warnings)]
    assert codes == ([code] if code else [])
    if status is R:
        assert ev.symbols == {}, "a rejected account trades nothing"


def test_missing_required_features_and_a_bad_semver_warn_but_keep_the_account() -> None:
    hs = slave(capabilities=m.Capabilities(["quotes/250ms"]), client_semver="1.5")
    ev = judge(hs, ProtocolPolicy(required_features=("spec_report/v1", "quotes/250ms")))
    assert ev.status is W and ev.symbols
    assert {i.code: i.metadata for i in ev.result.warnings} == {
        "CLIENT_SEMVER_INVALID": {"client_semver": "1.5"},
        "FEATURE_MISSING": {"features": "spec_report/v1"},
    }


def test_duplicate_canonical_symbols_reject_the_whole_report() -> None:
    ev = judge(
        slave(symbols=[GOLD, SymbolSpec("XAUUSDpro", "XAUUSDpro", 2, 0.01, 0.01, 0.01, 50.0, 0.01, 30), DAX])
    )
    assert ev.status is R and ev.symbols == {}
    assert [i.code for i in ev.result.errors] == ["DUPLICATE_CANONICAL"]
    assert [e.status for e in ev.result.symbols] == [R, R, A]


@pytest.mark.parametrize(("action", "entry", "usable"), [("warn", W, True), ("reject", R, False)])
def test_symbols_outside_the_catalog(action: str, entry: m.RegistrationStatus, usable: bool) -> None:
    ev = judge(slave(), catalog=SymbolCatalog(frozenset({"xauusd"}), action))  # type: ignore[arg-type]
    gold, dax = ev.result.symbols
    assert gold.status is A and dax.status is entry
    assert [i.code for i in (*dax.errors, *dax.warnings)] == ["CANONICAL_NOT_ALLOWED"]
    assert ("GER30" in ev.symbols) is usable and ("GER30" in ev.rejected_symbols) is not usable
    assert ev.status is W, "a rejected symbol does not reject the account"


def test_a_master_is_judged_on_its_mapping_targets() -> None:
    hs = m.Handshake("9001", Role.MASTER, 2, symbol_mappings={"XAUUSD.r": "XAUUSD", "DE30": "GER30"})
    ev = judge(hs, catalog=SymbolCatalog(frozenset({"XAUUSD"}), "reject"))
    assert [(e.broker_symbol, e.canonical_symbol, e.status) for e in ev.result.symbols] == [
        ("DE30", "GER30", R),
        ("XAUUSD.r", "XAUUSD", A),
    ]


@given(st.lists(st.sampled_from([A, W, R]), max_size=6))
def test_worst_is_the_maximum_by_severity(statuses: list[m.RegistrationStatus]) -> None:
    got = worst(statuses)
    assert got is (R if R in statuses else W if W in statuses else A)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"protocol": {"min_version": 0}}, "protocol.min_version must be 1..2"),
        ({"protocol": {"min_version": 2, "max_version": 1}}, "above max_version"),
        ({"protocol": {"blocked_versions": [1, 2]}}, "leaves no version"),
        ({"protocol": {"required_features": "spec_report/v1"}}, "must be a list"),
        ({"symbols": {"unknown_action": "ignore"}}, "warn or reject"),
        ({"symbols": {"canonical": "XAUUSD"}}, "list of symbols"),
        ({"symbols": {"catalog": []}}, "unknown key symbols.catalog"),
    ],
)
def test_bad_protocol_and_symbol_settings_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)
