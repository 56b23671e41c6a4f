"""The ``agent`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__
from agent.config import Config, config_path, load_config
from agent.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

Command = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from agent import logs
    from agent.runtime import Agent

    config = _load(args)
    logs.setup(args.log_level or config.settings.agent.log_level)
    return asyncio.run(Agent(config).run())


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    print(config.summary())
    return EXIT_OK


def cmd_drivers(args: argparse.Namespace) -> int:
    from agent.registry import discover

    allow = None
    path = config_path(args.config)
    if path.exists():
        try:
            allow = load_config(path).settings.agent.drivers
        except ConfigError:
            allow = None
    drivers = discover(allow)
    rows: list[dict[str, Any]] = []
    for info in sorted(drivers.values(), key=lambda d: d.name):
        cls = info.cls
        rows.append({
            "name": info.name,
            "version": cls.version if cls else "",
            "package": f"{info.package} {info.package_version}",
            "vendor": cls.vendor if cls else "",
            "emits": list(cls.emits) if cls else [],
            "actions": list(cls.actions) if cls else [],
            "loads": info.loads,
            "error": info.error,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table: list[tuple[Any, ...]] = [("NAME", "VERSION", "PACKAGE", "VENDOR", "LOADS")]
    table += [(r["name"], r["version"], r["package"], r["vendor"],
               "yes" if r["loads"] else f"no: {r['error']}") for r in rows]
    _print_table(table)
    if args.verbose:
        for r in rows:
            print(f"\n{r['name']}: emits {', '.join(r['emits']) or '-'}; "
                  f"actions {', '.join(r['actions']) or '-'}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from agent.events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent import control
    from agent.errors import ControlError
    from agent.status import render_status

    config = _load(args)
    try:
        reply = control.call(config.settings.agent.control_socket, "status", timeout=10)
    except ControlError as err:
        print(f"agent status: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    status = reply["agent"]
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    healthy = status["broker"]["connected"] and all(
        d["online"] or d["finished"] for d in status["devices"].values()
    )
    return EXIT_OK if healthy else EXIT_FAIL


def cmd_tail(args: argparse.Namespace) -> int:
    from agent.tail import tail

    config = _load(args)
    return tail(config.settings, raw=args.raw, count=args.count, timeout=args.timeout,
                states=args.states)


def cmd_sim(args: argparse.Namespace) -> int:
    from agent import control
    from agent.commands import CommandError
    from agent.errors import ControlError
    from agent.units import parse_duration

    config = _load(args)
    params: dict[str, Any] = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"agent sim: parameters are KEY=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        params[key] = value
    if args.duration is not None:
        try:
            params["for"] = parse_duration(args.duration)
        except ValueError as err:
            print(f"agent sim: --for: {err}", file=sys.stderr)
            return EXIT_USAGE
    try:
        reply = control.call(config.settings.agent.control_socket, "sim", kind=args.kind,
                             device=args.device, sim=args.sim, params=params)
    except ControlError as err:
        print(f"agent sim: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except CommandError as err:
        print(f"agent sim: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(reply.get("result", {})))
    return EXIT_OK


def _print_table(rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="Store edge agent: loss-prevention hardware to MQTT events."
    )
    parser.add_argument("--version", action="version", version=f"store-edge-agent {__version__}")
    parser.add_argument(
        "-c", "--config", help="config file (default: $AGENT_CONFIG or "
        "/etc/store-edge-agent/agent.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the service in the foreground")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("check", help="validate the config file and exit")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("drivers", help="list installed drivers")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="show emitted types and actions")
    p.set_defaults(func=cmd_drivers)

    p = sub.add_parser("status", help="the running agent's status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tail", help="print this store's events as they arrive at the broker")
    p.add_argument("--raw", action="store_true", help="print each event's JSON")
    p.add_argument("--states", action="store_true",
                   help="also print retained device states and status updates")
    p.add_argument("-n", "--count", type=int, help="exit after this many events")
    p.add_argument("--timeout", type=float, help="exit after this many seconds")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("sim", help="drive simulated hardware of a running agent")
    p.add_argument("kind", help="the kind of device: gpio, eas, modbus, onvif...")
    p.add_argument("device", help="device id")
    p.add_argument("sim", metavar="command", help="e.g. high, low, pulse, alarm")
    p.add_argument("params", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 500ms, 3s")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("schema", help="print the JSON Schema of the envelope and payloads")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print("configuration error:", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
