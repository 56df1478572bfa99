"""What each `kiban` subcommand does; `main.py` only parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from kiban_cli import dev as devmode
from kiban_cli.services import SERVICES
from kiban_common.db import create_engine, current_revision
from kiban_common.db import migrate as run_migrations
from kiban_common.devstate import dev_issuer, state_dir
from kiban_common.security import AUDIT_ANCHORS_TABLE, AUDIT_TABLE, verify_audit_log
from kiban_common.settings import SettingsError, load_settings


class CommandError(Exception):
    """A user-facing failure: printed as one message, exit status 2."""


def service_names() -> list[str]:
    return list(SERVICES)


def serve(args: argparse.Namespace) -> int:
    service = SERVICES[args.service]
    try:
        settings = load_settings(service.settings)
        app = service.create_app(settings)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    uvicorn.run(
        app, host=settings.http.host, port=settings.http.port, log_config=None, log_level="info"
    )
    return 0


async def dev(args: argparse.Namespace) -> int:
    state = state_dir()
    try:
        servers = devmode.build_servers(state, args.host)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None

    def announce() -> None:
        print(f"kiban dev: six services ready (state in {state}/):")
        for service in SERVICES.values():
            print(
                f"  {service.name:<11} {service.definition.zone.value:<12} "
                f"http://{args.host}:{service.port}"
            )
        print("Ctrl-C stops them.", flush=True)

    try:
        await devmode.serve_all(servers, on_ready=announce)
    except devmode.StartupFailed as exc:
        raise CommandError(str(exc)) from None
    return 0


async def demo(args: argparse.Namespace) -> int:
    from kiban_cli.demo import run_demo

    return await run_demo(args.host, args.state)


def token(args: argparse.Namespace) -> int:
    claims: dict[str, object] = {}
    for item in args.claim:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--claim takes K=V, got {item!r}")
        claims[key] = value
    if args.ttl <= 0:
        raise CommandError("--ttl must be a positive number of seconds")
    issuer = dev_issuer(state_dir())
    print(issuer.mint(args.sub, args.scope.split(), claims, ttl_seconds=args.ttl))
    return 0


async def migrate(args: argparse.Namespace) -> int:
    """Each service has its own database, so one run migrates one service."""
    service = SERVICES[args.service]
    try:
        settings = load_settings(service.settings)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    engine = create_engine(settings.database_url)
    try:
        await run_migrations(engine, service.definition.migrations)
        revision = await current_revision(engine)
    finally:
        await engine.dispose()
    json.dump({"service": service.name, "revision": revision}, sys.stdout)
    print()
    return 0


def _database_url(args: argparse.Namespace) -> str:
    """`--database-url`, else `--dev` (the embedded default's file), else `KIBAN_*` settings."""
    service = SERVICES[args.service]
    if args.database_url:
        return str(args.database_url)
    if args.dev:
        return f"sqlite:///{state_dir().resolve()}/{service.name}.db"
    try:
        return load_settings(service.settings).database_url
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _is_file(path: str | None) -> bool:
    """Checked before connecting: SQLite would otherwise create an empty database file."""
    return bool(path) and Path(str(path)).is_file()


async def audit_verify(args: argparse.Namespace) -> int:
    """Walk a service's audit chain; exit 1 naming the first bad entry."""
    service = SERVICES[args.service]
    metadata = service.definition.metadata
    url = _database_url(args)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError("--database-url is not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and not _is_file(parsed.database):
        raise CommandError(f"no {service.name} database at that SQLite path")
    try:
        engine = create_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise CommandError(f"cannot use that database URL ({type(exc).__name__})") from None
    try:
        async with engine.connect() as connection:
            report = await verify_audit_log(
                connection, metadata.tables[AUDIT_TABLE], metadata.tables[AUDIT_ANCHORS_TABLE]
            )
    except (DBAPIError, OSError) as exc:
        raise CommandError(
            f"cannot read the {service.name} audit log ({type(exc).__name__}); "
            f"is the database migrated (`kiban migrate {service.name}`)?"
        ) from None
    finally:
        await engine.dispose()
    if report.ok:
        pending = (
            f"; {report.pending} newer entries not chained yet (the running service links them "
            "within a second; a stopped one on its next start)"
            if report.pending
            else ""
        )
        print(
            f"{service.name}: audit chain intact, {report.entries} entries, "
            f"last {report.last_hash}{pending}"
        )
        return 0
    print(
        f"{service.name}: audit chain BROKEN at entry {report.first_bad_seq}: {report.reason} "
        f"({report.entries} entries verified before it)"
    )
    return 1


async def incident_report(args: argparse.Namespace) -> int:
    """`kiban incident report`: see `kiban_cli.incident`."""
    from kiban_cli import incident

    try:
        return await incident.report(args)
    except incident.IncidentError as exc:
        raise CommandError(str(exc)) from None
