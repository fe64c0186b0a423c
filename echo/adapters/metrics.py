"""The copier's OpenTelemetry metrics (Core's router, its copies and omissions) served for Prometheus to
scrape at ``metrics.listen`` (``GET /metrics``), through opentelemetry-sdk's PrometheusMetricReader and
prometheus-client's HTTP server (a daemon thread; the event loop never serves it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from echo.domain.errors import ConfigError

log = structlog.get_logger("echo.metrics")


@contextmanager
def prometheus_endpoint(host: str, port: int) -> Iterator[None]:
    """Install the process's meter provider (once per process) and serve ``/metrics`` until exit."""
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
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
