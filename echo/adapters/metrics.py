"""The copier's metrics (echo/services/instruments.py: Core's and the Agent's) served for Prometheus to
scrape at ``metrics.listen`` (``GET /metrics``), through prometheus-client's HTTP server (a daemon thread;
the event loop never serves it): counters and gauges through opentelemetry-sdk's PrometheusMetricReader,
histograms (``Spread``s, kept outside the SDK: its measurement path costs 10-40 us a record) through a
collector registered beside it that writes them as the reader would (same names, buckets, labels and
``otel_scope_*`` labels). Histograms get explicit buckets by unit: milliseconds from 0.5 ms to a minute,
points from 0 to 500."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import structlog
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from echo.domain.errors import ConfigError
from echo.services.instruments import MS_BUCKETS, POINTS_BUCKETS, SPREADS, Spread

__all__ = ["MS_BUCKETS", "POINTS_BUCKETS", "SpreadCollector", "prometheus_endpoint", "views"]

log = structlog.get_logger("echo.metrics")

SCOPE = {"otel_scope_name": "echo", "otel_scope_schema_url": "", "otel_scope_version": ""}
"""The labels the SDK's reader puts on every series of the ``echo`` meter (its instrumentation scope)."""


def views() -> list[View]:
    """The buckets of any histogram recorded through the SDK (the ``Spread``s carry the same bounds)."""
    return [
        View(instrument_name="*_ms", aggregation=ExplicitBucketHistogramAggregation(MS_BUCKETS)),
        View(instrument_name="*_points", aggregation=ExplicitBucketHistogramAggregation(POINTS_BUCKETS)),
    ]


def histogram_family(spread: Spread) -> HistogramMetricFamily | None:
    """``spread`` as the SDK's Prometheus reader writes a histogram: one family, labels sorted (a label
    another series has and this one lacks is empty), cumulative ``le`` buckets then ``+Inf``, the sum;
    nothing until a value is recorded."""
    rows = spread.snapshot()
    if not rows:
        return None
    keys = sorted({k for labels, _ in rows for k, _ in labels} | SCOPE.keys())
    family = HistogramMetricFamily(spread.name, spread.description, labels=keys)
    for labels, cell in rows:
        values = {**SCOPE, **dict(labels)}
        buckets, total = [], 0.0
        for bound, count in zip((*(f"{b}" for b in spread.bounds), "+Inf"), cell[:-1], strict=True):
            total += count
            buckets.append((bound, total))
        family.add_metric([values.get(k, "") for k in keys], buckets, sum_value=cell[-1])
    return family


class SpreadCollector(Collector):
    """Every ``Spread`` declared, on each scrape (from the HTTP server's thread)."""

    def __init__(self, spreads: Iterable[Spread] = SPREADS) -> None:
        self.spreads = spreads

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for spread in list(self.spreads):
            family = histogram_family(spread)
            if family is not None:
                yield family


@contextmanager
def prometheus_endpoint(host: str, port: int) -> Iterator[None]:
    """Install the process's meter provider (once per process) and serve ``/metrics`` until exit."""
    reader = PrometheusMetricReader()
    # no exemplars: the Prometheus text format does not carry them, and sampling them costs every measurement
    no_exemplars = AlwaysOffExemplarFilter()
    provider = MeterProvider(metric_readers=[reader], views=views(), exemplar_filter=no_exemplars)
    metrics.set_meter_provider(provider)
    histograms = SpreadCollector()
    REGISTRY.register(histograms)
    try:
        server, _thread = start_http_server(port, host)
    except OSError as exc:
        REGISTRY.unregister(histograms)
        provider.shutdown()
        raise ConfigError(f"metrics.listen {host}:{port}: {exc}") from exc
    log.info("metrics_listening", url=f"http://{host}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        REGISTRY.unregister(histograms)
        provider.shutdown()
