"""The dashboard's charts: every web server samples its figures into one Redis stream
(the last ``DASHBOARD_WINDOW_S`` kept), so any server draws the whole deployment's
last 15 minutes, across restarts.

A sample holds totals (events appended to the stream, events sent to clients, the
latency histogram's cumulative counts) and gauges (clients connected, dead letters).
The series are drawn per time step (the sampling interval): rates from the differences
between one server's consecutive samples, summed over servers; the connected clients
of each server's latest sample in the step, summed; the stream's figures (the same for
every server) from the latest sample in the step.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streambridge import keys
from streambridge.settings import WebSettings

log = logging.getLogger(__name__)
FIELD = "s"


def server_id() -> str:
    """This process, among the web servers (a restarted one is another)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Samples:
    def __init__(
        self,
        client: Any,
        settings: WebSettings,
        figures: Callable[[], dict[str, Any]],
        bounds: Sequence[float],
        window_s: float,
        server: str | None = None,
    ) -> None:
        """``figures``: this server's totals (``WebMetrics.figures``); ``bounds``: the
        latency histogram's upper bounds in seconds (then +Inf)."""
        self.client = client
        self.settings = settings
        self.figures = figures
        self.bounds = tuple(bounds)
        self.window_s = window_s
        self.server = server or server_id()
        self.key = keys.dashboard_samples(settings.stream)

    def stream_figures(self) -> tuple[int, int]:
        """(events ever appended, dead letters now), over every shard."""
        shards = self.settings.shard_settings()
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.xinfo_stream(shard.stream)
            pipe.xlen(shard.dead_stream)
        replies = pipe.execute(raise_on_error=False)
        added = dead = 0
        for info, dead_count in zip(replies[::2], replies[1::2], strict=True):
            if isinstance(info, dict):
                # entries-added counts trimmed entries too (Redis >= 7.0).
                added += int(info.get("entries-added") or info.get("length") or 0)
            if isinstance(dead_count, int):
                dead += dead_count
        return added, dead

    def take(self, now: float | None = None) -> dict[str, Any]:
        """Sample now and store it; returns the sample."""
        now = time.time() if now is None else now
        added, dead = self.stream_figures()
        sample = {"t": round(now, 3), "server": self.server, "added": added, "dead": dead}
        sample.update(self.figures())
        oldest_ms = int((now - self.window_s - 2 * self.settings.dashboard_sample_s) * 1000)
        self.client.xadd(
            self.key,
            {FIELD: orjson.dumps(sample)},
            minid=max(oldest_ms, 0),
            approximate=True,
        )
        return sample

    def read(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        start_ms = int((now - self.window_s) * 1000)
        samples = []
        for _id, fields in self.client.xrange(self.key, min=str(max(start_ms, 0)), max="+"):
            try:
                sample = orjson.loads(fields[FIELD])
            except (KeyError, orjson.JSONDecodeError):
                continue
            if isinstance(sample, dict):
                samples.append(sample)
        return samples

    def series(self, now: float | None = None) -> dict[str, list]:
        now = time.time() if now is None else now
        return draw(
            self.read(now), now, self.settings.dashboard_sample_s, self.window_s, self.bounds
        )


def draw(
    samples: list[dict[str, Any]],
    now: float,
    step_s: float,
    window_s: float,
    bounds: Sequence[float],
) -> dict[str, list]:
    """The charts' series, one point per step of the window ending at ``now``: ``t``
    (seconds), ``events_in`` and ``deliveries`` (per second), ``p50_ms`` and ``p99_ms``
    (delivery latency), ``connected``, ``dead_letters``; None where nothing was
    sampled."""
    steps = max(1, round(window_s / step_s))
    last = int(now // step_s)
    first = last - steps + 1
    size = steps
    delivered: list[float | None] = [None] * size
    latency: list[list[int] | None] = [None] * size
    connected: list[dict[str, int]] = [{} for _ in range(size)]
    added: list[int | None] = [None] * size
    dead: list[int | None] = [None] * size
    previous: dict[str, dict[str, Any]] = {}
    for sample in sorted(samples, key=lambda s: _number(s.get("t"))):
        index = int(_number(sample.get("t")) // step_s) - first
        server = str(sample.get("server"))
        before = previous.get(server)
        previous[server] = sample
        if not 0 <= index < size:
            continue
        connected[index][server] = int(_number(sample.get("connected")))
        added[index] = _latest(added[index], sample.get("added"))
        dead[index] = _latest(dead[index], sample.get("dead"))
        if before is None:
            continue  # a server's first sample: its totals are no rate yet
        sent = _number(sample.get("delivered")) - _number(before.get("delivered"))
        if sent >= 0:
            delivered[index] = (delivered[index] or 0) + sent
        counts = _difference(sample.get("latency"), before.get("latency"), len(bounds) + 1)
        if counts is not None:
            merged = latency[index]
            latency[index] = (
                counts if merged is None else [a + b for a, b in zip(merged, counts, strict=True)]
            )
    events_in: list[float | None] = [None] * size
    known, known_at = None, 0
    for i, total in enumerate(added):
        if total is None:
            continue
        if known is not None and total >= known:
            events_in[i] = (total - known) / (step_s * (i - known_at))
        known, known_at = total, i
    return {
        "t": [round((first + i) * step_s, 3) for i in range(size)],
        "events_in": events_in,
        "deliveries": [None if d is None else d / step_s for d in delivered],
        "p50_ms": [_quantile(c, 0.50, bounds) for c in latency],
        "p99_ms": [_quantile(c, 0.99, bounds) for c in latency],
        "connected": [sum(c.values()) if c else None for c in connected],
        "dead_letters": dead,
    }


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _latest(current: int | None, value: Any) -> int | None:
    # Samples are sorted by time: a later one in the step wins.
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else current


def _difference(now: Any, then: Any, size: int) -> list[int] | None:
    """Cumulative histogram counts gained between two samples (None if unusable)."""
    if not (isinstance(now, list) and isinstance(then, list)):
        return None
    if len(now) != size or len(then) != size:
        return None
    gained = [int(_number(a) - _number(b)) for a, b in zip(now, then, strict=True)]
    return gained if all(g >= 0 for g in gained) else None


def _quantile(counts: list[int] | None, q: float, bounds: Sequence[float]) -> float | None:
    """The ``q`` quantile in ms from cumulative bucket counts, interpolated within its
    bucket as Prometheus's histogram_quantile does; past the last bound, that bound."""
    if not counts or counts[-1] == 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0
    for bound, cumulative in zip(bounds, counts, strict=False):
        if cumulative >= rank:
            inside = cumulative - below
            share = (rank - below) / inside if inside else 1.0
            return round((lower + (bound - lower) * share) * 1000, 3)
        lower, below = bound, cumulative
    return round(bounds[-1] * 1000, 3)
