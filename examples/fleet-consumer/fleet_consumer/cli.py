"""``fleet-consumer``: subscribe to the stores and print the fleet table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from fleet_consumer.client import FleetClient
from fleet_consumer.tracker import Fleet, render


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet-consumer", description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--topic-root", default="retail")
    parser.add_argument("--store", action="append", default=[],
                        help="a store id (repeatable); default: every store")
    parser.add_argument("--group", help="take events through this MQTT 5 shared-subscription "
                        "group when the broker offers one (see the README: mosquitto forgets "
                        "shared subscriptions when it restarts)")
    parser.add_argument("--client-id", default="fleet-consumer")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between tables")
    parser.add_argument("--grace", type=float, default=30.0,
                        help="seconds a missing seq may still arrive before it is a gap")
    parser.add_argument("--once", type=float, metavar="SECONDS",
                        help="listen this long, print one table and exit (1 if there are gaps)")
    parser.add_argument("--json", action="store_true", help="rows as JSON instead of a table")
    args = parser.parse_args(argv)

    client = FleetClient(Fleet(topic_root=args.topic_root), args.host, args.port,
                         stores=args.store, group=args.group or None, client_id=args.client_id)
    try:
        client.start()
    except (OSError, TimeoutError) as err:
        print(f"fleet-consumer: broker {args.host}:{args.port}: {err}", file=sys.stderr)
        return 3
    try:
        while True:
            time.sleep(args.once if args.once is not None else args.interval)
            rows = client.rows(args.grace)
            print(json.dumps(rows) if args.json else render(rows), flush=True)
            if args.once is not None:
                return 1 if any(r["gaps"] for r in rows) else 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.stop()


if __name__ == "__main__":
    sys.exit(main())
