"""Capped exponential back-off with jitter."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.minimum * (2**self.attempt))
        self.attempt += 1
        # Jitter keeps several bridges from reconnecting in lock-step.
        return delay * random.uniform(0.8, 1.0)  # noqa: S311

    def reset(self) -> None:
        self.attempt = 0
