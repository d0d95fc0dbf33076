"""The benchmark runs from a clean checkout: every phase of its short form completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support import ROOT, clean_env

pytestmark = pytest.mark.integration


def run_quick(script: str, out) -> str:
    """``script --quick --json out`` from the checkout; it must succeed. Its stdout."""
    # A session of its own, so that on a timeout the Redis, web, bridge and load
    # generators it started go down with it.
    run = subprocess.Popen(
        [sys.executable, script, "--quick", "--json", str(out)],
        cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = run.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        stdout, stderr = run.communicate()
        raise AssertionError(f"{script} --quick took over 280 s:\n{stderr[-5000:]}") from None
    assert run.returncode == 0, stderr[-5000:]
    return stdout


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_every_phase(tmp_path):
    out = tmp_path / "bench.json"
    stdout = run_quick("bench/run.py", out)
    results = json.loads(out.read_text())
    errors = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    assert all("error" not in phase for phase in results["overload"])
    assert results["bridge_backlog"]["entries_per_s"] > 0
    for phase in results["rates"]:
        assert phase["delivered_pct"] == 100.0, phase
    assert "bridge backlog" in stdout  # the table


@pytest.mark.timeout(300)
def test_quick_cluster_benchmark_runs(tmp_path):
    out = tmp_path / "cluster.json"
    run_quick("bench/cluster.py", out)
    runs = json.loads(out.read_text())["runs"]
    assert [(r["shards"], r["masters_used"]) for r in runs] == [(1, 1), (3, 3)]
    assert all(r["entries_per_s"] > 0 for r in runs)
    assert sum(runs[1]["entries_per_shard"]) == runs[1]["entries"]


@pytest.mark.timeout(300)
def test_quick_recovery_benchmark_runs_every_phase(tmp_path):
    out = tmp_path / "recovery.json"
    run_quick("bench/recovery.py", out)
    results = json.loads(out.read_text())
    assert [row["others"] for row in results["flat"]] == [1_000, 10_000]
    assert all(row["connected_to_recovery_ms"] > 0 for row in results["flat"])
    storm = results["storm"]
    assert storm["recovered_exactly"] == storm["clients"] == 40
    assert results["bridge"]["with_history_per_s"] > 0
    assert results["memory"]["bytes_per_event"] > results["memory"]["body_bytes"]


@pytest.mark.timeout(300)
def test_quick_comparison_prints_every_system_side_by_side(tmp_path):
    out = tmp_path / "compare.json"
    stdout = run_quick("bench/compare.py", out)
    results = json.loads(out.read_text())["results"]
    systems = [r["system"] for r in results]
    assert systems == [
        "plain",
        "streambridge-gevent",
        "streambridge-eventlet",
        "streambridge-threading",
        "node",
    ]
    header = stdout.splitlines()[0].split()
    assert header == ["figure", *systems]
    for result in results:
        for phase in ("rate_50", "rate_500", "saturation"):
            assert result[phase]["delivered_pct"] >= 100.0, (result["system"], phase)
            assert result[phase]["cpu_us_per_delivery"]["web"] > 0


@pytest.mark.timeout(300)
def test_quick_bridge_ceiling_runs(tmp_path):
    out = tmp_path / "ceiling.json"
    run_quick("bench/bridge_ceiling.py", out)
    result = json.loads(out.read_text())
    assert result["read_ack_per_s"] > result["bridge_per_s"] > 0
    assert result["publish_each_per_s"] > 0


@pytest.mark.timeout(300)
def test_quick_presence_benchmark_runs(tmp_path):
    out = tmp_path / "presence.json"
    stdout = run_quick("bench/presence.py", out)
    result = json.loads(out.read_text())
    # Every watcher of a room got every mover's join and leave.
    assert result["join_delivery_ms"]["n"] == result["leave_delivery_ms"]["n"] == 100
    assert result["heartbeat"]["presence_keys"] == 2 * 10
    assert "join delivered to watchers" in stdout
