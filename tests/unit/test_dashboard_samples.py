"""The dashboard's series, drawn from the web servers' samples (no Redis needed), and
the samples' round trip through a stream (fakeredis)."""

from __future__ import annotations

import time

import fakeredis
import pytest
from streambridge.webapp.ext.dashboard_samples import Samples, draw
from streambridge.webapp.ext.metrics import LATENCY_BUCKETS, WebMetrics

from streambridge.settings import WebSettings

BOUNDS = (0.001, 0.01, 0.1, 1.0)
STEP = 5.0
WINDOW = 60.0
NOW = 1_000_000.0  # a step boundary: steps are [t, t + 5)


def sample(t, server="a", *, added=0, dead=0, delivered=0, connected=0, latency=None):
    return {
        "t": t,
        "server": server,
        "added": added,
        "dead": dead,
        "delivered": delivered,
        "connected": connected,
        "latency": latency or [0] * (len(BOUNDS) + 1),
    }


def at(series: dict, name: str, t: float):
    return series[name][series["t"].index(t)]


def test_rates_are_differences_summed_over_servers():
    last = NOW - STEP
    samples = [
        sample(last - 10 + 1, "a", added=100, delivered=10),
        sample(last - 5 + 1, "a", added=110, delivered=30),
        sample(last + 1, "a", added=130, delivered=70),
        sample(last - 5 + 2, "b", added=110, delivered=500),
        sample(last + 2, "b", added=130, delivered=520),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    assert len(series["t"]) == WINDOW / STEP
    assert at(series, "events_in", last) == 20 / STEP  # 110 -> 130, one step
    assert at(series, "deliveries", last) == (40 + 20) / STEP  # a: 30 -> 70, b: 500 -> 520
    assert at(series, "deliveries", last - 5) == 20 / STEP  # b's first sample is no rate
    assert at(series, "events_in", last - 10) is None  # nothing before it to differ from


def test_a_gap_spreads_the_difference_and_a_restart_counts_nothing_negative():
    samples = [
        sample(NOW - 30, "a", added=10, delivered=1000),
        sample(NOW - 10, "a", added=50, delivered=1010),  # 4 steps later
        sample(NOW - 5, "a2", added=60, delivered=3),  # restarted: a new server id
        sample(NOW, "a2", added=61, delivered=5),
    ]
    series = draw(samples, NOW + 1, STEP, WINDOW, BOUNDS)
    assert at(series, "events_in", NOW - 10) == 40 / (4 * STEP)
    assert at(series, "deliveries", NOW - 5) is None
    assert at(series, "deliveries", NOW) == 2 / STEP


def test_connected_is_each_servers_latest_in_the_step_summed():
    samples = [
        sample(NOW + 0.5, "a", connected=7),
        sample(NOW + 4.5, "a", connected=9),  # two of a's samples in one step: the later
        sample(NOW + 2, "b", connected=3),
    ]
    series = draw(samples, NOW + 4.9, STEP, WINDOW, BOUNDS)
    assert series["connected"][-1] == 12
    assert series["connected"][-2] is None


def test_latency_quantiles_from_merged_histograms():
    zero = [0, 0, 0, 0, 0]
    # Cumulative counts per bound (1 ms, 10 ms, 100 ms, 1 s, +Inf).
    samples = [
        sample(NOW - 4, "a", latency=zero),
        sample(NOW + 1, "a", latency=[0, 50, 90, 100, 100]),
        sample(NOW - 3, "b", latency=zero),
        sample(NOW + 2, "b", latency=[0, 50, 60, 100, 100]),
    ]
    series = draw(samples, NOW + 3, STEP, WINDOW, BOUNDS)
    # Merged: 0 under 1 ms, 100 under 10 ms, 150 under 100 ms, 200 under 1 s.
    # p50 is rank 100: the top of the 1-10 ms bucket; p99 is rank 198: 96% into the
    # 100 ms - 1 s bucket.
    assert series["p50_ms"][-1] == pytest.approx(10.0)
    assert series["p99_ms"][-1] == pytest.approx(100 + 900 * 48 / 50)
    assert series["p50_ms"][-2] is None  # no events: no latency, not zero


def test_beyond_the_last_bound_the_last_bound_and_bad_samples_ignored():
    samples = [
        sample(NOW - 4, latency=[0, 0, 0, 0, 0]),
        sample(NOW + 1, latency=[0, 0, 0, 0, 10]),
        {"t": "soon", "server": "x", "latency": "many"},
        sample(NOW + 2, "c", latency=[1, 2]),  # the wrong size
        sample(NOW - WINDOW - 100, "old", connected=50),
    ]
    series = draw(samples, NOW + 3, STEP, WINDOW, BOUNDS)
    assert series["p99_ms"][-1] == 1000.0
    assert series["connected"][-1] == 0
    assert all(c in (None, 0) for c in series["connected"])


def test_samples_round_trip_through_the_stream():
    now = time.time()  # entries get Redis's time as their ids
    client = fakeredis.FakeRedis(decode_responses=True)
    metrics = WebMetrics()
    metrics.connected.set_function(lambda: 2)
    settings = WebSettings(stream="events", dashboard_sample_s=STEP)
    samples = Samples(client, settings, metrics.figures, LATENCY_BUCKETS, WINDOW, server="s1")
    client.xadd("events", {"channel": "m", "body": "1"})
    first = samples.take(now=now - STEP)
    assert (first["added"], first["connected"], first["delivered"]) == (1, 2, 0)
    for _ in range(3):
        client.xadd("events", {"channel": "m", "body": "1"})
    metrics.delivered(4, (int(now * 1000) - 300, 0))  # appended 300 ms before now
    samples.take(now=now)
    series = samples.series(now=now)
    assert series["events_in"][-1] == 3 / STEP
    assert series["deliveries"][-1] == 4 / STEP
    assert series["connected"][-1] == 2
    assert 200 <= series["p50_ms"][-1] <= 500  # in the 200-500 ms bucket
