"""The dashboard's charts: every web server samples its figures into one Redis stream
(the last ``DASHBOARD_WINDOW_S`` kept), so any server draws the whole deployment's
last 15 minutes, across restarts.

A sample holds totals (events appended to each shard's stream, events sent to clients,
the latency histogram's cumulative counts) and gauges (clients connected, dead
letters); its time is its entry id's, Redis's clock, the same for every server. The
series are drawn per time step of the window (the sampling interval, or longer so
that there are at most ``MAX_POINTS``), from completed steps only:

* a total's growth between two consecutive samples (one server's, or any two for the
  streams, which every server reads alike) is spread evenly over the steps between
  them, so a late sample never makes a spike and the counts add up exactly; a total
  that fell (a restart, a recreated stream) counts nothing;
* connected clients: each server's latest sample in the step, summed;
* dead letters: the latest sample in the step.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streambridge import keys
from streambridge.settings import WebSettings

FIELD = "s"
MAX_POINTS = 300


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
        self._last_ms: int | None = None  # Redis's time at the last sample

    def stream_figures(self) -> tuple[dict[str, int] | None, int | None]:
        """(per shard stream, the events ever appended to it; the dead letters now, over
        every shard). A shard that could not be read is left out of the first, and makes
        the second None: never counted as zero. Appended events need Redis >= 7.0
        (``entries-added``); before, the first is None."""
        shards = self.settings.shard_settings()
        pipe = self.client.pipeline(transaction=False)
        for shard in shards:
            pipe.xinfo_stream(shard.stream)
            pipe.xlen(shard.dead_stream)
        replies = pipe.execute(raise_on_error=False)
        added: dict[str, int] = {}
        dead: int | None = 0
        for shard, info, dead_count in zip(shards, replies[::2], replies[1::2], strict=True):
            if isinstance(info, dict) and isinstance(info.get("entries-added"), int):
                added[shard.stream] = info["entries-added"]
            elif isinstance(info, Exception) and "no such key" in str(info).lower():
                added[shard.stream] = 0  # not made yet: nothing appended
            dead = dead + dead_count if isinstance(dead_count, int) and dead is not None else None
        return added or None, dead

    def take(self) -> dict[str, Any]:
        """Sample now and store it; returns the sample."""
        added, dead = self.stream_figures()
        sample: dict[str, Any] = {"server": self.server, "added": added, "dead": dead}
        sample.update(self.figures())
        # Trimmed by Redis's clock (the ids'), as of the last sample: a web server
        # whose clock is off never trims the others' samples.
        options: dict[str, Any] = {}
        if self._last_ms is not None:
            oldest = self._last_ms - int(
                (self.window_s + 2 * self.settings.dashboard_sample_s) * 1000
            )
            options = {"minid": max(oldest, 0), "approximate": True}
        entry_id = self.client.xadd(self.key, {FIELD: orjson.dumps(sample)}, **options)
        self._last_ms = _ms(entry_id)
        sample["t"] = self._last_ms / 1000
        return sample

    def read(self, now: float) -> list[dict[str, Any]]:
        """The samples of the window ending at ``now`` (Redis's time), and those just
        before it (the growth into its first step), each with its time ``t``."""
        sample_s = self.settings.dashboard_sample_s
        start_ms = int((now - self.window_s - self.step_s() - 3 * sample_s) * 1000)
        samples = []
        for entry_id, fields in self.client.xrange(self.key, min=str(max(start_ms, 0)), max="+"):
            try:
                sample = orjson.loads(fields[FIELD])
            except (KeyError, orjson.JSONDecodeError):
                continue
            if isinstance(sample, dict):
                sample["t"] = _ms(entry_id) / 1000
                samples.append(sample)
        return samples

    def step_s(self) -> float:
        """The charts' step: the sampling interval, or longer for ``MAX_POINTS``."""
        return max(self.settings.dashboard_sample_s, self.window_s / MAX_POINTS)

    def series(self) -> dict[str, list]:
        seconds, micros = self.client.time()
        now = int(seconds) + int(micros) / 1_000_000
        return draw(
            self.read(now),
            now,
            self.step_s(),
            self.window_s,
            self.bounds,
            settle_s=1.25 * self.settings.dashboard_sample_s,
        )


def _ms(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


def draw(
    samples: list[dict[str, Any]],
    now: float,
    step_s: float,
    window_s: float,
    bounds: Sequence[float],
    settle_s: float = 0.0,
) -> dict[str, list]:
    """The charts' series, one point per completed step of the window ending at ``now``:
    ``t`` (the step's start, seconds), ``events_in`` and ``deliveries`` (per second),
    ``p50_ms`` and ``p99_ms`` (delivery latency), ``connected``, ``dead_letters``; None
    where nothing was sampled. A step is drawn once ``settle_s`` has passed since its
    end: every server has sampled after it by then, so its growth is all known."""
    size = max(1, round(window_s / step_s))
    first = math.floor((now - settle_s) / step_s) - size  # steps not settled: not drawn

    def index(t: float) -> int:
        return math.floor(t / step_s) - first

    def spread(into: list[float | None], t0: float, t1: float, amount: float) -> None:
        """``amount``, which grew between ``t0`` and ``t1``, over the steps in between,
        in proportion to the time of each."""
        if t1 <= t0:
            if 0 <= index(t1) < size:
                into[index(t1)] = (into[index(t1)] or 0) + amount
            return
        for i in range(max(index(t0), 0), min(index(t1), size - 1) + 1):
            start, end = (first + i) * step_s, (first + i + 1) * step_s
            share = (min(t1, end) - max(t0, start)) / (t1 - t0)
            if share > 0:
                into[i] = (into[i] or 0) + amount * share

    events: list[float | None] = [None] * size
    delivered: list[float | None] = [None] * size
    latency: list[list[int] | None] = [None] * size
    connected: list[dict[str, int]] = [{} for _ in range(size)]
    dead: list[int | None] = [None] * size
    previous: dict[str, dict[str, Any]] = {}
    # Per shard stream, the most appended seen so far: servers read the streams at
    # about the same time, and one that read earlier may store its sample later. Less
    # than the same server read before: the stream was recreated, counting starts again.
    appended: dict[str, float] = {}
    appended_at: float | None = None
    read_by: dict[str, dict[str, float]] = {}
    for sample in sorted(samples, key=lambda s: _number(s.get("t"))):
        t = _number(sample.get("t"))
        i = index(t)
        added = sample.get("added")
        server = str(sample.get("server"))
        if isinstance(added, dict):
            grown = 0.0
            mine = read_by.setdefault(server, {})
            for name, value in added.items():
                n = _number(value)
                if n < mine.get(name, 0.0):
                    appended[name] = n  # recreated
                elif name in appended:
                    grown += max(0.0, n - appended[name])
                    appended[name] = max(appended[name], n)
                else:
                    appended[name] = n
                mine[name] = n
            if appended_at is not None:
                spread(events, appended_at, t, grown)
            appended_at = t
        before = previous.get(server)
        previous[server] = sample
        if 0 <= i < size:
            connected[i][server] = int(_number(sample.get("connected")))
            dead[i] = _latest(dead[i], sample.get("dead"))
        if before is None:
            continue  # a server's first sample: its totals are no rate yet
        t0 = _number(before.get("t"))
        sent = _number(sample.get("delivered")) - _number(before.get("delivered"))
        if sent >= 0:
            spread(delivered, t0, t, sent)
        counts = _difference(sample.get("latency"), before.get("latency"), len(bounds) + 1)
        if counts is not None and 0 <= i < size:
            merged = latency[i]
            latency[i] = (
                counts if merged is None else [a + b for a, b in zip(merged, counts, strict=True)]
            )
    return {
        "t": [round((first + i) * step_s, 3) for i in range(size)],
        "events_in": [None if e is None else round(e / step_s, 6) for e in events],
        "deliveries": [None if d is None else round(d / step_s, 6) for d in delivered],
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
