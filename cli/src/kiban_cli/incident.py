"""`kiban incident report`: the facts a report to the supervising ministry needs, from the
services' own hash-chained audit logs and block lists (rule 28).

For a time window and each service: who called (principals, how often, from which addresses,
what they were refused), which records were touched (every data-operation entry: action, ids,
count, purpose, principal, source), when, and what the access monitor blocked and an operator
lifted (with the reason). The audit chain of each service is verified first, so the report
says whether the log it is drawn from is intact. Entries hold ids only, so the report does too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select

from kiban_cli.services import SERVICES
from kiban_common.db import create_engine
from kiban_common.devstate import state_dir
from kiban_common.security import (
    AUDIT_ANCHORS_TABLE,
    AUDIT_TABLE,
    BLOCKS_TABLE,
    verify_audit_log,
)

REFUSED = (401, 403, 413, 429)


class IncidentError(Exception):
    pass


def add_parser(sub: Any, run: Any) -> None:
    incident = sub.add_parser("incident", help="incident reporting from the audit logs")
    actions = incident.add_subparsers(dest="incident_command", required=True, metavar="ACTION")
    report = actions.add_parser(
        "report", help="who, what records, when, from where, what was blocked, in a window"
    )
    report.add_argument("--since", required=True, help="ISO date or date-time (UTC if no zone)")
    report.add_argument("--until", help="ISO date or date-time, exclusive (default: now)")
    where = report.add_mutually_exclusive_group()
    where.add_argument("--dev", action="store_true", help="the embedded default under ./.kiban/")
    where.add_argument(
        "--database-url",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="a service's database (repeatable); only these services are reported",
    )
    report.add_argument("--json", action="store_true", help="JSON instead of text")
    report.set_defaults(run=run)


def parse_time(value: str, flag: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise IncidentError(f"{flag} takes an ISO date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def databases(args: argparse.Namespace) -> dict[str, str]:
    if args.dev:
        root = state_dir().resolve()
        return {name: f"sqlite:///{root}/{name}.db" for name in SERVICES}
    found: dict[str, str] = {}
    for item in args.database_url:
        name, sep, url = item.partition("=")
        if not sep or name not in SERVICES or not url:
            raise IncidentError(
                f"--database-url takes SERVICE=URL with SERVICE one of {', '.join(SERVICES)}"
            )
        found[name] = url
    if not found:
        raise IncidentError("name the databases: --dev, or --database-url SERVICE=URL ...")
    return found


async def build_report(urls: dict[str, str], since: datetime, until: datetime) -> dict[str, Any]:
    report: dict[str, Any] = {
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "generated_at": datetime.now(UTC).isoformat(),
        "services": {},
    }
    for name, url in urls.items():
        report["services"][name] = await _service_report(name, url, since, until)
    return report


async def _service_report(name: str, url: str, since: datetime, until: datetime) -> dict[str, Any]:
    metadata = SERVICES[name].definition.metadata
    audit, anchors = metadata.tables[AUDIT_TABLE], metadata.tables[AUDIT_ANCHORS_TABLE]
    blocks = metadata.tables[BLOCKS_TABLE]
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            chain = await verify_audit_log(connection, audit, anchors)
            rows = [
                dict(r._mapping)
                for r in await connection.execute(
                    select(audit)
                    .where(and_(audit.c.at >= since, audit.c.at < until))
                    .order_by(audit.c.seq)
                )
            ]
            block_rows = [
                dict(r._mapping)
                for r in await connection.execute(
                    select(blocks)
                    .where(
                        or_(
                            and_(blocks.c.blocked_at >= since, blocks.c.blocked_at < until),
                            and_(blocks.c.lifted_at >= since, blocks.c.lifted_at < until),
                        )
                    )
                    .order_by(blocks.c.id)
                )
            ]
    finally:
        await engine.dispose()
    principals: dict[str, dict[str, Any]] = {}
    operations: list[dict[str, Any]] = []
    for row in rows:
        if row["kind"] == "data":
            operations.append(
                {
                    "at": _iso(row["at"]),
                    "seq": row["seq"],
                    "principal": row["principal"],
                    "source": row["source"],
                    "action": row["action"],
                    "refs": json.loads(row["refs"]) if row["refs"] else [],
                    "count": row["count"],
                    "purpose": row["purpose"],
                }
            )
            continue
        who = row["principal"] or "(no valid token)"
        entry = principals.setdefault(
            who,
            {
                "requests": 0,
                "first": _iso(row["at"]),
                "last": None,
                "sources": Counter(),
                "routes": Counter(),
                "refused": Counter(),
            },
        )
        entry["requests"] += 1
        entry["last"] = _iso(row["at"])
        entry["sources"][row["source"] or "-"] += 1
        entry["routes"][f"{row['method']} {row['route']}"] += 1
        if row["status"] in REFUSED:
            entry["refused"][str(row["status"])] += 1
    return {
        "audit_chain": {
            "intact": chain.ok,
            "entries": chain.entries,
            "first_bad_seq": chain.first_bad_seq,
            "reason": chain.reason,
        },
        "principals": {
            who: {k: dict(v) if isinstance(v, Counter) else v for k, v in p.items()}
            for who, p in sorted(principals.items())
        },
        "data_operations": operations,
        "records_touched": sum(op["count"] or 0 for op in operations),
        "blocks": [
            {
                "principal": b["principal"],
                "rule": b["rule"],
                "source": b["source"],
                "blocked_at": _iso(b["blocked_at"]),
                "lifted_at": _iso(b["lifted_at"]),
                "lifted_by": b["lifted_by"],
                "lift_reason": b["lift_reason"],
            }
            for b in block_rows
        ],
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def render_text(report: dict[str, Any]) -> str:
    window = report["window"]
    lines = [f"Incident report {window['since']} → {window['until']}"]
    for name, svc in report["services"].items():
        chain = svc["audit_chain"]
        state = (
            f"intact ({chain['entries']} entries)"
            if chain["intact"]
            else f"BROKEN at entry {chain['first_bad_seq']}: {chain['reason']}"
        )
        lines.append(f"\n== {name}: audit chain {state}")
        lines.append(f"principals ({len(svc['principals'])}):")
        for who, p in svc["principals"].items():
            refused = ", ".join(f"{n}×{s}" for s, n in p["refused"].items()) or "none"
            sources = ", ".join(p["sources"])
            lines.append(
                f"  {who}: {p['requests']} requests {p['first']} … {p['last']} "
                f"from {sources}; refused: {refused}"
            )
        lines.append(
            f"data operations ({len(svc['data_operations'])}, {svc['records_touched']} records):"
        )
        for op in svc["data_operations"]:
            refs = ", ".join(op["refs"][:5]) + (" …" if len(op["refs"]) > 5 else "")
            lines.append(
                f"  {op['at']} {op['action']} by {op['principal'] or '-'} from "
                f"{op['source'] or '-'}: {op['count'] or 0} [{refs}] purpose {op['purpose'] or '-'}"
            )
        lines.append(f"blocks ({len(svc['blocks'])}):")
        for b in svc["blocks"]:
            lifted = (
                f"lifted {b['lifted_at']} by {b['lifted_by']} ({b['lift_reason']})"
                if b["lifted_at"]
                else "still active"
            )
            lines.append(
                f"  {b['principal']} rule {b['rule']} from {b['source'] or '-'} "
                f"at {b['blocked_at']}; {lifted}"
            )
    return "\n".join(lines)


async def report(args: argparse.Namespace) -> int:
    since = parse_time(args.since, "--since")
    until = parse_time(args.until, "--until") if args.until else datetime.now(UTC)
    if until <= since:
        raise IncidentError("--until must be after --since")
    result = await build_report(databases(args), since, until)
    if args.json:
        json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print(render_text(result))
    broken = [n for n, s in result["services"].items() if not s["audit_chain"]["intact"]]
    return 1 if broken else 0
