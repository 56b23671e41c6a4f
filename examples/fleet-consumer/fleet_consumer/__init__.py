"""Reference consumer of store-edge-agent events for central teams (docs/dashboards.md)."""

from fleet_consumer.client import FleetClient, subscriptions
from fleet_consumer.tracker import Fleet, SeqTracker, Store, ranges, render

__all__ = ["Fleet", "FleetClient", "SeqTracker", "Store", "ranges", "render", "subscriptions"]
