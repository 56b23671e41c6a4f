"""replay: emits recorded events from a JSON Lines file (demos, benchmarks, tests)."""

from drivers.replay.driver import ReplayConfig, ReplayDriver

__all__ = ["ReplayConfig", "ReplayDriver"]
