"""The ``agent`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import ENV_PREFIX, AgentSection, Config, check_host, config_path, load_config
from agent.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
CHECK_NAMES = ("metadata", "sample", "imports", "working", "failing")
"""``agent.conformance.CHECKS``, repeated so that ``agent --help`` does not import the kit."""

Command = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _control_socket(args: argparse.Namespace) -> Path:
    """The running agent's control socket, for the commands that only need that.

    Only the sections are read: a device table broken since the agent started (and refused by
    its reload) must not hide the running agent. A user outside the service's group may not
    read the config file (mode 0640); then the socket is ``AGENT_AGENT__CONTROL_SOCKET`` or
    the default, said in one line on stderr, and the socket's own errors (exit 3) tell whether
    the agent can be reached.
    """
    from agent.config import load_settings

    try:
        return load_settings(config_path(args.config)).agent.control_socket
    except ConfigError as err:
        if not isinstance(err.__cause__, PermissionError):
            raise
    path = config_path(args.config)
    env = f"{ENV_PREFIX}AGENT__CONTROL_SOCKET"
    if override := os.environ.get(env):
        # a relative path is relative to the file's directory, as when the file is read
        sock, source = path.parent / override, f"${env}"
    else:
        sock, source = Path(AgentSection.model_fields["control_socket"].default), "the default"
    print(f"agent {args.command}: cannot read {path} (permission denied); using {source} "
          f"control socket {sock}", file=sys.stderr)
    return sock


def _refused(args: argparse.Namespace, err: Exception | str, code: int) -> int:
    """Say why ``agent <command>`` could not do its job, on stderr; return the exit code."""
    print(f"agent {args.command}: {err}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from agent import logs
    from agent.errors import InstanceLocked
    from agent.runtime import Agent

    config = _load(args)
    logs.setup(args.log_level or config.settings.agent.log_level)
    for warning in check_host(config):  # a fatal problem: ConfigError, exit 2
        logging.getLogger("agent.config").warning("%s", warning)
    try:
        return asyncio.run(Agent(config).run())
    except InstanceLocked as err:
        return _refused(args, f"{err}; not starting a second one", EXIT_USAGE)


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    for warning in check_host(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(config.summary())
    return EXIT_OK


def _allowlist(args: argparse.Namespace) -> list[str] | None:
    """``[agent] drivers`` of the config file, if there is one; the devices are not checked."""
    from agent.config import load_settings

    path = config_path(args.config)
    if not path.exists():
        return None
    try:
        return load_settings(path).agent.drivers
    except ConfigError as err:
        print(f"agent drivers: cannot read the allowlist: {err.problems[0]}", file=sys.stderr)
        return None


def _families(types: Sequence[str]) -> str:
    """``emits`` for a table: a family emitted whole shows as ``eas.*``."""
    from agent.events import CATALOGUE

    out: list[str] = []
    for family in dict.fromkeys(t.partition(".")[0] for t in types):
        members = [t for t in CATALOGUE if t.startswith(family + ".")]
        mine = [t for t in types if t.startswith(family + ".")]
        out += [f"{family}.*"] if len(mine) > 1 and set(members) <= set(mine) else mine
    return " ".join(out) or "-"


def _driver_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from agent.registry import discover

    rows: list[dict[str, Any]] = []
    for info in sorted(discover(_allowlist(args)).values(), key=lambda d: d.name):
        cls = info.load()
        status = "loaded" if cls else "not allowed" if not info.allowed else "failed"
        rows.append({
            "name": info.name,
            "version": cls.version if cls else "",
            "package": info.package,
            "package_version": info.package_version,
            "vendor": cls.vendor if cls else "",
            "description": cls.description if cls else "",
            "entry_point": info.entry_point,
            "emits": list(cls.emits) if cls else [],
            "actions": list(cls.actions) if cls else [],
            "keys": sorted(cls.Config.model_fields) if cls else [],
            "status": status,
            "loads": info.loads,
            "error": info.error,
        })
    return rows


def cmd_drivers(args: argparse.Namespace) -> int:
    if args.drivers_command == "check":
        return cmd_drivers_check(args)
    rows = _driver_rows(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table: list[tuple[Any, ...]] = [("NAME", "VERSION", "PACKAGE", "VENDOR", "EMITS", "STATUS")]
    table += [(r["name"], r["version"] or "-", f"{r['package']} {r['package_version']}",
               r["vendor"] or "-", _families(r["emits"]), r["status"]) for r in rows]
    _print_table(table)
    for r in rows:
        if args.verbose:
            print(f"\n{r['name']}: {r['description'] or '-'}\n"
                  f"  entry point: {r['entry_point']}\n"
                  f"  emits: {', '.join(r['emits']) or '-'} (and device.online/offline)\n"
                  f"  actions: {', '.join(r['actions']) or '-'}\n"
                  f"  keys: {', '.join(r['keys']) or '-'}")
        if r["error"]:
            print(f"{'  ' if args.verbose else ''}{r['name']}: {r['error']}")
    return EXIT_OK


def cmd_drivers_check(args: argparse.Namespace) -> int:
    from agent.conformance import CHECKS, run_check
    from agent.registry import discover

    # The drivers' own log lines (a refused port...) are expected here; -v shows them.
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL + 1,
                        format="    log: %(name)s: %(message)s")
    installed = discover()
    names = args.names or sorted(installed)
    unknown = [n for n in names if n not in installed]
    if unknown:
        print(f"agent drivers check: not installed: {', '.join(unknown)} "
              f"(installed: {', '.join(sorted(installed)) or 'none'})", file=sys.stderr)
        return EXIT_USAGE
    checks = args.checks or list(CHECKS)
    results = []
    for name in names:
        for check in checks:
            result = run_check(name, check)
            results.append(result)
            if not args.json:
                verdict = "ok" if result.ok else "FAIL"
                print(f"{name:<16} {check:<9} {verdict:<4} {result.seconds:5.1f} s", flush=True)
                for problem in result.problems:
                    print(f"    {problem}", flush=True)
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps([{"driver": r.driver, "check": r.check, "ok": r.ok,
                           "problems": list(r.problems), "seconds": round(r.seconds, 3)}
                          for r in results], indent=2))
    else:
        print(f"{len(results) - len(failed)} of {len(results)} checks passed"
              f"{'' if not failed else ': ' + ', '.join(f'{r.driver} {r.check}' for r in failed)}")
    return EXIT_FAIL if failed else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from agent.events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from agent.asyncapi import asyncapi_document

    print(json.dumps(asyncapi_document(), indent=2))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from agent import control
    from agent.commands import CommandError
    from agent.errors import ControlError
    from agent.status import problems, render_status

    sock = _control_socket(args)
    try:
        reply = control.call(sock, "status", timeout=10)
    except (ControlError, CommandError) as err:  # not reachable, or busy (its client limit)
        return _refused(args, err, EXIT_UNREACHABLE)
    status = reply["agent"]
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return EXIT_FAIL if problems(status) else EXIT_OK


def cmd_outputs_test(args: argparse.Namespace) -> int:
    """Send a labelled test alarm through one output of the running agent; print the answer."""
    from agent import control
    from agent.commands import CommandError
    from agent.errors import ControlError

    try:
        reply = control.call(_control_socket(args), "outputs_test", output=args.name,
                             timeout=150)
    except ControlError as err:
        return _refused(args, err, EXIT_UNREACHABLE)
    except CommandError as err:
        return _refused(args, err, EXIT_USAGE)
    result = reply["result"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"output {result['output']} ({result['kind']}) to {result['target']}: test alarm "
              f"for exit {result['exit']} (camera {result['camera']}) "
              + ("DELIVERED" if result["delivered"] else "NOT DELIVERED"))
        print(f"  target answered: {result['answer']}")
    return EXIT_OK if result["delivered"] else EXIT_FAIL


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

    sock = _control_socket(args)
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
        reply = control.call(sock, "sim", kind=args.kind,
                             device=args.device, sim=args.sim, params=params)
    except ControlError as err:
        return _refused(args, err, EXIT_UNREACHABLE)
    except CommandError as err:
        return _refused(args, err, EXIT_USAGE)
    print(json.dumps(reply.get("result", {})))
    return EXIT_OK


def cmd_selftest(args: argparse.Namespace) -> int:
    from agent.commands import CommandError
    from agent.errors import AgentNotRunning, ControlError, InstanceLocked
    from agent.selftest.console import Terminal, run_through_service
    from agent.selftest.report import ProgressPrinter, junit_xml
    from agent.units import plural

    out = sys.stderr if args.json else sys.stdout
    show = ProgressPrinter(lambda line: print(line, file=out, flush=True))
    terminal = Terminal()
    path = _control_socket(args)
    log_note = ""
    try:
        try:
            reports = run_through_service(path, args.exit, args.walk, show, terminal)["reports"]
            where = "the running agent"
        except AgentNotRunning as err:
            try:
                config = _load(args)  # in-process needs the whole file, devices included
            except ConfigError as problem:
                if not isinstance(problem.__cause__, PermissionError):
                    raise
                return _refused(args, ControlError(
                    f"{err}, and this user cannot run the self-test in-process: "
                    f"{problem.problems[0]}"), EXIT_UNREACHABLE)

            def announce() -> None:
                print(f"agent selftest: no agent service is running ({path}); running the "
                      "self-test in-process", file=sys.stderr, flush=True)

            try:
                reports, log_note = _selftest_in_process(args, config, show, terminal,
                                                         announce)
            except InstanceLocked as locked:
                # No answer on the socket, yet an agent holds the data_dir: its buffer and
                # devices are not ours to open.
                if locked.role == "agent selftest":
                    why = "wait until that self-test has finished"
                else:
                    why = (f"its control socket cannot be reached: {err}. Not running the "
                           "self-test in-process beside it: check that agent's [agent] "
                           "control_socket, or stop it first")
                return _refused(args, f"{locked}; {why}", EXIT_UNREACHABLE)
            where = "in-process"
    except ControlError as err:
        return _refused(args, err, EXIT_UNREACHABLE)
    except CommandError as err:
        return _refused(args, err, EXIT_USAGE)
    except OSError as err:
        return _refused(args, f"cannot run the self-test in-process: {err}", EXIT_UNREACHABLE)
    if args.junit:
        Path(args.junit).write_text(junit_xml(reports))
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        verdicts = ", ".join(f"{r['exit']} {r['result'].upper()}" for r in reports)
        print(f"\n{plural(len(reports), 'exit')} tested ({where}): {verdicts}")
    if log_note:
        print(log_note, file=sys.stderr)
    return EXIT_OK if all(r["result"] == "pass" for r in reports) else EXIT_FAIL


def cmd_web(args: argparse.Namespace) -> int:
    from agent.commands import CommandError
    from agent.errors import ControlError
    from agent.web import cli

    try:
        cli.run(args, _control_socket(args))
    except ControlError as err:
        return _refused(args, err, EXIT_UNREACHABLE)
    except (CommandError, ValueError) as err:
        return _refused(args, err, EXIT_USAGE)
    return EXIT_OK


def _selftest_in_process(args: argparse.Namespace, config: Config, show: Any, terminal: Any,
                         announce: Callable[[], None]) -> tuple[list[dict[str, Any]], str]:
    """Run the self-tests here; the agent's log goes to a file, not into the table.

    Returns the reports and a line saying where the log is and how many warnings it has.

    Raises:
        InstanceLocked: an agent runs on this data_dir (see ``run_in_process``).
    """
    from agent import logs
    from agent.selftest.console import ConsoleOperator, run_in_process
    from agent.units import plural

    log_path = config.settings.agent.data_dir / "selftest" / "in-process.log"
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("a", encoding="utf-8")
    except OSError:
        logs.setup("error")  # nowhere to keep it: only errors, on the terminal
        return run_in_process(config, args.exit, args.walk, ConsoleOperator(show, terminal),
                              announce=announce), ""
    counter = _LevelCounter()
    with log_file:
        logs.setup("info", stream=log_file)
        logging.getLogger().addHandler(counter)
        reports = run_in_process(config, args.exit, args.walk, ConsoleOperator(show, terminal),
                                 announce=announce)
    note = f"the agent's log of this run: {log_path}"
    if counter.count:
        note += f" ({plural(counter.count, 'warning')} or errors)"
    return reports, note


class _LevelCounter(logging.Handler):
    """Counts the warnings and errors logged during an in-process self-test."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _print_table(rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


CONFIG_HELP = "config file (default: $AGENT_CONFIG or /etc/store-edge-agent/agent.toml)"


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser (and its own subcommands'): ``agent status -c F`` as well as
    ``agent -c F status``. No default, so that it does not hide one given before."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_argument("-c", "--config", default=argparse.SUPPRESS, help=CONFIG_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="Store edge agent: loss-prevention hardware to MQTT events."
    )
    parser.add_argument("--version", action="version", version=f"store-edge-agent {__version__}")
    parser.add_argument("-c", "--config", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_SubcommandParser)

    p = sub.add_parser("run", help="run the service in the foreground")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("check", help="validate the config file and exit")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("drivers", help="list installed drivers; `drivers check` runs the "
                       "conformance kit")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show each driver's emitted types, actions and config keys")
    p.set_defaults(func=cmd_drivers, drivers_command=None)
    dsub = p.add_subparsers(dest="drivers_command", metavar="SUBCOMMAND")
    c = dsub.add_parser("check", help="run the conformance kit on installed drivers (exit 1 if a "
                        "check fails)")
    c.add_argument("names", nargs="*", metavar="NAME", help="driver names (default: all installed)")
    c.add_argument("--check", dest="checks", action="append", choices=CHECK_NAMES,
                   help="run only this check (repeatable)")
    c.add_argument("--json", action="store_true")
    c.add_argument("-v", "--verbose", action="store_true", help="show the drivers' log lines")

    p = sub.add_parser("status", help="the running agent's status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("outputs", help="VMS and webhook outputs ([outputs.<name>])")
    osub = p.add_subparsers(dest="outputs_command", metavar="SUBCOMMAND", required=True)
    c = osub.add_parser("test", help="send a labelled test alarm through one output of the "
                        "running agent and print what the target answered (exit 1 if refused)")
    c.add_argument("name", help="the output's name")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_outputs_test)

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

    p = sub.add_parser("selftest", help="prove each exit's alarm chain works (exit 1 if not)")
    p.add_argument("--exit", help="only this exit (default: every exit)")
    p.add_argument("--walk", action="store_true",
                   help="walk test: a technician at the exit carries a test tag out when told")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    p.set_defaults(func=cmd_selftest)

    from agent.web.cli import add_parser as add_web_parser

    add_web_parser(sub).set_defaults(func=cmd_web)

    p = sub.add_parser("schema", help="print the JSON Schema (2020-12) that validates an event")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("asyncapi", help="print the AsyncAPI 3.0 document of the MQTT topics")
    p.set_defaults(func=cmd_asyncapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        if len(err.problems) == 1:
            print(f"configuration error: {err.problems[0]}", file=sys.stderr)
        else:
            print(f"configuration error: {len(err.problems)} problems", file=sys.stderr)
            for problem in err.problems:
                print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `agent status --json | head`: the reader is gone; no traceback, and none at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
