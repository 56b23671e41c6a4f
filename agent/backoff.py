"""Capped exponential backoff with jitter, for every reconnect loop in the agent and its drivers."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``cap``, each with +-``jitter`` (a fraction).

    Jitter keeps a store full of devices (or a fleet of agents) from retrying in lockstep.
    """

    def __init__(self, *, initial: float = 1.0, cap: float = 60.0, jitter: float = 0.2) -> None:
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        base = min(self.cap, self.initial * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        """Call after a success: the next failure starts again at ``initial``."""
        self.attempts = 0
