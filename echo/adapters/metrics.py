"""The copier's OpenTelemetry metrics (echo/services/instruments.py: Core's and the Agent's) served for
Prometheus to scrape at ``metrics.listen`` (``GET /metrics``), through opentelemetry-sdk's
PrometheusMetricReader and prometheus-client's HTTP server (a daemon thread; the event loop never serves
it). Histograms get explicit buckets by unit: milliseconds from 0.5 ms to a minute, points from 0 to 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import start_http_server

from echo.domain.errors import ConfigError

log = structlog.get_logger("echo.metrics")

MS_BUCKETS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
"""Copy latencies: a local hop takes well under a millisecond, a copy to a broker tens to hundreds."""
POINTS_BUCKETS = (0, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
"""Slippage and spread in points (a point: the symbol's smallest price step)."""


def views() -> list[View]:
    return [
        View(instrument_name="*_ms", aggregation=ExplicitBucketHistogramAggregation(MS_BUCKETS)),
        View(instrument_name="*_points", aggregation=ExplicitBucketHistogramAggregation(POINTS_BUCKETS)),
    ]


@contextmanager
def prometheus_endpoint(host: str, port: int) -> Iterator[None]:
    """Install the process's meter provider (once per process) and serve ``/metrics`` until exit."""
    reader = PrometheusMetricReader()
    # no exemplars: the Prometheus text format does not carry them, and sampling them costs every measurement
    no_exemplars = AlwaysOffExemplarFilter()
    provider = MeterProvider(metric_readers=[reader], views=views(), exemplar_filter=no_exemplars)
    metrics.set_meter_provider(provider)
    try:
        server, _thread = start_http_server(port, host)
    except OSError as exc:
        provider.shutdown()
        raise ConfigError(f"metrics.listen {host}:{port}: {exc}") from exc
    log.info("metrics_listening", url=f"http://{host}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        provider.shutdown()
