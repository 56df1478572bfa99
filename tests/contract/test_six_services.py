"""Approval → ready → download with all six services as separate processes on real Kafka.

Each service is its own `kiban serve <service>` process with its own PostgreSQL database,
configured only through `KIBAN_*` variables as the Helm chart configures it (`six_platform`),
migrated first with `kiban migrate`. Every event between them crosses the real Kafka broker.
The scenario is the demo's (`kiban_cli.demo.Scenario`, synthetic patients of
`kiban_cli.demo_data`) driven over HTTP: two institutions, notices, JP Core bundles for
patients seen at both, linkage, an opt-out with deletion acknowledged by intake, linkage and
the anonymizer, a committee approval, the release `ready`, the applicant's download (sha256 as
listed), a non-applicant refused, `kiban release trace` on a 50-row sample naming the release
and recipient, then a revoke after which the download is refused.

Run it alone: `uv run pytest tests/contract/test_six_services.py -q`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import random
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from kiban_cli import demo, demo_data
from kiban_cli.main import main as kiban

from .six_platform import NAMES, SixServices, start_groups_at_the_end

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(300)]

OTHER_RESEARCHER = "researcher:r-other-002"


class ProcessPlatform(demo.Platform):
    """The demo's HTTP driver, pointed at the processes' ports instead of 8101-8106."""

    def __init__(self, client: httpx.AsyncClient, ports: dict[str, int], issuer: Path) -> None:
        super().__init__(client, "127.0.0.1", issuer)
        self.ports = ports

    def url(self, service: str, path: str) -> str:
        return f"http://{self.host}:{self.ports[service]}{path}"


def _timed(marks: list[tuple[str, float]], what: str, started: float) -> None:
    marks.append((what, round(time.monotonic() - started, 1)))


async def test_approval_to_download_with_six_service_processes_on_kafka_and_postgres(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    started = time.monotonic()
    marks: list[tuple[str, float]] = []
    suffix = secrets.token_hex(3)
    databases = {name: f"six_{name}_{suffix}" for name in NAMES}
    urls = {name: postgres_cluster.create_database(db) for name, db in databases.items()}
    await start_groups_at_the_end(kafka_bootstrap)
    data = demo_data.generate(datetime.now(ZoneInfo("Asia/Tokyo")).date())
    try:
        with SixServices(tmp_path, kafka_bootstrap, urls) as six:
            _timed(marks, "migrated and spawned", started)
            await six.wait_ready()
            _timed(marks, "all six ready", started)
            assert six.secrets is not None
            async with httpx.AsyncClient(timeout=30) as client:
                platform = ProcessPlatform(client, six.ports(), six.secrets.issuer_state)
                try:
                    await _scenario(platform, data, six, urls["release"], tmp_path, marks, started)
                    await _scrape_metrics(client, six.ports())
                except BaseException as exc:
                    # Which process died or complained, without rerunning anything.
                    exc.add_note(f"processes (exit codes): {six.alive()}\n{six.logs_tail()}")
                    raise
        _timed(marks, "stopped", started)
    finally:
        for db in databases.values():
            postgres_cluster.drop_database(db)
    print("timings (s since start):", marks)


async def _scrape_metrics(client: httpx.AsyncClient, ports: dict[str, int]) -> None:
    """Prometheus scrapes each process over HTTP from an allowed network (loopback here): the
    scenario's requests and events are counted, under route templates only."""
    for name, port in ports.items():
        got = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert got.status_code == 200, (name, got.status_code)
        assert "kiban_http_requests_total{" in got.text, name
        assert "/v1/releases/{release_id}" in got.text or name != "release", name
    intake = await client.get(f"http://127.0.0.1:{ports['intake']}/metrics")
    assert "kiban_outbox_published_total{" in intake.text
    # a proxied request (as through an ingress) is refused even from an allowed address
    proxied = await client.get(
        f"http://127.0.0.1:{ports['review']}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert proxied.status_code == 403


async def _scenario(
    platform: ProcessPlatform,
    data: demo_data.DemoData,
    six: SixServices,
    release_db: str,
    tmp_path: Path,
    marks: list[tuple[str, float]],
    started: float,
) -> None:
    scenario = demo.Scenario(platform, data)
    await scenario.institutions_and_notices()
    await scenario.bundles()
    linkage = await scenario.linked()
    _timed(marks, "records linked and in the research store", started)
    # Intake, linkage and the anonymizer each acknowledge through Kafka; the optout service
    # shows `applied` only when all three did (the demo's step checks every ack and count).
    optout = await scenario.opt_out()
    assert optout["status"] == "applied"
    assert set(optout["applied"]) >= {"intake", "linkage", "anonymizer"}
    _timed(marks, "opt-out applied", started)
    application_id = await scenario.review()
    release = await scenario.release(application_id)
    _timed(marks, "release ready", started)
    assert release["status"] == "ready"
    assert release["recipient"] == demo.RESEARCHER
    assert release["application_id"] == application_id
    files = await scenario.download(release)  # every sha256 equals the listing's
    assert {f["name"] for f in release["files"]} == set(files)
    scenario.verify(linkage, optout, release, files)  # achieved k, no identifier in any file
    _timed(marks, "downloaded and checked", started)

    await _opted_out_person_left_out(platform, data, release, files)
    await _non_applicant_sees_nothing(platform, release)
    await _download_logged(platform, release)
    await asyncio.to_thread(_trace_with_the_cli_sync, release, files, release_db, tmp_path)
    await _trace_a_parquet_sample(release, files, release_db, tmp_path)
    await _revoked_release_cannot_be_downloaded(platform, release)
    _timed(marks, "traced and revoked", started)
    assert all(code is None for code in six.alive().values()), six.alive()


async def _opted_out_person_left_out(
    platform: ProcessPlatform,
    data: demo_data.DemoData,
    release: dict[str, Any],
    files: dict[str, Path],
) -> None:
    """The research store purged the person before the build, so the built cohort is every
    heart-failure person but them, and persons.csv holds exactly the persons the build reports
    (person ids are drawn at random per release: the person cannot be looked up by id)."""
    ops = platform.auth(demo.OPERATOR, ["admin"])
    builds = await platform.call(
        "GET", "anonymizer", f"/v1/builds?release_id={release['release_id']}", ops
    )
    items = builds["items"] if isinstance(builds, dict) else builds
    assert len(items) == 1
    report = items[0]["report"] or {}
    assert data.opted_out in data.heart_failure_persons
    assert report.get("cohort_persons") == len(data.heart_failure_persons) - 1
    store = await platform.call("GET", "anonymizer", "/v1/stats", ops)
    assert store["purged_persons"] == 1
    assert store["persons"] == len(data.persons) - 1
    persons = files.get("persons.csv")
    if persons is not None:
        with persons.open(newline="", encoding="utf-8") as f:
            assert sum(1 for _ in csv.reader(f)) - 1 == report.get("persons")


async def _non_applicant_sees_nothing(platform: ProcessPlatform, release: dict[str, Any]) -> None:
    other = platform.auth(OTHER_RESEARCHER, ["review:apply", "release:download"])
    release_id = release["release_id"]
    listed = await platform.client.get(
        platform.url("release", f"/v1/releases?application_id={release['application_id']}"),
        headers=other,
    )
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    for path in (
        f"/v1/releases/{release_id}",
        f"/v1/releases/{release_id}/files/{release['files'][0]['name']}",
    ):
        got = await platform.client.get(platform.url("release", path), headers=other)
        assert got.status_code == 404, path
        assert got.json()["code"] == "release_not_found"


async def _download_logged(platform: ProcessPlatform, release: dict[str, Any]) -> None:
    ops = platform.auth(demo.OPERATOR, ["admin"])
    log = await platform.call(
        "GET", "release", f"/v1/releases/{release['release_id']}/downloads", ops
    )
    by_file = {entry["file_name"]: entry for entry in log}
    assert set(by_file) == {f["name"] for f in release["files"]}
    for f in release["files"]:
        entry = by_file[f["name"]]
        assert entry["principal"] == demo.RESEARCHER
        assert entry["completed"] is True
        assert entry["sha256_ok"] is True
        assert entry["bytes"] == f["bytes"]
        assert entry["source"].startswith("127.")


def _trace_with_the_cli_sync(
    release: dict[str, Any], files: dict[str, Path], release_db: str, tmp_path: Path
) -> None:
    """`kiban release trace` (the operator's command) against the release service's
    PostgreSQL database: a 50-row sample of the largest CSV names the release, its
    application and its recipient."""
    csvs = [p for name, p in files.items() if name.endswith(".csv")]
    largest = max(csvs, key=lambda p: p.stat().st_size)
    with largest.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert len(rows) >= 50, f"{largest.name} has only {len(rows)} rows"
    sample = tmp_path / "leaked-sample.csv"
    with sample.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(random.Random(demo_data.SEED).sample(rows, 50))
    # The command's own code, in this process (a second `kiban` process would pay the import
    # of all six services again for nothing the test needs).
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = kiban(["release", "trace", str(sample), "--database-url", release_db, "--json"])
    assert code == 0, out.getvalue()[-2000:]
    result = json.loads(out.getvalue())
    assert result["verdict"] == "release", result
    assert result["release_id"] == release["release_id"]
    assert result["recipient"] == demo.RESEARCHER
    assert result["application_id"] == release["application_id"]
    assert result["coverage"] == 1.0


async def _trace_a_parquet_sample(
    release: dict[str, Any], files: dict[str, Path], release_db: str, tmp_path: Path
) -> None:
    """The anonymizer writes every table as Parquet too: release indexed those files' person
    ids at `ready`, and 50 rows copied into a Parquet file of their own trace back as well."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from kiban_release.tracing import trace_with_url

    parquets = [p for name, p in files.items() if name.endswith(".parquet")]
    assert parquets, "the release has no Parquet file"
    table = pq.read_table(max(parquets, key=lambda p: p.stat().st_size))
    assert "person_id" in table.column_names
    picked = sorted(random.Random(demo_data.SEED).sample(range(table.num_rows), 50))
    sample = tmp_path / "leaked-sample.parquet"
    pq.write_table(table.take(picked), sample)
    result = await trace_with_url(release_db, sample)
    assert result.verdict.value == "release"
    assert result.release_id == release["release_id"]
    assert result.recipient == demo.RESEARCHER


async def _revoked_release_cannot_be_downloaded(
    platform: ProcessPlatform, release: dict[str, Any]
) -> None:
    ops = platform.auth(demo.OPERATOR, ["admin"])
    release_id = release["release_id"]
    revoked = await platform.call(
        "POST", "release", f"/v1/releases/{release_id}/revoke", ops, json={"reason": "test"}
    )
    assert revoked["status"] == "revoked"
    researcher = platform.auth(demo.RESEARCHER, ["release:download"])
    name = release["files"][0]["name"]
    got = await platform.client.get(
        platform.url("release", f"/v1/releases/{release_id}/files/{name}"), headers=researcher
    )
    assert got.status_code == 410
    assert got.json()["code"] == "release_revoked"
    assert hashlib.sha256(got.content).hexdigest() != release["files"][0]["sha256"]
