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
NOW = 1_000_000.0 + 2.5  # in the middle of a step: steps are [k * 5, k * 5 + 5)
LAST = NOW - 2.5 - STEP  # the start of the last completed step, the last one drawn


def sample(t, server="a", *, added=None, dead=0, delivered=0, connected=0, latency=None):
    return {
        "t": t,
        "server": server,
        "added": {"events": added} if isinstance(added, int) else added,
        "dead": dead,
        "delivered": delivered,
        "connected": connected,
        "latency": latency or [0] * (len(BOUNDS) + 1),
    }


def at(series: dict, name: str, t: float):
    return series[name][series["t"].index(t)]


def test_only_completed_steps_are_drawn():
    series = draw([sample(NOW - 1, connected=5)], NOW, STEP, WINDOW, BOUNDS)
    assert len(series["t"]) == WINDOW / STEP
    assert series["t"][-1] == LAST  # the step still filling is not drawn
    assert series["connected"] == [None] * 12


def test_growth_between_samples_is_spread_over_the_time_between():
    samples = [
        sample(LAST - 10 + 2.5, "a", added=100, delivered=10),
        sample(LAST - 5 + 2.5, "a", added=110, delivered=30),
        sample(LAST + 2.5, "a", added=130, delivered=70),
        sample(LAST - 5 + 2.6, "b", added=110, delivered=500),
        sample(LAST + 2.6, "b", added=130, delivered=520),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    # Between the samples at -7.5 and -2.5 (the same counter read by both servers),
    # 20 events: half in each of the two steps that time falls in.
    assert at(series, "events_in", LAST) == pytest.approx((10 + 0) / STEP, abs=0.1)
    total_in = sum(v for v in series["events_in"] if v) * STEP
    assert total_in == pytest.approx(30)  # every event counted once, whole
    total_out = sum(v for v in series["deliveries"] if v) * STEP
    assert total_out == pytest.approx(60 + 20)  # a: 10 -> 70; b: 500 -> 520


def test_a_late_sample_makes_no_spike_and_a_restart_counts_nothing_negative():
    samples = [
        sample(LAST - 30 + 2.5, "a", delivered=1000),
        sample(LAST - 10 + 2.5, "a", delivered=1040),  # 20 s later: 4 steps
        sample(LAST - 5 + 2.5, "a2", delivered=3),  # restarted: a new server id
        sample(LAST + 2.5, "a2", delivered=5),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    for t in (LAST - 25, LAST - 20, LAST - 15):
        assert at(series, "deliveries", t) == pytest.approx(10 / STEP)  # 40 over 4 steps
    assert at(series, "deliveries", LAST) == pytest.approx(1 / STEP)  # half of a2's 2


def test_a_shard_not_read_is_no_zero_and_a_recreated_stream_counts_nothing():
    samples = [
        sample(LAST - 10 + 2.5, added={"events:{0}": 100, "events:{1}": 50}),
        sample(LAST - 5 + 2.5, added={"events:{0}": 110}),  # shard 1 not read
        sample(LAST + 2.5, added={"events:{0}": 3, "events:{1}": 60}),  # 0 recreated
    ]
    series = draw(samples, NOW + STEP, STEP, WINDOW, BOUNDS)
    assert sum(v for v in series["events_in"] if v) * STEP == pytest.approx(10 + 10)


def test_a_read_stored_after_a_later_one_is_not_counted_twice():
    samples = [
        sample(LAST - 5 + 2.5, "a", added=100),
        sample(LAST - 5 + 2.6, "b", added=100),
        sample(LAST + 2.5, "a", added=150),  # b read before a, stored after
        sample(LAST + 2.6, "b", added=140),
        sample(LAST + 5 + 2.5, "a", added=160),
    ]
    series = draw(samples, NOW + STEP, STEP, WINDOW, BOUNDS)
    assert sum(v for v in series["events_in"] if v) * STEP == pytest.approx(60)


def test_a_step_is_drawn_once_every_server_has_sampled_after_it():
    samples = [sample(LAST - 5 + 2.5, "a", delivered=0), sample(LAST + 2.5, "a", delivered=50)]
    # Half a step after the sample at LAST + 2.5, the step [LAST, LAST + 5) has not
    # ended, and a sampling interval later it has not settled: not drawn either way.
    early = draw(samples, LAST + 3, STEP, WINDOW, BOUNDS, settle_s=1.25 * STEP)
    assert early["t"][-1] == LAST - 2 * STEP
    settled = draw(samples, LAST + STEP + 1.25 * STEP, STEP, WINDOW, BOUNDS, settle_s=1.25 * STEP)
    assert settled["t"][-1] == LAST


def test_connected_is_each_servers_latest_in_the_step_summed():
    samples = [
        sample(LAST + 0.5, "a", connected=7),
        sample(LAST + 4.5, "a", connected=9),  # two of a's samples in one step: the later
        sample(LAST + 2, "b", connected=3),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    assert series["connected"][-1] == 12
    assert series["connected"][-2] is None


def test_latency_quantiles_from_merged_histograms():
    zero = [0, 0, 0, 0, 0]
    # Cumulative counts per bound (1 ms, 10 ms, 100 ms, 1 s, +Inf).
    samples = [
        sample(LAST - 4, "a", latency=zero),
        sample(LAST + 1, "a", latency=[0, 50, 90, 100, 100]),
        sample(LAST - 3, "b", latency=zero),
        sample(LAST + 2, "b", latency=[0, 50, 60, 100, 100]),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    # Merged: 0 under 1 ms, 100 under 10 ms, 150 under 100 ms, 200 under 1 s.
    # p50 is rank 100: the top of the 1-10 ms bucket; p99 is rank 198: 96% into the
    # 100 ms - 1 s bucket.
    assert series["p50_ms"][-1] == pytest.approx(10.0)
    assert series["p99_ms"][-1] == pytest.approx(100 + 900 * 48 / 50)
    assert series["p50_ms"][-2] is None  # no events: no latency, not zero


def test_beyond_the_last_bound_the_last_bound_and_bad_samples_ignored():
    samples = [
        sample(LAST - 4, latency=[0, 0, 0, 0, 0]),
        sample(LAST + 1, latency=[0, 0, 0, 0, 10]),
        {"t": "soon", "server": "x", "latency": "many", "connected": 4},
        sample(LAST - 4, "c", latency=[0, 0, 0, 0, 0]),
        sample(LAST + 2, "c", latency=[1, 2]),  # the wrong size: left out
        sample(LAST - WINDOW - 100, "old", connected=50),
    ]
    series = draw(samples, NOW, STEP, WINDOW, BOUNDS)
    assert series["p99_ms"][-1] == 1000.0
    assert series["p50_ms"][-1] == 1000.0  # c's sample would have put it under 1 ms
    assert 50 not in series["connected"]


def test_samples_round_trip_through_the_stream():
    client = fakeredis.FakeRedis(decode_responses=True)
    metrics = WebMetrics()
    metrics.connected.set_function(lambda: 2)
    settings = WebSettings(stream="events", dashboard_sample_s=STEP)
    samples = Samples(client, settings, metrics.figures, LATENCY_BUCKETS, WINDOW, server="s1")
    client.xadd("events", {"channel": "m", "body": "1"})
    first = samples.take()
    assert (first["added"], first["connected"], first["delivered"]) == ({"events": 1}, 2, 0)
    for _ in range(3):
        client.xadd("events", {"channel": "m", "body": "1"})
    metrics.delivered(4, (int(time.time() * 1000) - 300, 0))  # appended 300 ms before
    second = samples.take()
    [one, two] = samples.read(second["t"])
    assert (one["t"], two["t"]) == (first["t"], second["t"])  # Redis's time, from the ids
    assert two["added"] == {"events": 4} and two["delivered"] == 4
    # Drawn a whole step later, so that the step of the second sample is complete.
    series = draw([one, two], second["t"] + STEP, STEP, WINDOW, samples.bounds)
    assert sum(v for v in series["events_in"] if v) * STEP == pytest.approx(3)
    assert sum(v for v in series["deliveries"] if v) * STEP == pytest.approx(4)
    assert 2 in series["connected"]
    assert 200 <= next(p for p in series["p50_ms"] if p) <= 500  # in the 200-500 ms bucket


def test_a_stream_not_made_yet_counts_as_nothing_appended():
    client = fakeredis.FakeRedis(decode_responses=True)
    settings = WebSettings(stream="events", shards=2)
    samples = Samples(client, settings, dict, LATENCY_BUCKETS, WINDOW)
    client.xadd("events:{1}", {"channel": "m", "body": "1"})
    assert samples.stream_figures() == ({"events:{0}": 0, "events:{1}": 1}, 0)
