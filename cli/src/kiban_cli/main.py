"""The `kiban` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kiban_cli import commands, incident, keys
from kiban_common.telemetry import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiban", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one service with settings from KIBAN_* variables")
    serve.add_argument("service", choices=commands.service_names())
    serve.set_defaults(run=commands.serve)

    dev = sub.add_parser("dev", help="all six services in one process on the embedded default")
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(run=commands.dev)

    demo = sub.add_parser("demo", help="run `dev` and drive the scenario, printing each step")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state directory (default: $KIBAN_STATE_DIR or ./.kiban); the demo uses STATE/demo/",
    )
    demo.set_defaults(run=commands.demo)

    token = sub.add_parser("token", help="print a bearer token from the development issuer")
    token.add_argument("--sub", required=True, help="principal, e.g. institution:1312345678")
    token.add_argument("--scope", default="", help='space-separated scopes, e.g. "intake:submit"')
    token.add_argument(
        "--claim", action="append", default=[], metavar="K=V", help="an extra claim (repeatable)"
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(run=commands.token)

    migrate = sub.add_parser("migrate", help="apply a service's schema migrations (production)")
    migrate.add_argument("service", choices=commands.service_names())
    migrate.set_defaults(run=commands.migrate)
    audit = sub.add_parser("audit", help="the hash-chained audit logs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check a service's audit chain and anchors")
    verify.add_argument("service", choices=commands.service_names())
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="the service's database (default: KIBAN_* settings)")
    where.add_argument("--dev", action="store_true", help="the embedded default under ./.kiban/")
    verify.set_defaults(run=commands.audit_verify)
    incident.add_parser(sub, commands.incident_report)
    keys.add_parser(sub)
    _service_commands(sub)
    return parser


def _service_commands(sub: Any) -> None:
    """Commands a service ships on files (`kiban link`, `kiban anonymize`, `kiban release ...`):
    a service package with a `cli` module exposing `add_commands(subparsers)` adds its own, so
    the engine and its command live and are tested together."""
    for name in commands.service_names():
        try:
            module = importlib.import_module(f"kiban_{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"kiban_{name}.cli":
                raise
            continue
        module.add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(logging.INFO)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except commands.CommandError as exc:
        print(f"kiban {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
