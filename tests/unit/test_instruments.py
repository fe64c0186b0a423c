"""The metrics' bookkeeping: counters summed by label set, and which omissions are missed trades."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.metrics import CallbackOptions

from echo.services import instruments as i


@pytest.fixture(autouse=True)
def served() -> Iterator[None]:
    """As once a meter provider is installed: the tallies count (until then an add does nothing)."""
    before, i.Tally.served = i.Tally.served, True
    yield
    i.Tally.served = before


def _totals(tally: i.Tally) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(o.attributes.items())): o.value for o in tally._observe(CallbackOptions())}  # type: ignore[union-attr]


def test_nothing_is_counted_until_a_meter_provider_is_installed() -> None:
    """In a fresh process (this one may have a provider already)."""
    script = (
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from echo.services import instruments as i\n"
        "i.COPIES.add(1, {'account': '1', 'symbol': 'X'})\n"
        "assert i.COPIES.values == {}, i.COPIES.values\n"
        "metrics.set_meter_provider(MeterProvider())\n"
        "i.COPIES.add(1, {'account': '1', 'symbol': 'X'})\n"
        "assert i.COPIES.values == {(('account', '1'), ('symbol', 'X')): 1}, i.COPIES.values\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_tally_sums_by_label_set_and_reports_every_set() -> None:
    tally = i.Tally("echo_test_things", "things")
    tally.add(1, {"account": "1", "reason": "x"})
    tally.add(2, {"account": "1", "reason": "x"})
    tally.add(0, {"account": "2", "reason": "x"})  # a series that exists before its first increase
    tally.add(1)
    assert _totals(tally) == {
        (("account", "1"), ("reason", "x")): 3,
        (("account", "2"), ("reason", "x")): 0,
        (): 1,
    }


def test_a_rule_of_the_operator_is_not_a_missed_trade_anything_else_is() -> None:
    def missed(account: str) -> float:
        return i.MISSED_TRADES.values.get((("account", account),), 0)

    i.omitted("u-window", "no_trade_window")
    i.omitted("u-spread", "spread_too_wide")
    i.omitted("u-spread", "ERR_SPREAD_TOO_WIDE")  # the slave's own live check
    i.omitted("u-offline", "slave_offline")
    i.rejected("u-broker", "ERR_NOT_ENOUGH_MONEY", opening=True)
    i.rejected("u-broker", "ERR_INVALID_STOPS", opening=False)  # a modify refused: the trade is copied
    i.gave_up("u-gone", "execute")
    i.gave_up("u-gone", "close")
    assert [missed(a) for a in ("u-window", "u-spread", "u-offline", "u-broker", "u-gone")] == [0, 0, 1, 1, 1]
    assert i.BLOCKED_BY_WINDOW.values[(("account", "u-window"),)] == 1
    assert i.POLICY_VIOLATIONS.values[(("account", "u-spread"), ("policy", "max_spread"))] == 2
