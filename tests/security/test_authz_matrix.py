"""Every route of every service × every kind of caller: the authorization decision is exactly
the one in `EXPECTED` below.

A cell is `401` (not authenticated), `403` (authenticated, refused: missing scope, wrong kind
of principal), `blk` (403 with code `blocked`: the access monitor blocked a principal kind the
service's zone does not serve, on its first call) or `ok` (authorization passed: any other
status, including 404 for the dummy ids in paths and 422 for the empty bodies sent).

A route missing from the table fails the test: a new route needs its authz row.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_common.devstate import DEV_ISSUER
from kiban_common.security import DevIssuer
from kiban_testing import embedded_settings, running_service

# The columns, in order.
CALLERS = (
    "none",  # no Authorization header
    "institution",  # institution:<code> with intake:submit optout:window (registered in intake)
    "patient",  # patient:<id> with optout:self and the profile claims
    "researcher",  # researcher:<id> with review:apply release:download, claim organization
    "committee",  # committee:<id> with review:decide
    "chair",  # committee:<id> with review:decide review:chair
    "operator",  # operator:<id> with admin
    "foreign",  # signed with the trusted key but issued by another issuer (iss differs)
    "forged",  # the trusted issuer's name, signed by a key the service does not trust
    "expired",  # the trusted issuer and key, expired an hour ago
)

PUBLIC = "ok  ok  ok  ok  ok  ok  ok  ok  ok  ok"
# Core zone (intake, linkage, anonymizer): patients, researchers and committee members are not
# served there, so the monitor blocks them on their first call whatever the route.
CORE_ADMIN = "401 403 blk blk blk blk ok  401 401 401"
CORE_INSTITUTION = "401 ok  blk blk blk blk 403 401 401 401"
CORE_AUTHENTICATED = "401 ok  blk blk blk blk ok  401 401 401"
INFO_ADMIN = "401 403 403 403 403 403 ok  401 401 401"

EXPECTED: dict[tuple[str, str, str], str] = {
    # every service
    ("*", "GET", "/healthz"): PUBLIC,
    ("*", "GET", "/readyz"): PUBLIC,
    ("*", "GET", "/openapi.json"): PUBLIC,
    ("*", "GET", "/docs"): PUBLIC,
    ("*", "GET", "/docs/oauth2-redirect"): PUBLIC,
    ("*", "GET", "/redoc"): PUBLIC,
    # Prometheus scrapes without a token; the endpoint admits the monitoring network only
    # (the test client is on the loopback, inside it; libs/common/tests/test_metrics.py proves
    # the refusals from outside and through a proxy).
    ("*", "GET", "/metrics"): PUBLIC,
    # intake (core)
    ("intake", "POST", "/v1/institutions"): CORE_ADMIN,
    ("intake", "GET", "/v1/institutions"): CORE_ADMIN,
    ("intake", "POST", "/v1/institutions/{code}/suspend"): CORE_ADMIN,
    ("intake", "POST", "/v1/institutions/{code}/reinstate"): CORE_ADMIN,
    ("intake", "POST", "/v1/notices"): CORE_INSTITUTION,
    ("intake", "GET", "/v1/notices/due"): CORE_INSTITUTION,
    ("intake", "POST", "/v1/bundles"): CORE_INSTITUTION,
    ("intake", "POST", "/v1/bulk"): CORE_INSTITUTION,
    ("intake", "GET", "/v1/submissions/{submission_id}"): CORE_AUTHENTICATED,
    ("intake", "GET", "/v1/security/blocks"): CORE_ADMIN,
    ("intake", "POST", "/v1/security/blocks/{principal}/lift"): CORE_ADMIN,
    # optout (information); columns: none inst pat res com chair op foreign forged expired
    ("optout", "POST", "/v1/optouts"): "401 ok  ok  403 403 403 403 401 401 401",
    ("optout", "GET", "/v1/optouts/me"): "401 403 ok  403 403 403 403 401 401 401",
    ("optout", "GET", "/v1/optouts/{optout_id}"): "401 ok  ok  403 403 403 ok  401 401 401",
    ("optout", "GET", "/v1/security/blocks"): INFO_ADMIN,
    ("optout", "POST", "/v1/security/blocks/{principal}/lift"): INFO_ADMIN,
    # linkage (core): operators only
    ("linkage", "GET", "/v1/stats"): CORE_ADMIN,
    ("linkage", "GET", "/v1/persons/{key}"): CORE_ADMIN,
    ("linkage", "POST", "/v1/persons/{key}/split"): CORE_ADMIN,
    ("linkage", "GET", "/v1/possible-links"): CORE_ADMIN,
    ("linkage", "POST", "/v1/possible-links/{link_id}/decision"): CORE_ADMIN,
    ("linkage", "GET", "/v1/optout-reviews"): CORE_ADMIN,
    ("linkage", "POST", "/v1/optout-reviews/{optout_id}/resolve"): CORE_ADMIN,
    ("linkage", "GET", "/v1/security/blocks"): CORE_ADMIN,
    ("linkage", "POST", "/v1/security/blocks/{principal}/lift"): CORE_ADMIN,
    # anonymizer (core): operators only
    ("anonymizer", "GET", "/v1/stats"): CORE_ADMIN,
    ("anonymizer", "GET", "/v1/builds/{build_id}"): CORE_ADMIN,
    ("anonymizer", "GET", "/v1/builds"): CORE_ADMIN,
    ("anonymizer", "GET", "/v1/security/blocks"): CORE_ADMIN,
    ("anonymizer", "POST", "/v1/security/blocks/{principal}/lift"): CORE_ADMIN,
    # review (information); columns as in CALLERS
    ("review", "POST", "/v1/committee/members"): INFO_ADMIN,
    ("review", "GET", "/v1/committee/members"): INFO_ADMIN,
    ("review", "POST", "/v1/certified-users"): INFO_ADMIN,
    ("review", "GET", "/v1/certified-users"): INFO_ADMIN,
    ("review", "POST", "/v1/applications"): "401 403 403 ok  403 403 403 401 401 401",
    ("review", "GET", "/v1/applications"): "401 403 403 ok  ok  ok  ok  401 401 401",
    (
        "review",
        "GET",
        "/v1/applications/{application_id}",
    ): "401 403 403 ok  ok  ok  ok  401 401 401",
    (
        "review",
        "PUT",
        "/v1/applications/{application_id}",
    ): "401 403 403 ok  403 403 403 401 401 401",
    (
        "review",
        "POST",
        "/v1/applications/{application_id}/reviews",
    ): "401 403 403 403 ok  ok  403 401 401 401",
    (
        "review",
        "POST",
        "/v1/applications/{application_id}/start-review",
    ): "401 403 403 403 403 ok  403 401 401 401",
    (
        "review",
        "POST",
        "/v1/applications/{application_id}/decision",
    ): "401 403 403 403 403 ok  403 401 401 401",
    ("review", "GET", "/v1/public/approvals"): PUBLIC,
    ("review", "GET", "/v1/stats"): INFO_ADMIN,
    ("review", "GET", "/v1/security/blocks"): INFO_ADMIN,
    ("review", "POST", "/v1/security/blocks/{principal}/lift"): INFO_ADMIN,
    # release (information); columns as in CALLERS
    ("release", "GET", "/v1/releases"): "401 403 403 ok  403 403 ok  401 401 401",
    ("release", "GET", "/v1/releases/{release_id}"): "401 403 403 ok  403 403 ok  401 401 401",
    (
        "release",
        "GET",
        "/v1/releases/{release_id}/manifest",
    ): "401 403 403 ok  403 403 ok  401 401 401",
    ("release", "GET", "/v1/releases/{release_id}/fee"): "401 403 403 ok  403 403 ok  401 401 401",
    ("release", "GET", "/v1/releases/{release_id}/downloads"): INFO_ADMIN,
    # files: the applicant alone, not even an operator
    (
        "release",
        "GET",
        "/v1/releases/{release_id}/files/{name}",
    ): "401 403 403 ok  403 403 403 401 401 401",
    ("release", "POST", "/v1/releases/{release_id}/revoke"): INFO_ADMIN,
    ("release", "GET", "/v1/manifest-key"): PUBLIC,
    ("release", "GET", "/v1/security/blocks"): INFO_ADMIN,
    ("release", "POST", "/v1/security/blocks/{principal}/lift"): INFO_ADMIN,
}

# Bodies sent instead of `{}` where a route checks authorization only after validating its body:
# a well-formed body lets the matrix reach that check.
BODIES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("optout", "POST", "/v1/optouts"): {"action": "stop", "scope": "all"},
}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves; HEAD aside (Starlette adds it to GETs)."""
    found = []
    for route in iter_route_contexts(app.routes):
        methods: Any = route.methods or ()
        if route.path is None:
            continue
        found.extend((m, str(route.path)) for m in sorted(methods) if m != "HEAD")
    return found


def _expected(service: str, method: str, path: str) -> list[str] | None:
    row = EXPECTED.get((service, method, path)) or EXPECTED.get(("*", method, path))
    return row.split() if row else None


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "x" + uuid.uuid4().hex[:12], path)


PATIENT_CLAIMS = {
    "family_name": "試験",
    "given_name": "花子",
    "family_name_kana": "シケン",
    "given_name_kana": "ハナコ",
    "birthdate": "1970-04-01",
    "gender": "female",
}
INSTITUTION_CODE = "1399999999"


class Callers:
    def __init__(self, state: Path) -> None:
        self.trusted = DevIssuer.load_or_create(state / "dev-issuer.jwk", issuer=DEV_ISSUER)
        self.other_issuer = DevIssuer.load_or_create(
            state / "dev-issuer.jwk", issuer="https://id.elsewhere.example/"
        )
        self.forger = DevIssuer.load_or_create(state / "forged-issuer.jwk", issuer=DEV_ISSUER)

    def headers(self, caller: str) -> dict[str, str]:
        fresh = uuid.uuid4().hex[:12]
        token: str | None
        match caller:
            case "none":
                token = None
            case "institution":
                token = self.trusted.mint(
                    f"institution:{INSTITUTION_CODE}", ["intake:submit", "optout:window"]
                )
            case "patient":
                token = self.trusted.mint(f"patient:{fresh}", ["optout:self"], PATIENT_CLAIMS)
            case "researcher":
                token = self.trusted.mint(
                    f"researcher:{fresh}",
                    ["review:apply", "release:download"],
                    {"organization": "Example University"},
                )
            case "committee":
                token = self.trusted.mint(f"committee:{fresh}", ["review:decide"])
            case "chair":
                token = self.trusted.mint(f"committee:{fresh}", ["review:decide", "review:chair"])
            case "operator":
                token = self.trusted.mint(f"operator:{fresh}", ["admin"])
            case "foreign":
                token = self.other_issuer.mint(f"operator:{fresh}", ["admin"])
            case "forged":
                token = self.forger.mint(f"operator:{fresh}", ["admin"])
            case "expired":
                token = self.trusted.mint(
                    f"operator:{fresh}",
                    ["admin"],
                    ttl_seconds=60,
                    now=datetime.now(UTC) - timedelta(hours=1),
                )
            case _:
                raise AssertionError(caller)
        return {"Authorization": f"Bearer {token}"} if token else {}


def _classify(status: int, body: Any) -> str:
    if status == 401:
        return "401"
    if status == 403:
        code = body.get("code") if isinstance(body, dict) else None
        return "blk" if code == "blocked" else "403"
    return "ok"


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_route_decides_authorization_exactly_as_the_matrix_says(
    service: str, tmp_path: Path
) -> None:
    spec = SERVICES[service]
    settings = embedded_settings(spec.settings, tmp_path)
    async with running_service(spec.create_app, settings, broker=MemoryBroker()) as svc:
        assert (await svc.until_ready()).status_code == 200  # linkage: its index loads at start
        callers = Callers(tmp_path)
        if service == "intake":
            registered = await svc.client.post(
                "/v1/institutions",
                json={"code": INSTITUTION_CODE, "name": "試験病院", "kind": "hospital"},
                headers=callers.headers("operator"),
            )
            assert registered.status_code == 201, registered.text
        missing, wrong = [], []
        for method, path in _routes(svc.app):
            row = _expected(service, method, path)
            observed = []
            for caller in CALLERS:
                kwargs: dict[str, Any] = {"headers": callers.headers(caller)}
                if method in ("POST", "PUT", "PATCH"):
                    kwargs["json"] = BODIES.get((service, method, path), {})
                response = await svc.client.request(method, _concrete(path), **kwargs)
                assert response.status_code < 500, (service, method, path, caller)
                try:
                    body = response.json()
                except ValueError:
                    body = None
                observed.append(_classify(response.status_code, body))
            if row is None:
                missing.append(f"{method} {path}")
                continue
            assert len(row) == len(CALLERS), (method, path)
            for caller, want, got in zip(CALLERS, row, observed, strict=True):
                if want != got:
                    wrong.append(f"{method} {path} as {caller}: expected {want}, got {got}")
    assert not missing, f"new route without an authz entry in EXPECTED: {missing}"
    assert not wrong, "\n".join(wrong)
