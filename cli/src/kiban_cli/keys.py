"""`kiban keys rotate` and `kiban keys retire`: re-encrypt a service's stored field tokens under
the active key, then prove no stored value (nor an event waiting in its outbox) still needs an
old key before the operator removes it from the keyring.

The service keeps running: each batch is a short transaction of its own with a compare-and-set
on the old token, so a row the service rewrites meanwhile keeps its new value. A crash or
Ctrl-C loses at most the batch in flight; running the command again finishes the job and skips
every value already under the active key. Each batch appends a data-operation entry (ids only)
to the service's hash-chained audit log.

Keys and database come from the same place as the service's: `--dev` (the embedded default
under `$KIBAN_STATE_DIR` or `./.kiban/`), or `--database-url` and the `KIBAN_CRYPTO__*`
variables, or `KIBAN_DATABASE_URL` and `KIBAN_CRYPTO__*`. Only key ids, table and column names
and counts are printed, never a value, a token or key material.

Exit status: 0 done, 1 values remain under a non-active key (or some do not open), 2 a usage,
settings or database error.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from kiban_cli.commands import CommandError
from kiban_cli.services import SERVICES, Service
from kiban_common.crypto import (
    ColumnProgress,
    CryptoError,
    FieldCipher,
    StaleReport,
    rotate_keys,
    stale_values,
)
from kiban_common.db import create_engine
from kiban_common.devstate import dev_crypto, state_dir
from kiban_common.service import ServiceCrypto
from kiban_common.settings import CryptoSettings, SettingsError

_OPERATOR = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")
_MAX_BATCH = 10_000


class _KeySettings(BaseSettings):
    """The two settings the command needs, read from the service's own `KIBAN_*` variables
    (the others, e.g. Kafka or auth, are not needed to re-encrypt and are ignored)."""

    model_config = SettingsConfigDict(
        env_prefix="KIBAN_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: str | None = None
    crypto: CryptoSettings = CryptoSettings()


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="re-encrypt stored values under the active key; retire")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    rotate = actions.add_parser(
        "rotate", help="re-encrypt every stored value not under the active key, in batches"
    )
    _common(rotate)
    rotate.add_argument(
        "--batch-size", type=int, default=500, help="rows per transaction (default 500)"
    )
    rotate.add_argument(
        "--retire", action="store_true", help="then check that no old key id is used any more"
    )
    rotate.add_argument(
        "--operator",
        default="operator:kiban-cli",
        help="who runs it, recorded in the audit log (default operator:kiban-cli)",
    )
    rotate.set_defaults(run=rotate_command)
    retire = actions.add_parser(
        "retire", help="check that no stored value uses a non-active key id; name the removable"
    )
    _common(retire)
    retire.set_defaults(run=retire_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", choices=list(SERVICES))
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="the service's database (default: KIBAN_* settings)")
    where.add_argument("--dev", action="store_true", help="the embedded default under ./.kiban/")


def _settings(args: argparse.Namespace, service: Service) -> tuple[str, FieldCipher]:
    """The database URL and the cipher (active key + keyring) to rotate with."""
    settings: _KeySettings | None = None
    if args.dev:
        url = f"sqlite:///{state_dir().resolve()}/{service.name}.db"
    else:
        try:
            settings = _KeySettings()
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        url = args.database_url or settings.database_url or ""
        if not url:
            raise CommandError("name the database: --dev, --database-url or KIBAN_DATABASE_URL")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CommandError("--database-url is not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and not (
        parsed.database and Path(parsed.database).is_file()
    ):
        raise CommandError(f"no {service.name} database at that SQLite path")
    # Checked after the database: `dev_crypto` would create development keys in an empty dir.
    crypto = (
        dev_crypto(state_dir(), service.definition.zone) if settings is None else settings.crypto
    )
    try:
        return url, ServiceCrypto(crypto).cipher
    except (SettingsError, CryptoError) as exc:
        raise CommandError(str(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
        variable = "KIBAN_" + "__".join(loc).upper() if loc else "settings"
        lines.append(f"{variable}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid settings:\n  " + "\n  ".join(lines)


async def rotate_command(args: argparse.Namespace) -> int:
    service = SERVICES[args.service]
    if not 1 <= args.batch_size <= _MAX_BATCH:
        raise CommandError(f"--batch-size must be between 1 and {_MAX_BATCH}")
    if not _OPERATOR.fullmatch(args.operator):
        raise CommandError("--operator takes a principal id like operator:o-001")
    columns = service.definition.encrypted_columns
    if not columns:
        print(f"{service.name}: stores no encrypted values; nothing to rotate")
        return 0
    url, cipher = _settings(args, service)
    keyring = cipher.keyring
    print(
        f"{service.name}: re-encrypting under key {keyring.active_key_id} "
        f"(keyring: {', '.join(sorted(keyring.key_ids))}), batches of {args.batch_size}",
        flush=True,
    )

    def progress(state: ColumnProgress) -> None:
        print(f"  {state.name}: {state.rotated}/{state.pending} re-encrypted", flush=True)

    async with _database(service, url) as engine:
        report = await rotate_keys(
            engine,
            service.definition.metadata,
            columns,
            cipher,
            batch_size=args.batch_size,
            progress=progress,
            principal=args.operator,
        )
        stale = await stale_values(
            engine, service.definition.metadata, columns, keyring.active_key_id
        )
    for state in report.columns:
        notes = []
        if state.changed_meanwhile:
            notes.append(f"{state.changed_meanwhile} changed by the service meanwhile")
        if state.unreadable:
            notes.append(f"{state.unreadable} do not open with this keyring")
        extra = f" ({'; '.join(notes)})" if notes else ""
        print(
            f"  {state.name}: done, {state.rotated} re-encrypted in {state.batches} batches, "
            f"{state.total} values, {state.remaining} not under {keyring.active_key_id}{extra}"
        )
    if not report.ok:
        print(
            f"{service.name}: {report.remaining} values remain under other keys; run again "
            "(every replica must encrypt with the new active key)"
        )
        return 1
    print(f"{service.name}: every stored value is under key {keyring.active_key_id}")
    if args.retire:
        return _print_retire(service, stale, cipher)
    return 0


async def retire_command(args: argparse.Namespace) -> int:
    service = SERVICES[args.service]
    columns = service.definition.encrypted_columns
    url, cipher = _settings(args, service)
    async with _database(service, url) as engine:
        stale = await stale_values(
            engine, service.definition.metadata, columns, cipher.keyring.active_key_id
        )
    return _print_retire(service, stale, cipher)


def _print_retire(service: Service, stale: StaleReport, cipher: FieldCipher) -> int:
    keyring = cipher.keyring
    active = keyring.active_key_id
    if not stale.clean:
        print(f"{service.name}: cannot retire old keys; values still under a non-active key:")
        for name, counts in sorted(stale.columns.items()):
            for kid, count in sorted(counts.items()):
                print(f"  {name}: {count} under {kid}{_unknown(kid, keyring.key_ids)}")
        for kid, count in sorted(stale.outbox.items()):
            print(f"  kiban_outbox (events not yet published): {count} under {kid}")
        print(
            f"Run `kiban keys rotate {service.name}` (every replica must already encrypt with "
            f"{active}) and let the outbox drain, then retire again."
        )
        return 1
    removable = sorted(keyring.key_ids - {active})
    print(
        f"{service.name}: no stored value and no pending event uses a key other than the "
        f"active key {active}."
    )
    if not removable:
        print("The keyring holds only the active key: nothing to retire.")
        return 0
    ids = ", ".join(removable)
    print(f"Key ids {service.name} no longer needs: {ids}.")
    print(
        "Remove them only once `kiban keys retire` passes for every service that shares this "
        "keyring (the zone's keys.json) and the consumers of their events have no lag; then "
        f'delete {ids} from "keys" in the KIBAN_CRYPTO__KEYS_FILE secret (or from '
        f'KIBAN_CRYPTO__KEYS), keep "active_key_id": "{active}", and restart the zone.'
    )
    return 0


def _unknown(kid: str, known: frozenset[str]) -> str:
    return "" if kid in known else " (not in this keyring: cannot be opened)"


@asynccontextmanager
async def _database(service: Service, url: str) -> AsyncIterator[Any]:
    """The service's database for one command: a bad URL, an unreachable or unmigrated
    database, or a key problem ends the command with a message, never a traceback."""
    try:
        engine = create_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise CommandError(f"cannot use that database URL ({type(exc).__name__})") from None
    try:
        yield engine
    except (DBAPIError, OSError) as exc:
        raise CommandError(
            f"cannot use the {service.name} database ({type(exc).__name__}); "
            f"is it migrated (`kiban migrate {service.name}`)?"
        ) from None
    except CryptoError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await engine.dispose()
