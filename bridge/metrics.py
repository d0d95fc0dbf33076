"""The bridge's Prometheus metrics (served on STREAMBRIDGE_METRICS_PORT when set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.entries = Counter(
            "streambridge_bridge_entries",
            "Stream entries handled, by outcome (read, emitted, acked, dead, claimed, trimmed).",
            ["outcome"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "streambridge_bridge_batch_seconds",
            "Time to publish and ack one batch.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.group_lag = Gauge(
            "streambridge_bridge_group_lag",
            "Entries in the stream not yet delivered to the consumer group (Redis >= 7).",
            ["stream"],
            registry=r,
        )
        self.group_pending = Gauge(
            "streambridge_bridge_group_pending",
            "Entries delivered to the group but not acked.",
            ["stream"],
            registry=r,
        )
        self.redis_errors = Counter(
            "streambridge_bridge_redis_errors",
            "Redis errors the bridge backed off from, by kind.",
            ["kind"],
            registry=r,
        )
        # Bound once: labels() per entry costs more than the increment.
        self.outcomes = {
            outcome: self.entries.labels(outcome)
            for outcome in ("read", "emitted", "acked", "dead", "claimed", "trimmed", "repeats")
        }
