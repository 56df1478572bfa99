from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiban_common.security import DevIssuer, TokenVerifier

from .conftest import ISSUER


def test_creates_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "dev-issuer.jwk"
    issuer = DevIssuer.load_or_create(path)
    assert issuer.issuer == "kiban-dev"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    key = json.loads(path.read_text())
    assert (key["kty"], key["crv"], key["kid"]) == ("EC", "P-256", issuer.kid)
    assert [p.name for p in path.parent.iterdir()] == ["dev-issuer.jwk"]  # no temp files left


def test_loads_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "dev-issuer.jwk"
    first = DevIssuer.load_or_create(path)
    second = DevIssuer.load_or_create(path, issuer="other")
    assert first.kid == second.kid
    assert first.jwks() == second.jwks()
    assert second.issuer == "other"


def test_jwks_is_public_only(issuer: DevIssuer, tmp_path: Path) -> None:
    jwks = issuer.jwks()
    (key,) = jwks["keys"]
    assert "d" not in key
    assert (key["alg"], key["use"], key["kid"]) == ("ES256", "sig", issuer.kid)
    path = tmp_path / "out" / "jwks.json"
    issuer.write_jwks(path)
    assert json.loads(path.read_text()) == jwks


async def test_mint_claims(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = issuer.mint(
        "committee:c-1", ["review:decide"], {"aud": "kiban-review"}, ttl_seconds=120, now=now
    )
    principal = await verifier.verify(token)
    claims = principal.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "committee:c-1"
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + 120
    assert claims["scope"] == "review:decide"
    assert claims["aud"] == "kiban-review"
    assert len(claims["jti"]) == 32
    assert issuer.mint("committee:c-1", []) != issuer.mint("committee:c-1", [])


def test_mint_refuses_overrides_and_naive_times(issuer: DevIssuer) -> None:
    with pytest.raises(ValueError, match="iss"):
        issuer.mint("operator:o-1", [], {"iss": "evil"})
    with pytest.raises(ValueError, match="timezone"):
        issuer.mint("operator:o-1", [], now=datetime(2024, 1, 1))
    with pytest.raises(TypeError):
        issuer.mint("operator:o-1", "a b")


def test_refuses_a_broken_key_file(tmp_path: Path) -> None:
    path = tmp_path / "dev-issuer.jwk"
    path.write_text('{"kty": "oct", "k": "c2VjcmV0"}')
    with pytest.raises(ValueError, match="P-256"):
        DevIssuer.load_or_create(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="cannot load"):
        DevIssuer.load_or_create(path)
