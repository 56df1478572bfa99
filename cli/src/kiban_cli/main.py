"""The `kiban` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kiban_cli.services import SERVICE_NAMES
from kiban_common.telemetry import configure_logging

# Imports are deferred: a command imports what it runs, so `kiban token` or `kiban audit verify
# intake` does not import six services (pandas among them). Only the parser of the command named
# on the line is built. Without one (`kiban`, `kiban --help`) the CLI's own commands are built and
# the services' are listed from `_SERVICE_COMMANDS`; with an unknown one, everything is built
# (every service's `cli` module imported), so "invalid choice" lists every command.


def _add_serve(sub: Any) -> None:
    from kiban_cli import commands

    serve = sub.add_parser("serve", help="run one service with settings from KIBAN_* variables")
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(run=commands.serve)


def _add_dev(sub: Any) -> None:
    from kiban_cli import commands

    dev = sub.add_parser("dev", help="all six services in one process on the embedded default")
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(run=commands.dev)


def _add_demo(sub: Any) -> None:
    from kiban_cli import commands

    demo = sub.add_parser("demo", help="run `dev` and drive the scenario, printing each step")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state directory (default: $KIBAN_STATE_DIR or ./.kiban); the demo uses STATE/demo/",
    )
    demo.set_defaults(run=commands.demo)


def _add_token(sub: Any) -> None:
    from kiban_cli import commands

    token = sub.add_parser("token", help="print a bearer token from the development issuer")
    token.add_argument("--sub", required=True, help="principal, e.g. institution:1312345678")
    token.add_argument("--scope", default="", help='space-separated scopes, e.g. "intake:submit"')
    token.add_argument(
        "--claim", action="append", default=[], metavar="K=V", help="an extra claim (repeatable)"
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(run=commands.token)


def _add_migrate(sub: Any) -> None:
    from kiban_cli import commands

    migrate = sub.add_parser("migrate", help="apply a service's schema migrations (production)")
    migrate.add_argument("service", choices=SERVICE_NAMES)
    migrate.set_defaults(run=commands.migrate)


def _add_audit(sub: Any) -> None:
    from kiban_cli import commands

    audit = sub.add_parser("audit", help="the hash-chained audit logs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check a service's audit chain and anchors")
    verify.add_argument("service", choices=SERVICE_NAMES)
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="the service's database (default: KIBAN_* settings)")
    where.add_argument("--dev", action="store_true", help="the embedded default under ./.kiban/")
    verify.set_defaults(run=commands.audit_verify)


def _add_incident(sub: Any) -> None:
    from kiban_cli import commands, incident

    incident.add_parser(sub, commands.incident_report)


def _add_keys(sub: Any) -> None:
    from kiban_cli import keys

    keys.add_parser(sub)


# The CLI's own commands, in the order help lists them.
_COMMANDS: dict[str, Callable[[Any], None]] = {
    "serve": _add_serve,
    "dev": _add_dev,
    "demo": _add_demo,
    "token": _add_token,
    "migrate": _add_migrate,
    "audit": _add_audit,
    "incident": _add_incident,
    "keys": _add_keys,
}

# Commands a service ships on files, from its own `cli` module: command -> (service, help).
# `kiban link ...` imports linkage's module alone, and `kiban --help` lists them from here without
# importing any (the anonymizer's imports pandas). An unknown command word still imports every
# service's `cli` module, so a command missing here keeps working;
# `deploy/tests/test_image_start.py` checks that this table lists exactly what they register.
_SERVICE_COMMANDS: dict[str, tuple[str, str]] = {
    "link": (
        "linkage",
        "link (or deduplicate) identity records in CSV files with the linkage matcher",
    ),
    "anonymize": (
        "anonymizer",
        "k-anonymize (and l-diversify) a CSV file with ARX-format hierarchies",
    ),
    "release": ("release", "release tools: trace a leaked file, verify a manifest"),
}


def _command_word(argv: Sequence[str]) -> str | None:
    """The command named on the line: the first argument not an option (`kiban` itself has no
    option that takes a value), or None when help is asked for before it."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _root() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="kiban", description=__doc__)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    command = _command_word(sys.argv[1:] if argv is None else argv)
    parser, sub = _root()
    if command in _COMMANDS:
        _COMMANDS[command](sub)
        return parser
    if command in _SERVICE_COMMANDS:
        _add_service_cli(sub, _SERVICE_COMMANDS[command][0])
        if command in sub.choices:
            return parser
        parser, sub = _root()  # the table is stale: build everything
    for add in _COMMANDS.values():
        add(sub)
    if command is None:  # help or no command: list the service commands without importing them
        for name, (_, text) in _SERVICE_COMMANDS.items():
            sub.add_parser(name, help=text)
    else:
        discover_service_commands(sub)
    return parser


def discover_service_commands(sub: Any) -> None:
    """Commands a service ships on files (`kiban link`, `kiban anonymize`, `kiban release ...`):
    a service package with a `cli` module exposing `add_commands(subparsers)` adds its own, so
    the engine and its command live and are tested together."""
    for name in SERVICE_NAMES:
        _add_service_cli(sub, name)


def _add_service_cli(sub: Any, name: str) -> None:
    try:
        module = importlib.import_module(f"kiban_{name}.cli")
    except ModuleNotFoundError as exc:
        if exc.name != f"kiban_{name}.cli":
            raise
        return
    module.add_commands(sub)


def _is_command_error(exc: BaseException) -> bool:
    # Only `kiban_cli.commands` (and the commands that import it) raise CommandError; when it was
    # never imported, nothing raised one, and importing it here would cost what laziness saved.
    commands = sys.modules.get("kiban_cli.commands")
    return commands is not None and isinstance(exc, commands.CommandError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(argv).parse_args(argv)
    configure_logging(logging.INFO)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_command_error(exc):
            raise
        print(f"kiban {args.command}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
