"""Runs streambridge.js in Node under a harness of tests/unit with a stand-in socket
(client_stand_in.js): the harnesses of the client's unit tests share this runner."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.support import ROOT

CLIENT = ROOT / "webapp" / "ext" / "static" / "streambridge.js"


def run_harness(harness: str, steps: list[list]) -> dict:
    """Runs tests/unit/<harness> on streambridge.js with these steps; what it prints."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run scripts/setup.sh --test")
    done = subprocess.run(
        [node, str(ROOT / "tests" / "unit" / harness), str(CLIENT), json.dumps(steps)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
