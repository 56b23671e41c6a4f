"""Exit self-tests: the steps (engine), runs and reports (runner), the schedule, the printout."""

from agent.selftest.engine import ExitSelftest, Operator, Step
from agent.selftest.runner import QueueOperator, Selftests, SilentOperator

__all__ = ["ExitSelftest", "Operator", "QueueOperator", "Selftests", "SilentOperator", "Step"]
