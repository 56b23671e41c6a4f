"""``agent web pair|sessions|revoke``: the terminal side of pairing, over the control socket."""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from agent import control

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``web`` subcommand and its own subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "web", help="pair phones with the web page, list and revoke their sessions")
    wsub = p.add_subparsers(dest="web_command", metavar="SUBCOMMAND", required=True)
    c = wsub.add_parser("pair", help="print a one-time pairing link and its QR code")
    c.add_argument("--role", choices=["viewer", "operator"], default="viewer",
                   help="viewer sees; operator may also run self-tests and walk tests")
    c.add_argument("--for", dest="duration", default="10m", metavar="DURATION",
                   help="how long the link can be used (default 10m)")
    c.add_argument("--no-qr", action="store_true", help="print the link only")
    c = wsub.add_parser("sessions", help="the paired phones")
    c.add_argument("--json", action="store_true")
    c = wsub.add_parser("revoke", help="end a session now")
    c.add_argument("id", help="the session id (`agent web sessions`)")
    return p


def _when(stamp: str | None) -> str:
    """An RFC 3339 time as local ``YYYY-MM-DD HH:MM``."""
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime(
        "%Y-%m-%d %H:%M")


def _qr(text: str) -> str:
    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def run(args: argparse.Namespace, sock: Path) -> dict[str, Any]:
    """Run ``agent web ...`` against the agent on ``sock``; print what the technician needs.

    Raises:
        ControlError: the agent cannot be reached; CommandError: it refused; ValueError: a bad
        ``--for``.
    """
    from agent.units import parse_duration

    if args.web_command == "pair":
        seconds = parse_duration(args.duration)
        reply = control.call(sock, "web", timeout=10, do="pair", role=args.role, **{"for": seconds})
        if not args.no_qr:
            print(_qr(reply["link"]))
        print(f"Open this link on the phone within {args.duration} (once, as {reply['role']}):\n"
              f"  {reply['link']}\n"
              f"The page's certificate has the SHA-256 fingerprint\n"
              f"  {reply['fingerprint_sha256']}")
        return reply
    if args.web_command == "sessions":
        reply = control.call(sock, "web", timeout=10, do="sessions")
        sessions = reply["sessions"]
        if args.json:
            print(json.dumps(sessions, indent=2))
        elif not sessions:
            print("no paired phones")
        else:
            print(f"{'ID':<10} {'ROLE':<9} {'PAIRED':<17} {'EXPIRES':<17} {'LAST SEEN':<17} CLIENT")
            for s in sessions:
                print(f"{s['id']:<10} {s['role']:<9} {_when(s['created']):<17} "
                      f"{_when(s['expires']):<17} {_when(s['last_seen']):<17} {s['client']}")
        return reply
    reply = control.call(sock, "web", timeout=10, do="revoke", id=args.id)
    print(f"session {reply['revoked']['id']} ({reply['revoked']['role']}) revoked")
    return reply
