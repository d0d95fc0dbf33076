"""The web app's Prometheus metrics, served on ``STREAMBRIDGE_METRICS_PORT`` (not the app's
port: they are for operators)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds from an event's append (its stream id's time) to this server sending it.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip


class WebMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "streambridge_web_connected_clients", "Socket.IO clients connected now.", registry=r
        )
        self.replayed = Counter(
            "streambridge_web_replayed_events", "Events replayed to clients on catch-up.",
            registry=r,
        )  # fmt: skip
        self.recoveries = Counter(
            "streambridge_web_recoveries",
            "Catch-ups, by whether the client's history was complete.",
            ["recovered"],
            registry=r,
        )
        self.shed = Counter(
            "streambridge_web_shed_clients", "Clients disconnected for falling behind.",
            registry=r,
        )  # fmt: skip
        self.api_requests = Counter(
            "streambridge_web_api_requests", "/api/ requests, by status.", ["status"],
            registry=r,
        )  # fmt: skip
        self.refused_connections = Counter(
            "streambridge_web_refused_connections",
            "Connections refused or cut by the per-address caps and deadlines, by reason.",
            ["reason"],
            registry=r,
        )
        self.presence_scripts = Counter(
            "streambridge_web_presence_scripts",
            "Presence scripts run in Redis, by kind (join, leave, heartbeat, read).",
            ["kind"],
            registry=r,
        )
        self.live_deliveries = Counter(
            "streambridge_web_live_deliveries",
            "Live stream events sent to clients (one per client).",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "streambridge_web_delivery_latency_seconds",
            "From an event's append to the stream (its id's time, Redis's clock) to this "
            "server sending it live to its clients.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.presence_round_trips = Counter(
            "streambridge_web_presence_round_trips",
            "Pipelines of presence scripts sent to Redis.",
            registry=r,
        )

    def delivered(self, clients: int, stream_id: tuple[int, int]) -> None:
        """A live event sent to ``clients`` clients now."""
        self.live_deliveries.inc(clients)
        self.delivery_latency.observe(max(0.0, time.time() - stream_id[0] / 1000))

    def figures(self) -> dict[str, Any]:
        """This server's totals for the dashboard: events sent to clients (live and
        replayed), clients connected now, and the latency histogram's cumulative counts
        (one per bound of ``LATENCY_BUCKETS``, then +Inf)."""
        counts = [
            int(s.value)
            for s in self.delivery_latency.collect()[0].samples
            if s.name.endswith("_bucket")
        ]
        return {
            "delivered": int(_value(self.live_deliveries) + _value(self.replayed)),
            "connected": int(_value(self.connected)),
            "latency": counts,
        }


def _value(metric: Counter | Gauge) -> float:
    # The first sample of a metric without labels: a counter's total, a gauge's value
    # (its function's, when it has one).
    return metric.collect()[0].samples[0].value
