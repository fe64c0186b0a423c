"""The metrics' bookkeeping: counters summed by label set, histograms bucketed by label set and served as
the SDK's reader would, and which omissions are missed trades."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.metrics import CallbackOptions

from echo.adapters.metrics import SpreadCollector, histogram_family
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


# ------------------------------------------------------------------------------------------ histograms


def _spread(bounds: tuple[float, ...] = (0, 1, 5)) -> i.Spread:
    spread = i.Spread("echo_test_spread_ms", "a test histogram", bounds)
    i.SPREADS.remove(spread)  # not served by the process's collector
    return spread


def _series(spread: i.Spread) -> dict[str, float]:
    """The family's samples named as in the text format: ``name_bucket{...,le=1}``, ``_count``, ``_sum``."""
    family = histogram_family(spread)
    assert family is not None
    return {
        s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}": s.value
        for s in family.samples
    }


def test_a_value_on_a_bound_counts_in_that_bucket_as_le_says() -> None:
    spread = _spread()
    for value in (-1, 0, 0.5, 1, 1.0000001, 5, 5.5):
        spread.record(value)
    counts, total = spread.snapshot()[0][1][:-1], spread.snapshot()[0][1][-1]
    assert counts == [2, 2, 2, 1]  # (-inf, 0], (0, 1], (1, 5], (5, +inf)
    assert total == pytest.approx(-1 + 0 + 0.5 + 1 + 1.0000001 + 5 + 5.5)


def test_a_histogram_is_served_with_cumulative_buckets_sum_count_and_the_scope_labels() -> None:
    spread = _spread()
    spread.record(0.5, {"outcome": "written"})
    spread.record(3, {"outcome": "written"})
    spread.record(7)  # a series without the label: the label is empty, as the SDK's reader writes it
    series = _series(spread)
    scope = "otel_scope_name=echo,otel_scope_schema_url=,otel_scope_version="
    written = f"{scope},outcome=written"
    assert series[f"echo_test_spread_ms_bucket{{le=0,{written}}}"] == 0
    assert series[f"echo_test_spread_ms_bucket{{le=1,{written}}}"] == 1
    assert series[f"echo_test_spread_ms_bucket{{le=5,{written}}}"] == 2
    assert series[f"echo_test_spread_ms_bucket{{le=+Inf,{written}}}"] == 2
    assert series[f"echo_test_spread_ms_count{{{written}}}"] == 2
    assert series[f"echo_test_spread_ms_sum{{{written}}}"] == 3.5
    assert series[f"echo_test_spread_ms_bucket{{le=5,{scope},outcome=}}"] == 0
    assert series[f"echo_test_spread_ms_count{{{scope},outcome=}}"] == 1
    assert len(series) == 2 * (4 + 2)


def test_label_sets_are_kept_apart_whatever_the_order_of_their_keys() -> None:
    spread = _spread()
    spread.record(1, {"account": "1", "symbol": "X"})
    spread.record(2, {"symbol": "X", "account": "1"})
    spread.record(2, {"account": "2", "symbol": "X"})
    cells = dict(spread.snapshot())
    assert cells[(("account", "1"), ("symbol", "X"))][-1] == 3
    assert cells[(("account", "2"), ("symbol", "X"))][-1] == 2
    assert len(cells) == 2


def test_nothing_is_served_before_a_value_is_recorded() -> None:
    assert histogram_family(_spread()) is None
    assert list(SpreadCollector([_spread()]).collect()) == []


def test_bounds_follow_the_unit_and_must_increase() -> None:
    ms = i.Spread("echo_test_a_ms", "")
    points = i.Spread("echo_test_a_points", "")
    i.SPREADS.remove(ms)
    i.SPREADS.remove(points)
    assert (ms.bounds, points.bounds) == (i.MS_BUCKETS, i.POINTS_BUCKETS)
    with pytest.raises(ValueError):
        i.Spread("echo_test_b_ms", "", (1, 1, 2))
    with pytest.raises(ValueError):
        i.Spread("echo_test_b_seconds", "")


@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), max_size=60),
    # bounds >= 0: with a negative bound the text format drops _sum and _count
    bounds=st.lists(st.floats(min_value=0, max_value=1e3), min_size=1, max_size=8, unique=True),
)
def test_buckets_are_cumulative_and_the_last_is_the_count(values: list[float], bounds: list[float]) -> None:
    spread = _spread(tuple(sorted(bounds)))
    for value in values:
        spread.record(value, {"k": "v"})
    if not values:
        assert histogram_family(spread) is None
        return
    samples = [s for s in histogram_family(spread).samples]  # type: ignore[union-attr]
    buckets = [s.value for s in samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets)
    count = next(s.value for s in samples if s.name.endswith("_count"))
    assert buckets[-1] == count == len(values)
    for bound, cumulative in zip(sorted(bounds), buckets, strict=False):
        assert cumulative == sum(1 for v in values if v <= bound)
    assert next(s.value for s in samples if s.name.endswith("_sum")) == pytest.approx(math.fsum(values))


def test_the_text_is_what_the_sdk_reader_wrote_for_the_same_records() -> None:
    """The SDK's histogram (with the copier's views) and a Spread get the same values; their series in the
    Prometheus text format are the same lines. In a fresh process: the SDK's reader registers globally."""
    script = (
        "from opentelemetry.exporter.prometheus import PrometheusMetricReader\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from prometheus_client import REGISTRY, CollectorRegistry, generate_latest\n"
        "from echo.adapters import metrics as m\n"
        "from echo.services import instruments as i\n"
        "i.Tally.served = True\n"
        "provider = MeterProvider(metric_readers=[PrometheusMetricReader()], views=m.views())\n"
        "meter = provider.get_meter('echo')\n"
        "ours = CollectorRegistry()\n"
        "ours.register(m.SpreadCollector())\n"
        "for name in ('echo_x_ms', 'echo_x_points'):\n"
        "    sdk, spread = meter.create_histogram(name, description='d'), i.Spread(name, 'd')\n"
        "    for v, labels in [(0, None), (0.5, {'a': '1'}), (0.7, {'a': '1'}), (3, {'a': '2', 'b': 'x'}),\n"
        "                      (60000, None), (70000, {'a': '1'}), (499.5, None), (12.25, {'b': 'y'})]:\n"
        "        sdk.record(v, labels)\n"
        "        spread.record(v, labels)\n"
        "def lines(text):\n"
        "    return sorted(l for l in text.decode().splitlines() if l.startswith('echo_x'))\n"
        "theirs, mine = lines(generate_latest(REGISTRY)), lines(generate_latest(ours))\n"
        "assert len(mine) == 4 * ((17 + 2) + (13 + 2)), len(mine)  # 4 label sets: buckets, sum, count\n"
        "assert theirs == mine, set(theirs) ^ set(mine)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
