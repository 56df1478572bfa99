from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kiban_common.security import DevIssuer, FileKeySource, TokenVerifier

from .app import build

CANARY = "山田太郎-CANARY"


@pytest.fixture
async def client(verifier: TokenVerifier) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build(verifier), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://core") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_401_without_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/optouts/o-1")
    assert response.status_code == 401
    assert response.json() == {"code": "missing_token", "message": "a bearer token is required"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_401_other_scheme(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.json()["code"] == "missing_token"


async def test_401_bad_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/optouts/o-1", headers=bearer("not.a.token"))
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "not.a.token" not in response.text


async def test_401_expired(client: httpx.AsyncClient, issuer: DevIssuer) -> None:
    token = issuer.mint("patient:p-1", ["optout:read"], {"name": CANARY}, ttl_seconds=-3600)
    response = await client.get("/v1/optouts/o-1", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"
    assert CANARY not in response.text
    assert token not in response.text


async def test_403_wrong_scope(client: httpx.AsyncClient, issuer: DevIssuer) -> None:
    token = issuer.mint("patient:p-1", ["optout:write"])
    response = await client.get("/v1/optouts/o-1", headers=bearer(token))
    assert response.status_code == 403
    assert response.json() == {
        "code": "insufficient_scope",
        "message": "this route needs scope 'optout:read'",
    }
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_200_right_scope(client: httpx.AsyncClient, issuer: DevIssuer) -> None:
    token = issuer.mint("patient:p-1", ["optout:read"])
    response = await client.get("/v1/optouts/o-1", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {"id": "o-1", "subject": "patient:p-1"}


async def test_keys_unavailable_is_503(tmp_path: Path, issuer: DevIssuer) -> None:
    verifier = TokenVerifier("kiban-dev", FileKeySource(tmp_path / "missing.json"))
    transport = httpx.ASGITransport(app=build(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://core") as http:
        response = await http.get("/v1/me", headers=bearer(issuer.mint("operator:o-1", [])))
    assert response.status_code == 503
    assert response.json()["code"] == "keys_unavailable"


async def test_validation_error_does_not_echo_input(
    client: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    token = issuer.mint("patient:p-1", ["optout:write"])
    body = {
        "subject": {
            "name": CANARY,
            "birth_date": f"{CANARY}-date",
            "insurer_number": f"{CANARY}-no",
        },
        "action": "stop",
    }
    response = await client.post("/v1/optouts", json=body, headers=bearer(token))
    assert response.status_code == 422
    payload = response.json()
    assert set(payload) == {"code", "message"}
    assert payload["code"] == "invalid_request"
    assert "body.subject.birth_date: " in payload["message"]
    assert "body.subject.insurer_number: invalid value (value_error)" in payload["message"]
    assert CANARY not in response.text


async def test_validation_error_missing_field_and_bad_json(
    client: httpx.AsyncClient, issuer: DevIssuer
) -> None:
    token = issuer.mint("patient:p-1", ["optout:write"])
    response = await client.post("/v1/optouts", json={"action": "stop"}, headers=bearer(token))
    assert response.json() == {"code": "invalid_request", "message": "body.subject: Field required"}
    response = await client.post(
        "/v1/optouts",
        content=f'{{"name": "{CANARY}", oops',
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert CANARY not in response.text


async def test_http_errors_have_the_same_shape(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/patients/{CANARY}")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not Found"}
    response = await client.delete("/v1/me")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
    response = await client.get("/v1/conflict")
    assert response.status_code == 409
    assert response.json() == {
        "code": "already_applied",
        "message": "the opt-out is already in force",
    }


async def test_unexpected_exception_is_a_bare_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/v1/boom")
    assert response.status_code == 500
    assert response.json() == {"code": "internal_error", "message": "internal error"}
    assert "RuntimeError" in caplog.text
    assert CANARY not in caplog.text


async def test_zone_principal_guard(client: httpx.AsyncClient, issuer: DevIssuer) -> None:
    for subject, status in [
        ("institution:1312345678", 200),
        ("operator:o-1", 200),
        ("patient:p-1", 403),
        ("researcher:r-1", 403),
        ("robot:x", 403),
    ]:
        response = await client.get("/v1/core-only", headers=bearer(issuer.mint(subject, [])))
        assert response.status_code == status, subject
        if status == 403:
            assert response.json()["code"] == "zone_denied"


async def test_zone_principal_guard_configured_kinds(
    verifier: TokenVerifier, issuer: DevIssuer
) -> None:
    app = build(verifier, zone="information")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://info"
    ) as http:
        response = await http.get("/v1/core-only", headers=bearer(issuer.mint("patient:p-1", [])))
        assert response.status_code == 200
        app.state.zone_principal_kinds = {"researcher"}
        response = await http.get("/v1/core-only", headers=bearer(issuer.mint("patient:p-1", [])))
        assert response.status_code == 403


def test_openapi_documents_the_bearer_scheme(verifier: TokenVerifier) -> None:
    schema = build(verifier).openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/optouts/{optout_id}"]["get"]["security"] == [{"HTTPBearer": []}]
