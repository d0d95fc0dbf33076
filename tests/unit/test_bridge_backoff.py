"""The bridge's pause after failures in a row: exponential from backoff_min_s, capped at
backoff_max_s, jittered to 80-100 % of it."""

from __future__ import annotations

import math

import pytest
from streambridge.bridge.daemon import retry_backoff

from streambridge.settings import BridgeSettings


@pytest.mark.parametrize(("low", "high"), [(0.5, 30.0), (0.1, 1.0), (2.0, 2.0), (3.0, 1.0)])
def test_the_pause_grows_from_the_minimum_to_the_maximum(low, high):
    settings = BridgeSettings(backoff_min_s=low, backoff_max_s=high)
    backoff = retry_backoff(settings)
    cap = max(low, high)
    for failures in range(2000):
        ceiling = min(cap, math.ldexp(low, failures)) if failures < 1000 else cap
        for _ in range(5):
            delay = backoff.compute(failures)
            assert 0.8 * ceiling <= delay <= ceiling <= cap
    # After enough failures the pause sits just under the cap, never above it.
    assert all(0.8 * cap <= backoff.compute(60) <= cap for _ in range(50))
    assert min(backoff.compute(0) for _ in range(50)) >= 0.8 * low
