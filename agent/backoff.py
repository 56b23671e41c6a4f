"""Capped exponential backoff with jitter, for every reconnect loop in the agent and its drivers."""

from __future__ import annotations

import random
from typing import Literal

FULL: Literal["full"] = "full"


class Backoff:
    """Delays that double from ``initial`` up to ``cap``, with jitter.

    ``jitter`` is a fraction (each delay is ``base * (1 +- jitter)``), or ``"full"``: each delay
    is uniform between 0 and ``base``. Proportional jitter keeps a store's few devices from
    retrying in lockstep. A fleet of agents that lost one broker at the same moment needs full
    jitter: with +-20 % at a 60 s cap every agent retries inside one 48-72 s window, and the
    first attempt after the loss (at ``initial``) is nearly simultaneous for all of them;
    bench/reconnect_jitter.py measures the difference.
    """

    def __init__(self, *, initial: float = 1.0, cap: float = 60.0,
                 jitter: float | Literal["full"] = 0.2) -> None:
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        base = min(self.cap, self.initial * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        if self.jitter == FULL:
            return random.uniform(0.0, base)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Call after a success: the next failure starts again at ``initial``."""
        self.attempts = 0
