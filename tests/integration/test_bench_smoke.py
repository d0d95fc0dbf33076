"""The benchmark runs from a clean checkout: every phase of its short form completes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT, clean_env

pytestmark = pytest.mark.integration


def run_quick(script: str, out) -> subprocess.CompletedProcess:
    """``script --quick --json out`` from the checkout; it must succeed."""
    run = subprocess.run(
        [sys.executable, script, "--quick", "--json", str(out)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.timeout(300)
def test_quick_benchmark_runs_every_phase(tmp_path):
    out = tmp_path / "bench.json"
    run = run_quick("bench/run.py", out)
    results = json.loads(out.read_text())
    errors = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    assert all("error" not in phase for phase in results["overload"])
    assert results["bridge_backlog"]["entries_per_s"] > 0
    for phase in results["rates"]:
        assert phase["delivered_pct"] == 100.0, phase
    assert "bridge backlog" in run.stdout  # the table


@pytest.mark.timeout(300)
def test_quick_cluster_benchmark_runs(tmp_path):
    out = tmp_path / "cluster.json"
    run_quick("bench/cluster.py", out)
    runs = json.loads(out.read_text())["runs"]
    assert [(r["shards"], r["masters_used"]) for r in runs] == [(1, 1), (3, 3)]
    assert all(r["entries_per_s"] > 0 for r in runs)
    assert sum(runs[1]["entries_per_shard"]) == runs[1]["entries"]
