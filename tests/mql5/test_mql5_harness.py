"""The harness's MQL5 mode and Core's side of MT5 slaves: what the translator refuses in a ``.mq5`` source
(with file and line), where its includes come from, the MT5 shim's allowed-hosts rule and filling modes as
the compiled slave meets them, and Core's verdict on an account's position mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from echo.domain import messages as m
from echo.domain.registration import ProtocolPolicy, SymbolCatalog, evaluate
from echo.domain.types import Role, SymbolSpec
from tests.mql4.harness_support import HARNESS, MQL4
from tests.mql5.conftest import MQL5

_spec = importlib.util.spec_from_file_location("translate", HARNESS / "translate.py")
assert _spec is not None and _spec.loader is not None
translate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(translate)


def mq5(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "T.mq5"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        ('#import "ws2_32.dll"', "T.mq5:2: #import is outside the Echo MQL5 subset"),
        ("double b = MarketInfo(s, 9);", "T.mq5:2: MarketInfo is MQL4; MQL5 has no such function"),
        ("int n = OrdersHistoryTotal();", "T.mq5:2: OrdersHistoryTotal is MQL4"),
        ("long a = AccountNumber();", "T.mq5:2: AccountNumber is MQL4"),
        ("class Trade {};", "T.mq5:2: classes are outside"),
    ],
)
def test_mql5_sources_outside_the_subset_are_refused_with_file_and_line(
    tmp_path: Path, line: str, refusal: str
) -> None:
    with pytest.raises(translate.TranslateError, match=refusal.replace("(", r"\(")):
        translate.translate(mq5(tmp_path, f"// first\n{line}\n"))


def test_an_mql5_ea_shares_the_mql4_includes_and_runs_on_the_mt5_terminal() -> None:
    cpp = translate.translate(MQL5 / "EchoSlave.mq5")
    assert cpp.startswith("// Generated from EchoSlave.mq5") and '#include "mt5_terminal.hpp"' in cpp
    # the JSON and the terminal id are the MQL4 EAs' own files, found through the shared include path
    shared = (MQL4 / "Include" / "Echo" / "Json.mqh").read_text(encoding="utf-8")
    assert (
        "string JsonEscape(const string value)" in shared and "string JsonEscape(const string value)" in cpp
    )
    assert not (MQL5 / "Include" / "Echo" / "Json.mqh").exists()
    assert "SocketCreate()" in cpp and "ws2_32" not in cpp and "CreateFileW" not in cpp
    # the same names in an MQL4 source are MQL4's: its includes only, the MT4 terminal
    assert '#include "mt4_terminal.hpp"' in translate.translate(MQL4 / "EchoSlave.mq4")


def run(exe: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    (home / "files").mkdir()
    (home / "broker.txt").write_text(
        "account 777 USD 1000 100\nsymbol EURUSD 5 0.00001 0.00001 0.01 50 0.01 10 100000 1.0 1.1 1.1001\n",
        encoding="utf-8",
    )
    base = {k: v for k, v in os.environ.items() if k != "ECHO_ALLOWED_HOSTS"}
    return subprocess.run(
        [str(exe)],
        env={
            **base,
            "ECHO_BROKER": str(home / "broker.txt"),
            "ECHO_FILES": str(home / "files"),
            "ECHO_RUN_MS": "300",
            "ECHO_INPUT_TcpPort": "9",  # nothing listens there
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


def test_without_127_0_0_1_among_the_allowed_hosts_the_slave_says_what_to_add(
    slave5_exe: Path, tmp_path: Path
) -> None:
    refused = run(slave5_exe, tmp_path / "a").stderr.splitlines()
    assert refused == [
        "EchoSlave: the terminal does not allow connections to 127.0.0.1: add 127.0.0.1 to Tools > Options > "
        "Expert Advisors > 'Allow WebRequest for listed URL'"
    ]  # once, not on every attempt
    allowed = run(slave5_exe, tmp_path / "b", ECHO_ALLOWED_HOSTS="10.0.0.1,127.0.0.1").stderr
    assert "no Echo agent at 127.0.0.1:9 (error 5272)" in allowed and "allow" not in allowed


GOLD = SymbolSpec("XAUUSD.pro", "XAUUSD.pro", 2, 0.01, 0.01, 0.1, 50.0, 0.1, 50)


@pytest.mark.parametrize(
    ("features", "status"),
    [
        (["spec_report/v1", "mt5/v1", "position_mode/hedging"], m.RegistrationStatus.ACCEPTED),
        (["spec_report/v1"], m.RegistrationStatus.ACCEPTED),  # an MT4 EA does not say: MT4 always hedges
        (["spec_report/v1", "mt5/v1", "position_mode/netting"], m.RegistrationStatus.REJECTED),
    ],
)
def test_core_refuses_a_netting_account_and_says_why(
    features: list[str], status: m.RegistrationStatus
) -> None:
    hs = m.Handshake("52666", Role.SLAVE, 2, capabilities=m.Capabilities(features=features), symbols=[GOLD])
    ev = evaluate(
        hs,
        ProtocolPolicy(),
        SymbolCatalog(),
        agent_id="agent-1",
        core_version="0.1.0",
        evaluation_id="019aba59-35c5-725d-ba82-d12d8748d738",
        now_ms=5,
    )
    assert ev.status is status
    if status is m.RegistrationStatus.REJECTED:
        assert [e.code for e in ev.result.errors] == ["POSITION_MODE_NETTING"]
        assert "hedging account" in ev.result.errors[0].message and ev.symbols == {}
