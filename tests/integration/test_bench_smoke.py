"""The benchmark runs from a clean checkout: every phase of its short form completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, clean_env, wait_until

pytestmark = pytest.mark.integration


class QuickRun:
    """``script --quick --json out`` from the checkout, started now, in a session of its
    own (so that on a timeout the Redis, web, bridge and load generators it started go
    down with it). Its output goes to files beside ``out``: a process it leaves behind
    cannot hold a pipe open and keep the wait from ending."""

    def __init__(self, script: str, out: Path, *args: str) -> None:
        self.script = script
        self.paths = (out.with_suffix(".stdout"), out.with_suffix(".stderr"))
        with self.paths[0].open("w") as stdout, self.paths[1].open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, script, "--quick", "--json", str(out), *args],
                cwd=ROOT, env=clean_env(), stdout=stdout, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        self.outputs: tuple[str, str] | None = None
        self.settle_s = 10.0  # for what it stopped to be reaped

    def finish(self) -> tuple[str, str]:
        """Wait for it to end (270 s at most) and check that it stopped everything it
        started: its stdout and stderr."""
        if self.outputs is None:
            try:
                self.process.wait(timeout=270)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.script} --quick took over 270 s:\n{self.read()[1][-5000:]}"
                ) from None
            self.outputs = self.read()
            try:
                wait_until(lambda: not self.left_running(), self.settle_s, "nothing left")
            except AssertionError:
                left = [describe(p) for p in self.left_running()]
                self.kill()
                raise AssertionError(
                    f"{self.script} left running: {left}; it exited "
                    f"{self.process.returncode}:\n{self.outputs[1][-3000:]}"
                ) from None
        return self.outputs

    def read(self) -> tuple[str, str]:
        stdout, stderr = (path.read_text(errors="replace") for path in self.paths)
        return stdout, stderr

    def left_running(self) -> list[psutil.Process]:
        """The processes of its session still running (not yet reaped zombies aside)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == self.process.pid and proc.status() != "zombie":
                    found.append(proc)
            except (OSError, psutil.Error):  # gone meanwhile
                continue
        return found

    def kill(self) -> None:
        if self.process.poll() is None:  # once reaped, its number may be another's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for proc in self.left_running():  # those that made a process group of their own
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.process.wait()
        wait_until(lambda: not self.left_running(), 10, f"what {self.script} left to end")

    def stdout(self) -> str:
        """It must succeed: its stdout."""
        stdout, stderr = self.finish()
        assert self.process.returncode == 0, stderr[-5000:]
        return stdout


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline()[:4])}"
    except psutil.Error:  # ended meanwhile
        return str(proc.pid)


def run_quick(script: str, out, *args: str) -> str:
    return QuickRun(script, out, *args).stdout()


def test_a_run_that_leaves_a_process_behind_fails_at_once(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(
        "import subprocess, sys\n"
        "subprocess.Popen(['sleep', '60'], stdout=sys.stdout, stderr=sys.stderr)\n"
        "print('done')\n"
    )
    run = QuickRun(str(script), tmp_path / "leaky.json")
    run.settle_s = 1.0
    with pytest.raises(AssertionError, match=r"left running: \['\d+ sleep 60'\]"):
        run.finish()
    assert not run.left_running()  # and it was killed


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
        run.kill()


@pytest.mark.timeout(300)
def test_quick_bridge_ceiling_runs(tmp_path):
    for run in STARTED:  # none, unless the tests were reordered: then let them end first
        run.finish()
    out = tmp_path / "ceiling.json"
    run_quick("bench/bridge_ceiling.py", out)
    result = json.loads(out.read_text())
    # Figures only: which is higher is for the full run to show (on a busy machine a
    # short run's ceiling can come out below the bridge).
    assert result["read_ack_per_s"] > 0 and result["bridge_per_s"] > 0
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
