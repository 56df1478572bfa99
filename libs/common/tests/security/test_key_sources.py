from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiban_common.security import (
    AuthenticationError,
    DevIssuer,
    FileKeySource,
    StaticKeySource,
    TokenVerifier,
    UrlKeySource,
)

from . import tokens
from .conftest import ISSUER

JWKS_URL = "https://issuer.example/.well-known/jwks.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """Serves whatever JWKS it currently holds and counts the fetches."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.fail = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.fetches += 1
        if self.fail:
            return httpx.Response(503)
        return httpx.Response(200, json=self.jwks)


async def test_url_source_refetches_on_unknown_kid(issuer: DevIssuer, tmp_path: Path) -> None:
    rotated = DevIssuer.load_or_create(tmp_path / "rotated.jwk", issuer=ISSUER)
    server = JwksServer(issuer.jwks())
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        source = UrlKeySource(JWKS_URL, http, cache_seconds=300, clock=clock)
        verifier = TokenVerifier(ISSUER, source)

        await verifier.verify(issuer.mint("operator:o-1", []))
        await verifier.verify(issuer.mint("operator:o-1", []))
        assert server.fetches == 1  # cached

        # the issuer rotates; a token with the new kid arrives within the refetch window
        server.jwks = {"keys": issuer.jwks()["keys"] + rotated.jwks()["keys"]}
        clock.now += 5
        with pytest.raises(AuthenticationError) as info:
            await verifier.verify(rotated.mint("operator:o-1", []))
        assert info.value.code == "unknown_key"
        assert server.fetches == 1  # not more often than every 10 s

        clock.now += 10
        principal = await verifier.verify(rotated.mint("operator:o-1", []))
        assert principal.subject == "operator:o-1"
        assert server.fetches == 2

        # made-up kids cannot make it hammer the issuer
        stranger = DevIssuer.load_or_create(tmp_path / "stranger.jwk", issuer=ISSUER)
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                await verifier.verify(stranger.mint("operator:o-1", []))
        assert server.fetches == 2


async def test_url_source_cache_expiry_and_failures(issuer: DevIssuer) -> None:
    server = JwksServer(issuer.jwks())
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        source = UrlKeySource(JWKS_URL, http, cache_seconds=300, clock=clock)
        assert await source.find(issuer.kid)
        clock.now += 301
        server.fail = True
        assert await source.find(issuer.kid)  # stale keys are kept when the issuer is down
        assert server.fetches == 2


async def test_url_source_unavailable_without_keys() -> None:
    server = JwksServer({})
    server.fail = True
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        source = UrlKeySource(JWKS_URL, http, clock=clock)
        for _ in range(3):
            with pytest.raises(AuthenticationError) as info:
                await source.find("k1")
            assert info.value.code == "keys_unavailable"
        assert server.fetches == 1  # failures are not retried on every request
        server.fail = False
        server.jwks = {"keys": []}
        clock.now += 11
        with pytest.raises(AuthenticationError) as info:
            await source.find("k1")
        assert info.value.code == "unknown_key"


async def test_url_source_rejects_non_jwks(issuer: DevIssuer) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=["not", "a", "jwks"])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(AuthenticationError, match="keys_unavailable"):
            await UrlKeySource(JWKS_URL, http).find(issuer.kid)


async def test_file_source_reloads_on_change(issuer: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    issuer.write_jwks(path)
    source = FileKeySource(path)
    verifier = TokenVerifier(ISSUER, source)
    await verifier.verify(issuer.mint("operator:o-1", []))

    second = DevIssuer.load_or_create(tmp_path / "second.jwk", issuer=ISSUER)
    with pytest.raises(AuthenticationError, match="unknown_key"):
        await verifier.verify(second.mint("operator:o-1", []))
    second.write_jwks(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    await verifier.verify(second.mint("operator:o-1", []))
    with pytest.raises(AuthenticationError, match="unknown_key"):
        await verifier.verify(issuer.mint("operator:o-1", []))


async def test_file_source_missing_and_broken(issuer: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    source = FileKeySource(path)
    with pytest.raises(AuthenticationError, match="keys_unavailable"):
        await source.find(issuer.kid)
    issuer.write_jwks(path)
    assert await source.find(issuer.kid)
    path.write_text("{half a file")
    assert await source.find(issuer.kid)  # the keys read before stay in use


def test_static_source_rejects_non_jwks() -> None:
    with pytest.raises(ValueError, match="JWKS"):
        StaticKeySource({"kty": "EC"})
    with pytest.raises(ValueError, match="cannot be imported"):
        StaticKeySource({"keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "kid": "k"}]})


async def test_private_members_are_dropped(issuer: DevIssuer, tmp_path: Path) -> None:
    private = json.loads((tmp_path / "state" / "dev-issuer.jwk").read_text())
    assert "d" in private
    source = StaticKeySource({"keys": [private]})
    key = await source.find(issuer.kid)
    assert "d" not in key.tokens
    assert await TokenVerifier(ISSUER, source).verify(issuer.mint("operator:o-1", []))


async def test_kid_less_token_uses_the_only_key() -> None:
    key = tokens.new_ec()
    source = StaticKeySource({"keys": [tokens.public_jwk(key, "k")]})
    assert await TokenVerifier(ISSUER, source).verify(
        tokens.sign(key, "ES256", tokens.claims(), kid=None)
    )
    two = StaticKeySource(
        {"keys": [tokens.public_jwk(key, "k"), tokens.public_jwk(tokens.new_ec(), "j")]}
    )
    with pytest.raises(AuthenticationError, match="unknown_key"):
        await TokenVerifier(ISSUER, two).verify(tokens.sign(key, "ES256", tokens.claims(), None))
