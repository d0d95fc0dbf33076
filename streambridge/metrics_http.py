"""The Prometheus metrics server of a long-running process (bridge, web)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from streambridge.listening import METRICS, binding
from streambridge.settings import MetricsSettings


def serve(settings: MetricsSettings, registry: CollectorRegistry) -> None:
    """Serve ``registry`` on ``STREAMBRIDGE_METRICS_PORT`` if it is set (in a thread)."""
    if settings.metrics_port is not None:
        with binding(settings.metrics_host, settings.metrics_port, METRICS):
            start_http_server(settings.metrics_port, settings.metrics_host, registry)
