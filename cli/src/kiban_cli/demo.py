"""`kiban demo`: the whole scenario on the embedded default, printing what each step proved.

Fresh state under `<state_dir>/demo/` (wiped first, so every run is the same), the six services
in one process as `kiban dev` runs them (real HTTP on 8101-8106, SQLite, in-process bus), then:
two institutions register and record notices (dated 60 days ago, past the 30-day notice
period), post FHIR bundles for synthetic patients (some seen at both, written differently),
linkage links them, one patient opts out with deletion, a researcher applies for an anonymized
heart-failure dataset (k = 5), the committee approves, release builds it, the researcher
downloads it, and the demo checks: records linked, the opt-out applied by every core service,
the achieved k, no identifier in any file, the opted-out person left out, and a 50-row sample
traced back to its release and recipient. Exit 0 only if every check holds.

Demo-only settings (faster polling, nothing else): outbox relay idle poll 50 ms (default 200),
anonymizer build-queue poll 100 ms (default 500).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import uvicorn

from kiban_cli import demo_data
from kiban_cli import dev as devmode
from kiban_cli.services import SERVICES
from kiban_common.devstate import dev_issuer, dev_overrides, state_dir
from kiban_common.settings import OutboxSettings, load_settings

K = 5
WAIT_SECONDS = 45.0
OPERATOR = "operator:demo-ops"
RESEARCHER = "researcher:r-demo-001"
ORGANIZATION = "基盤大学 循環器疫学講座 (demo)"
MEMBERS = [
    ("m-ns-01", "natural_science", "東北医科大学 (demo)"),
    ("m-hs-01", "humanities_social_science", "関西法科大学院 (demo)"),
    ("m-gp-01", "general_public", "患者会 (demo)"),
]
CHAIR = "m-ns-01"


class DemoFailed(Exception):
    """A step did not do what it should; the message says which and why (never a value of a
    synthetic identity)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailed(message)


# -- the platform ------------------------------------------------------------------------------


def _extra_settings(name: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"outbox": OutboxSettings(poll_interval_ms=50)}
    if name == "anonymizer":
        from kiban_anonymizer.settings import BuildSettings

        extra["build"] = BuildSettings(poll_interval_ms=100)
    return extra


def build_servers(state: Path, host: str) -> list[devmode._Server]:
    """As `kiban dev` builds them (one in-process broker for all six), plus the demo's
    faster polling."""
    from kiban_common.bus import MemoryBroker

    broker = MemoryBroker()
    servers: list[devmode._Server] = []
    for name, service in SERVICES.items():
        settings = load_settings(
            service.settings,
            **dev_overrides(state, name, service.port, host, service.definition.zone),
            **_extra_settings(name),
        )
        app = service.create_app(settings, broker=broker)
        config = uvicorn.Config(
            app, host=host, port=service.port, log_level="warning", lifespan="on", log_config=None
        )
        servers.append(devmode._Server(config))
    return servers


# -- HTTP helpers ------------------------------------------------------------------------------


class Platform:
    def __init__(self, client: httpx.AsyncClient, host: str, state: Path) -> None:
        self.client = client
        self.host = host
        self.state = state
        self.issuer = dev_issuer(state)

    def url(self, service: str, path: str) -> str:
        return f"http://{self.host}:{SERVICES[service].port}{path}"

    def auth(
        self, sub: str, scopes: list[str], claims: dict[str, Any] | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(sub, scopes, claims)}"}

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        headers: dict[str, str],
        *,
        expect: int | tuple[int, ...] = 200,
        json: Any = None,
    ) -> Any:
        response = await self.client.request(
            method, self.url(service, path), headers=headers, json=json
        )
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status_code not in expected:
            code = _error_code(response)
            raise DemoFailed(
                f"{method} {service} {path} answered {response.status_code} ({code}), "
                f"expected {'/'.join(map(str, expected))}"
            )
        return response.json() if response.content else None


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return "no JSON body"
    if isinstance(body, dict):
        if "code" in body:
            return f"{body['code']}: {body.get('message', '')}"
        if body.get("resourceType") == "OperationOutcome":
            return "; ".join(
                f"{i.get('expression')}: {i.get('diagnostics')}" for i in body.get("issue", [])
            )
    return "unexpected body"


async def until(
    what: str,
    probe: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    *,
    within: float = WAIT_SECONDS,
    every: float = 0.2,
) -> Any:
    """Poll `probe` until `done(result)`; a DemoFailed naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await probe()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what}: not reached within {within:.0f}s (last seen: {last})")
        await asyncio.sleep(every)


# -- the scenario -----------------------------------------------------------------------------


class Scenario:
    def __init__(self, platform: Platform, data: demo_data.DemoData) -> None:
        self.p = platform
        self.data = data
        self.ops = platform.auth(OPERATOR, ["admin"])
        self.proved: list[str] = []
        self.started = time.monotonic()

    def say(self, step: str, text: str) -> None:
        print(f"[{step}] {text}  (+{time.monotonic() - self.started:.1f}s)", flush=True)

    def detail(self, text: str) -> None:
        print(f"    {text}", flush=True)

    async def run(self) -> None:
        await self.institutions_and_notices()
        await self.bundles()
        linkage = await self.linked()
        optout = await self.opt_out()
        application_id = await self.review()
        release = await self.release(application_id)
        files = await self.download(release)
        self.verify(linkage, optout, release, files)
        await self.trace(release, files)

    async def institutions_and_notices(self) -> None:
        for inst in demo_data.INSTITUTIONS:
            await self.p.call(
                "POST",
                "intake",
                "/v1/institutions",
                self.ops,
                expect=201,
                json={"code": inst.code, "name": inst.name, "kind": inst.kind},
            )
        self.say("2", f"two institutions registered at intake: {self._institutions()}")
        for inst in demo_data.INSTITUTIONS:
            body = demo_data.notices(self.data, inst.code)
            got = await self.p.call(
                "POST", "intake", "/v1/notices", self._inst(inst.code), json=body
            )
            check(got["recorded"] == len(body["notices"]), "intake did not record every notice")
            self.detail(
                f"{inst.code}: {got['recorded']} notices recorded, given on "
                f"{self.data.notice_date} (60 days ago; notice period 30 days, so it is over)"
            )

    def _institutions(self) -> str:
        return ", ".join(f"{i.code} ({i.kind})" for i in demo_data.INSTITUTIONS)

    def _inst(self, code: str) -> dict[str, str]:
        return self.p.auth(f"institution:{code}", ["intake:submit", "optout:window"])

    async def bundles(self) -> None:
        at_both = sum(1 for p in self.data.persons if p.at_both)
        self.say(
            "3",
            f"FHIR bundles (JP Core Patients with kanji and kana names) for "
            f"{len(self.data.persons)} synthetic persons; {at_both} are seen at both "
            f"institutions under different local ids",
        )
        for inst in demo_data.INSTITUTIONS:
            body = demo_data.bundle(self.data, inst.code)
            got = await self.p.call(
                "POST",
                "intake",
                "/v1/bundles",
                {**self._inst(inst.code), "Idempotency-Key": f"demo-{inst.code}"},
                expect=202,
                json=body,
            )
            resources = len(body["entry"])
            self.detail(f"{inst.code}: {resources} resources → {got['counts']}")
            check(
                got["counts"]["accepted"] == len(self.data.at(inst.code))
                and got["counts"]["held"] == 0
                and got["counts"]["rejected"] == 0,
                f"intake did not accept every patient of {inst.code}: {got['counts']}",
            )
        styles: dict[str, int] = {}
        for person in self.data.persons:
            for style in person.spelling.values():
                styles[style] = styles.get(style, 0) + 1
        self.detail(
            "written differently at the second institution: "
            + ", ".join(f"{n} in {s}" for s, n in sorted(styles.items()))
        )

    async def linked(self) -> dict[str, Any]:
        records = self.data.records
        persons = len(self.data.persons)
        stats = await until(
            "linkage linking every record",
            lambda: self.p.call("GET", "linkage", "/v1/stats", self.ops),
            lambda s: s["records"] >= records,
        )
        store = await until(
            "the anonymizer's research store holding every person",
            lambda: self.p.call("GET", "anonymizer", "/v1/stats", self.ops),
            lambda s: s["persons"] >= persons,
        )
        self.say(
            "4",
            f"linkage: {stats['records']} records → {stats['persons']} persons, "
            f"{stats['links']} cross-institution links, {stats['possible_open']} pairs left "
            f"for review; research store: {store['persons']} pseudonymous persons",
        )
        check(stats["records"] == records, f"linkage holds {stats['records']} records")
        check(
            stats["persons"] == persons,
            f"linkage made {stats['persons']} persons of {records} records, expected {persons}",
        )
        check(stats["links"] == records - persons, "linkage links do not add up")
        self.proved.append(
            f"records linked: {records} records from 2 institutions → {persons} persons "
            f"({records - persons} cross-institution links, spelling variants included)"
        )
        return {"linkage": stats, "store": store}

    async def opt_out(self) -> dict[str, Any]:
        person = self.data.opted_out
        claims = {
            "family_name": person.family_name,
            "given_name": person.given_name,
            "family_name_kana": person.family_name_kana,
            "given_name_kana": person.given_name_kana,
            "birthdate": person.birth_date.isoformat(),
            "gender": person.sex,
        }
        patient = self.p.auth(f"patient:pt-demo-{person.number}", ["optout:self"], claims)
        got = await self.p.call(
            "POST",
            "optout",
            "/v1/optouts",
            patient,
            expect=202,
            json={"action": "stop_and_delete", "scope": "all"},
        )
        optout_id = got["optout_id"]
        self.say(
            "5",
            f"a patient seen at both institutions (heart failure) opts out with "
            f"stop_and_delete, subject from the token's verified claims: {got['status']}",
        )

        async def probe() -> dict[str, Any]:
            response = await self.p.client.get(
                self.p.url("optout", f"/v1/optouts/{optout_id}"), headers=patient
            )
            if response.status_code == 429:  # the patient's rate limit: wait as told
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                return {"status": "rate limited"}
            check(response.status_code == 200, f"GET optout answered {response.status_code}")
            body: dict[str, Any] = response.json()
            return body

        # Wait on the core services' own counters first and only then ask optout. Asking
        # optout while its consumer stores the acknowledgements can stall both for the SQLite
        # busy timeout (30 s): a kiban_common lock-order issue reported with the demo.
        await until(
            "the research store purging the person",
            lambda: self.p.call("GET", "anonymizer", "/v1/stats", self.ops),
            lambda s: s["purged_persons"] >= 1,
        )
        await asyncio.sleep(1.0)
        status: dict[str, Any] = await until(
            "the opt-out applied", probe, lambda s: s["status"] == "applied", every=2.0
        )
        applied = status["applied"]
        for service in ("intake", "linkage", "anonymizer"):
            ack = applied.get(service)
            check(ack is not None, f"{service} did not acknowledge the opt-out")
            self.detail(
                f"{service:<10} applied at {ack['at']}: matched {ack['matched']}, "
                f"purged {ack['purged']} {ack['purged_by_kind']}"
            )
        check(applied["intake"]["matched"] == 2, "intake did not match the patient at both")
        check(status["matched_persons"] == 1, "linkage did not match exactly one person")
        check(applied["anonymizer"]["purged"] > 0, "the anonymizer purged nothing")
        linkage = await self.p.call("GET", "linkage", "/v1/stats", self.ops)
        store = await self.p.call("GET", "anonymizer", "/v1/stats", self.ops)
        self.detail(
            f"linkage now: {linkage['persons']} persons, {linkage['blocked']} blocked; research "
            f"store: {store['persons']} persons, {store['purged_persons']} purged"
        )
        check(store["purged_persons"] == 1, "the research store did not purge the person")
        self.proved.append(
            "opt-out applied everywhere: "
            + ", ".join(
                f"{s} (matched {applied[s]['matched']}, purged {applied[s]['purged']})"
                for s in ("intake", "linkage", "anonymizer")
            )
        )
        return status

    async def review(self) -> str:
        for member_id, expertise, affiliation in MEMBERS:
            await self.p.call(
                "POST",
                "review",
                "/v1/committee/members",
                self.ops,
                expect=201,
                json={
                    "member_id": member_id,
                    "name": f"委員 {member_id} (demo)",
                    "expertise": expertise,
                    "affiliations": [affiliation],
                },
            )
        researcher = self._researcher()
        application = {
            "title": "心不全患者の予後に関する多施設研究 (demo)",
            "organization": ORGANIZATION,
            "user_category": "academia",
            "purpose": "Describe outcomes of heart-failure patients across institutions.",
            "scientific_rationale": "Multi-institution EHR data shows care patterns.",
            "publication_plan": "Peer-reviewed journal, aggregate results only.",
            "funding_and_coi": "Public research grant; no conflicts of interest.",
            "data_items": ["ehr"],
            "dataset": {
                "kind": "anonymized",
                "resources": ["Patient", "Condition", "Observation"],
                "cohort": {
                    "condition_codes": ["I50*"],
                    "period": {"start": "2020-01-01", "end": date.today().isoformat()},
                },
                "k": K,
            },
        }
        got = await self.p.call(
            "POST", "review", "/v1/applications", researcher, expect=201, json=application
        )
        application_id = str(got["application_id"])
        self.say(
            "6",
            f"a researcher applies for an anonymized dataset (cohort I50*, k={K}): "
            f"{got['status']}; committee of {len(MEMBERS)} (one per expertise group)",
        )
        criteria = dict.fromkeys(
            (
                "purpose",
                "scientific_validity",
                "publication_fairness",
                "benefit_management",
                "provision_lawful",
            ),
            True,
        )
        for member_id, _, _ in MEMBERS:
            await self.p.call(
                "POST",
                "review",
                f"/v1/applications/{application_id}/reviews",
                self._member(member_id),
                expect=201,
                json={"criteria": criteria, "vote": "approve", "comment": "demo review"},
            )
        decided = await self.p.call(
            "POST",
            "review",
            f"/v1/applications/{application_id}/decision",
            self._member(CHAIR),
            json={"decision": "approved"},
        )
        check(decided["status"] == "approved", f"the decision was {decided['status']}")
        number = (decided.get("approval") or {}).get("no")
        self.detail(f"3 reviews (approve), the chair decides: approved, register no. {number}")
        return application_id

    def _researcher(self) -> dict[str, str]:
        return self.p.auth(
            RESEARCHER, ["review:apply", "release:download"], {"organization": ORGANIZATION}
        )

    def _member(self, member_id: str) -> dict[str, str]:
        scopes = ["review:decide"] + (["review:chair"] if member_id == CHAIR else [])
        return self.p.auth(f"committee:{member_id}", scopes)

    async def release(self, application_id: str) -> dict[str, Any]:
        researcher = self._researcher()
        page = await until(
            "the release becoming ready",
            lambda: self.p.call(
                "GET", "release", f"/v1/releases?application_id={application_id}", researcher
            ),
            lambda p: bool(p["items"]) and p["items"][0]["status"] != "building",
            every=0.3,
        )
        release: dict[str, Any] = page["items"][0]
        check(
            release["status"] == "ready",
            f"the release is {release['status']}: {release.get('reason')}",
        )
        self.say(
            "7",
            f"release {release['release_id']} ready for {release['recipient']}: "
            + ", ".join(f"{f['name']} ({f['rows']} rows)" for f in release["files"]),
        )
        self.detail(f"privacy: {release['privacy']}; expires {release['expires_at']}")
        return release

    async def download(self, release: dict[str, Any]) -> dict[str, Path]:
        target = self.p.state / "downloads"
        target.mkdir(parents=True, exist_ok=True)
        researcher = self._researcher()
        files: dict[str, Path] = {}
        for f in release["files"]:
            url = self.p.url("release", f"/v1/releases/{release['release_id']}/files/{f['name']}")
            response = await self.p.client.get(url, headers=researcher)
            check(response.status_code == 200, f"download of {f['name']}: {response.status_code}")
            digest = hashlib.sha256(response.content).hexdigest()
            check(digest == f["sha256"], f"{f['name']}: sha256 differs from the release's")
            path = target / f["name"]
            path.write_bytes(response.content)
            files[f["name"]] = path
        total = sum(p.stat().st_size for p in files.values())
        self.say(
            "8",
            f"the researcher downloaded {len(files)} files ({total} bytes) to {target}/; "
            "every sha256 matches the release",
        )
        return files

    def verify(
        self,
        linkage: dict[str, Any],
        optout: dict[str, Any],
        release: dict[str, Any],
        files: dict[str, Path],
    ) -> None:
        privacy = release["privacy"]
        achieved = privacy.get("achieved_k")
        check(
            achieved is not None and achieved >= K,
            f"achieved k is {achieved}, requested {K}",
        )
        self.proved.append(
            f"achieved k = {achieved} (requested {K}; {privacy.get('suppressed')} suppressed)"
        )
        # No identifier in any file: every way each synthetic identity is written.
        needles = demo_data.identifiers(self.data)
        hits = scan_for_identifiers(files.values(), needles)
        check(not hits, f"identifiers found in released files: {hits}")
        searched = sum(len(v) for v in needles.values())
        self.proved.append(
            f"no identifiers in the files: {searched} strings (names, kana in three "
            f"writings, patient ids, insurance numbers, birth dates, postal codes, addresses) "
            f"searched in {len(files)} files, none found"
        )

    async def trace(self, release: dict[str, Any], files: dict[str, Path]) -> None:
        from kiban_release.domain.manifest import verify as verify_manifest
        from kiban_release.tracing import trace_with_url

        builds = await self.p.call(
            "GET", "anonymizer", f"/v1/builds?release_id={release['release_id']}", self.ops
        )
        items = builds["items"] if isinstance(builds, dict) else builds
        report = items[0]["report"] or {}
        cohort = report.get("cohort_persons")
        released = report.get("persons")
        with_hf = len(self.data.heart_failure_persons)
        expected = with_hf - 1
        check(
            cohort == expected,
            f"the dataset's cohort has {cohort} persons, expected {expected} "
            f"({with_hf} with I50.x, minus the one who opted out)",
        )
        persons_csv = files.get("persons.csv")
        if persons_csv is not None:
            rows = _csv_rows(persons_csv)
            check(len(rows) == released, "persons.csv rows differ from the build report")
        self.proved.append(
            f"the opted-out person is not in the dataset: cohort {cohort} persons = "
            f"{with_hf} with I50.x − 1 opted out ({released} released after suppression)"
        )
        csvs = [p for n, p in files.items() if n.endswith(".csv")]
        check(bool(csvs), "the release has no CSV file")
        largest = max(csvs, key=lambda p: len(_csv_rows(p)))
        header, *rows = _csv_rows(largest, with_header=True)
        sample = random.Random(demo_data.SEED).sample(  # noqa: S311 — a reproducible sample, not a secret
            rows, min(50, len(rows))
        )
        leak = self.p.state / "leaked-sample.csv"
        with leak.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(sample)
        result = await trace_with_url(f"sqlite:///{self.p.state.resolve()}/release.db", leak)
        self.say(
            "9",
            f"trace of a {len(sample)}-row sample of {largest.name}: verdict {result.verdict}, "
            f"release {result.release_id}, recipient {result.recipient}",
        )
        check(
            result.verdict in ("release", "file")
            and result.release_id == release["release_id"]
            and result.recipient == RESEARCHER,
            "the sample was not traced to its release and recipient",
        )
        researcher = self._researcher()
        envelope = await self.p.call(
            "GET", "release", f"/v1/releases/{release['release_id']}/manifest", researcher
        )
        key = await self.p.call("GET", "release", "/v1/manifest-key", {})
        signed = verify_manifest(envelope, key["public_key"])
        check(signed, "the release manifest does not verify with the operator's key")
        manifest = envelope["manifest"]
        check(
            manifest["recipient"] == RESEARCHER
            and {f["sha256"] for f in manifest["files"]} == {f["sha256"] for f in release["files"]},
            "the signed manifest does not name the recipient and files of the release",
        )
        self.detail(
            f"signed manifest (Ed25519, key {envelope['key_id']}) verifies with the operator's "
            f"published key and names the recipient and all {len(manifest['files'])} files"
        )
        self.proved.append(
            f"trace: {len(sample)} rows of {largest.name} → release {result.release_id}, "
            f"recipient {result.recipient}; the signed manifest verifies"
        )


def scan_for_identifiers(
    paths: Iterable[Path], needles: Mapping[str, Iterable[str]]
) -> dict[str, int]:
    """How many identifying strings of each kind occur in each file (`"<file>: <kind>"` → n);
    empty when none does. The strings themselves are never reported."""
    hits: dict[str, int] = {}
    for path in paths:
        text = readable_text(path)
        for kind, values in needles.items():
            found = sum(1 for value in values if value and value in text)
            if found:
                hits[f"{path.name}: {kind}"] = found
    return hits


def readable_text(path: Path) -> str:
    """Everything a reader of the file can see, as text: a CSV's bytes decoded, a Parquet
    file's column names and every cell (its pages are compressed, so its raw bytes would hide
    an identifier from a byte search)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        table = pq.read_table(path)
        cells = [str(v) for column in table.columns for v in column.to_pylist()]
        return "\n".join([*table.column_names, *cells])
    return path.read_bytes().decode("utf-8", errors="replace")


def _csv_rows(path: Path, *, with_header: bool = False) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows if with_header else rows[1:]


# -- the command -------------------------------------------------------------------------------


async def run_demo(host: str, state: Path | None = None) -> int:
    root = state if state is not None else state_dir()
    demo_state = root / "demo"
    shutil.rmtree(demo_state, ignore_errors=True)
    demo_state.mkdir(parents=True)
    started = time.monotonic()
    today = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    data = demo_data.generate(today)
    servers = build_servers(demo_state, host)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    scenario: Scenario | None = None
    try:
        await devmode.wait_ready(servers, tasks)
        print(
            f"[1] six services ready in {time.monotonic() - started:.1f}s (fresh state in "
            f"{demo_state}/: SQLite, dev keys, in-process event bus; ports "
            f"{min(s.port for s in SERVICES.values())}-{max(s.port for s in SERVICES.values())})",
            flush=True,
        )
        async with httpx.AsyncClient(timeout=30) as client:
            scenario = Scenario(Platform(client, host, demo_state), data)
            await scenario.run()
    except (DemoFailed, devmode.StartupFailed) as exc:
        print(f"FAILED: {exc}", flush=True)
        return 1
    except Exception as exc:  # the demo reports whatever broke, and fails
        print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
        return 1
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"\nWhat the demo proved ({time.monotonic() - started:.1f}s):")
    for line in scenario.proved:
        print(f"  ✓ {line}")
    print("DEMO OK")
    return 0
