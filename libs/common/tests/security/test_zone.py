from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from kiban_common.security import (
    DEFAULT_CORE_KINDS,
    Principal,
    PrincipalKind,
    TokenVerifier,
    ZoneGuard,
    principal_allowed_in_zone,
)

from .app import build


def guarded(verifier: TokenVerifier, zone: str, networks: list[Any]) -> FastAPI:
    app = build(verifier, zone=zone)
    app.add_middleware(ZoneGuard, zone=zone, allowed_networks=networks)
    return app


async def call(app: FastAPI, client: tuple[str, int], path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        return await http.get(path)


async def test_core_rejects_outside_networks(verifier: TokenVerifier) -> None:
    app = guarded(verifier, "core", [ipaddress.ip_network("127.0.0.0/8"), "10.1.0.0/16"])
    response = await call(app, ("10.9.9.9", 123), "/v1/me")
    assert response.status_code == 403
    assert response.json()["code"] == "zone_denied"
    assert set(response.json()) == {"code", "message"}
    assert "10.9.9.9" not in response.text
    # the guard answers before authentication runs: same answer with a path that needs a token
    assert (await call(app, ("10.9.9.9", 123), "/v1/optouts/x")).status_code == 403


async def test_core_exempts_probes(verifier: TokenVerifier) -> None:
    app = guarded(verifier, "core", ["127.0.0.0/8"])
    response = await call(app, ("10.9.9.9", 123), "/healthz")
    assert response.status_code == 200


async def test_core_lets_allowed_networks_through(verifier: TokenVerifier) -> None:
    app = guarded(verifier, "core", ["127.0.0.0/8", "10.1.0.0/16", "fd00::/8"])
    for client in [("127.0.0.1", 1), ("10.1.2.3", 1), ("::ffff:10.1.2.3", 1), ("fd00::5", 1)]:
        response = await call(app, client, "/v1/me")
        assert response.status_code == 401, client  # reached authentication


async def test_core_without_networks_refuses_everyone(verifier: TokenVerifier) -> None:
    app = guarded(verifier, "core", [])
    assert (await call(app, ("127.0.0.1", 1), "/v1/me")).status_code == 403
    for odd in [("testclient", 1), ("", 1)]:
        assert (
            await call(guarded(verifier, "core", ["0.0.0.0/0"]), odd, "/v1/me")
        ).status_code == 403


async def test_information_zone_is_open(verifier: TokenVerifier) -> None:
    app = guarded(verifier, "information", [])
    assert (await call(app, ("203.0.113.7", 1), "/v1/me")).status_code == 401


async def test_websocket_refused_in_core() -> None:
    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("must not be reached")

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    guard = ZoneGuard(app, zone="core", allowed_networks=["127.0.0.0/8"])
    await guard({"type": "websocket", "path": "/ws", "client": ("10.9.9.9", 1)}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert guard.denied == 1


def test_lifespan_passes() -> None:
    guard = ZoneGuard(FastAPI(), zone="core")
    assert guard.exempt_paths == {"/healthz", "/readyz"}


@pytest.mark.parametrize(
    ("subject", "zone", "kinds", "allowed"),
    [
        ("institution:1", "core", None, True),
        ("operator:o-1", "core", None, True),
        ("patient:p-1", "core", None, False),
        ("researcher:r-1", "core", None, False),
        ("committee:c-1", "core", None, False),
        ("robot:x", "core", None, False),
        ("patient:p-1", "information", None, True),
        ("researcher:r-1", "information", None, True),
        ("robot:x", "information", None, False),
        ("patient:p-1", "core", {PrincipalKind.PATIENT}, True),
        ("operator:o-1", "information", {"patient"}, False),
        ("robot:x", "information", {"unknown"}, True),
    ],
)
def test_principal_allowed_in_zone(
    subject: str, zone: str, kinds: set[Any] | None, allowed: bool
) -> None:
    assert principal_allowed_in_zone(Principal.from_subject(subject), zone, kinds) is allowed


def test_default_core_kinds() -> None:
    assert {PrincipalKind.INSTITUTION, PrincipalKind.OPERATOR} == DEFAULT_CORE_KINDS
    with pytest.raises(ValueError, match="elsewhere"):
        principal_allowed_in_zone(Principal.from_subject("operator:o-1"), "elsewhere")
