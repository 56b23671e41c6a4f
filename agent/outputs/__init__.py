"""Outputs beside MQTT: VMS and HTTP targets, each with its own durable cursor over the buffer.

One module per kind; ``KINDS`` maps a ``[outputs.<name>] kind`` to its class.
"""

from __future__ import annotations

from agent.outputs.base import DEFAULT_TYPES, DeliveryError, Output, OutputConfig, Template
from agent.outputs.exacq_serial import ExacqSerial
from agent.outputs.milestone_analytics import MilestoneAnalytics
from agent.outputs.milestone_generic import MilestoneGeneric
from agent.outputs.webhook import Webhook

KINDS: dict[str, type[Output]] = {
    cls.kind: cls for cls in (MilestoneGeneric, MilestoneAnalytics, ExacqSerial, Webhook)
}

__all__ = ["DEFAULT_TYPES", "KINDS", "DeliveryError", "Output", "OutputConfig", "Template"]
