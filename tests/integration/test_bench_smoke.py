"""The benchmark runs from a clean checkout: every phase of its short form completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, clean_env

pytestmark = pytest.mark.integration


class QuickRun:
    """``script --quick --json out`` from the checkout, started now, in a session of its
    own (so that on a timeout the Redis, web, bridge and load generators it started go
    down with it)."""

    def __init__(self, script: str, out, *args: str) -> None:
        self.script = script
        self.process = subprocess.Popen(
            [sys.executable, script, "--quick", "--json", str(out), *args],
            cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        self.outputs: tuple[str, str] | None = None

    def finish(self) -> tuple[str, str]:
        """Wait for it to end (280 s at most): its stdout and stderr."""
        if self.outputs is None:
            try:
                self.outputs = self.process.communicate(timeout=280)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                _, stderr = self.process.communicate()
                raise AssertionError(
                    f"{self.script} --quick took over 280 s:\n{stderr[-5000:]}"
                ) from None
        return self.outputs

    def stdout(self) -> str:
        """It must succeed: its stdout."""
        stdout, stderr = self.finish()
        assert self.process.returncode == 0, stderr[-5000:]
        return stdout


def run_quick(script: str, out, *args: str) -> str:
    return QuickRun(script, out, *args).stdout()


# The three kinds of system the comparison's smoke run covers (the async modes run the
# same code as gevent; eventlet has a test pass of its own).
COMPARED = ("plain", "streambridge-gevent", "node")

# The benchmarks whose smoke runs check only that everything completes and arrives (no
# figure is compared with another) run side by side, started with the first of them
# (bench/run.py, which checks the same of itself). bench/bridge_ceiling.py compares
# figures with each other: it runs alone, before them.
ALONGSIDE = {
    "bench/cluster.py": (),
    "bench/recovery.py": (),
    "bench/presence.py": (),
    "bench/compare.py": ("--systems", ",".join(COMPARED)),
}
STARTED: list[QuickRun] = []
"""The runs started side by side so far (to wait for, before a run that must be alone)."""


@pytest.fixture(scope="module")
def alongside(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    runs = {}
    for script, args in ALONGSIDE.items():
        json_out = out / f"{Path(script).stem}.json"
        runs[script] = (QuickRun(script, json_out, *args), json_out)
        STARTED.append(runs[script][0])
    yield runs
    for run, _ in runs.values():
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.communicate()


@pytest.mark.timeout(300)
def test_quick_bridge_ceiling_runs(tmp_path):
    for run in STARTED:  # none, unless the tests were reordered: then let them end first
        run.finish()
    out = tmp_path / "ceiling.json"
    run_quick("bench/bridge_ceiling.py", out)
    result = json.loads(out.read_text())
    assert result["read_ack_per_s"] > result["bridge_per_s"] > 0
    assert result["publish_each_per_s"] > 0


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_every_phase(tmp_path, alongside):
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
def test_quick_cluster_benchmark_runs(alongside):
    run, out = alongside["bench/cluster.py"]
    run.stdout()
    runs = json.loads(out.read_text())["runs"]
    assert [(r["shards"], r["masters_used"]) for r in runs] == [(1, 1), (3, 3)]
    assert all(r["entries_per_s"] > 0 for r in runs)
    assert sum(runs[1]["entries_per_shard"]) == runs[1]["entries"]


@pytest.mark.timeout(300)
def test_quick_recovery_benchmark_runs_every_phase(alongside):
    run, out = alongside["bench/recovery.py"]
    run.stdout()
    results = json.loads(out.read_text())
    assert [row["others"] for row in results["flat"]] == [1_000, 10_000]
    assert all(row["connected_to_recovery_ms"] > 0 for row in results["flat"])
    storm = results["storm"]
    assert storm["recovered_exactly"] == storm["clients"] == 40
    assert results["bridge"]["with_history_per_s"] > 0
    assert results["memory"]["bytes_per_event"] > results["memory"]["body_bytes"]


@pytest.mark.timeout(300)
def test_quick_comparison_prints_the_systems_side_by_side(alongside):
    run, out = alongside["bench/compare.py"]
    stdout = run.stdout()
    systems = list(COMPARED)
    results = json.loads(out.read_text())["results"]
    assert [r["system"] for r in results] == systems
    header = stdout.splitlines()[0].split()
    assert header == ["figure", *systems]
    for result in results:
        for phase in ("rate_50", "rate_500", "saturation"):
            assert result[phase]["delivered_pct"] >= 100.0, (result["system"], phase)
            assert result[phase]["cpu_us_per_delivery"]["web"] > 0


@pytest.mark.timeout(300)
def test_quick_presence_benchmark_runs(alongside):
    run, out = alongside["bench/presence.py"]
    stdout = run.stdout()
    result = json.loads(out.read_text())
    # Every watcher of a room got every mover's join and leave.
    assert result["join_delivery_ms"]["n"] == result["leave_delivery_ms"]["n"] == 100
    assert result["heartbeat"]["presence_keys"] == 2 * 10
    assert "join delivered to watchers" in stdout
