from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kiban_common.security import (
    AuthenticationError,
    DevIssuer,
    FileKeySource,
    PrincipalKind,
    StaticKeySource,
    TokenVerifier,
)

from . import tokens
from .conftest import ISSUER

CANARY = "佐藤花子-CANARY"


async def refused(verifier: TokenVerifier, token: str, code: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(token)
    assert info.value.code == code, info.value.message
    assert token not in str(info.value)
    assert CANARY not in str(info.value)
    return info.value


async def test_happy_path_static(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(
        "patient:p-1",
        ["optout:write", "optout:read"],
        claims={"name": CANARY, "birthdate": "1985-04-01"},
    )
    principal = await verifier.verify(token)
    assert principal.subject == "patient:p-1"
    assert principal.kind is PrincipalKind.PATIENT
    assert principal.id == "p-1"
    assert principal.scopes == {"optout:write", "optout:read"}
    assert principal.claims["name"] == CANARY
    assert principal.claims["iss"] == ISSUER
    assert CANARY not in repr(principal)


async def test_happy_path_file(issuer: DevIssuer, tmp_path: Path) -> None:
    jwks_path = tmp_path / "jwks.json"
    issuer.write_jwks(jwks_path)
    verifier = TokenVerifier(ISSUER, FileKeySource(jwks_path))
    principal = await verifier.verify(issuer.mint("institution:1312345678", ["intake:write"]))
    assert principal.kind is PrincipalKind.INSTITUTION


async def test_expired(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint(
        "operator:o-1", [], ttl_seconds=60, now=datetime.now(UTC) - timedelta(minutes=5)
    )
    await refused(verifier, token, "token_expired")


async def test_leeway(issuer: DevIssuer) -> None:
    token = issuer.mint(
        "operator:o-1", [], ttl_seconds=60, now=datetime.now(UTC) - timedelta(seconds=75)
    )
    assert await TokenVerifier(ISSUER, issuer.key_source(), leeway_seconds=30).verify(token)
    await refused(
        TokenVerifier(ISSUER, issuer.key_source(), leeway_seconds=0), token, "token_expired"
    )


async def test_issued_in_the_future(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    token = issuer.mint("operator:o-1", [], now=datetime.now(UTC) + timedelta(minutes=10))
    await refused(verifier, token, "invalid_token")


async def test_wrong_issuer(tmp_path: Path, issuer: DevIssuer) -> None:
    other = DevIssuer.load_or_create(tmp_path / "other.jwk", issuer="someone-else")
    verifier = TokenVerifier(
        ISSUER, StaticKeySource({"keys": issuer.jwks()["keys"] + other.jwks()["keys"]})
    )
    await refused(verifier, other.mint("operator:o-1", []), "wrong_issuer")


async def test_signed_by_another_key_with_same_kid(
    issuer: DevIssuer, verifier: TokenVerifier
) -> None:
    # a token claiming the trusted key's id, signed with some other key
    token = tokens.sign(tokens.new_ec(), "ES256", tokens.claims(scope="admin"), kid=issuer.kid)
    await refused(verifier, token, "invalid_token")


async def test_signed_by_an_unknown_key(tmp_path: Path, verifier: TokenVerifier) -> None:
    stranger = DevIssuer.load_or_create(tmp_path / "stranger.jwk", issuer=ISSUER)
    await refused(verifier, stranger.mint("operator:o-1", []), "unknown_key")


async def test_tampered_payload(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    header, _, signature = issuer.mint("patient:p-1", ["optout:read"]).split(".")
    forged = tokens.b64url_json(tokens.claims(sub="operator:o-1", scope="admin"))
    await refused(verifier, f"{header}.{forged}.{signature}", "invalid_token")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_rejected(issuer: DevIssuer, verifier: TokenVerifier, alg: str) -> None:
    payload = tokens.claims(name=CANARY)
    header = {"alg": alg, "kid": issuer.kid}
    await refused(verifier, tokens.unsigned(header, payload), "invalid_token")  # empty signature
    await refused(verifier, tokens.unsigned(header, payload, b"x"), "unsupported_algorithm")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_rejected_even_with_public_key_as_secret(
    issuer: DevIssuer, verifier: TokenVerifier, alg: str
) -> None:
    secret = json.dumps(issuer.jwks()["keys"][0]).encode()
    token = tokens.sign_hs256(secret, tokens.claims(name=CANARY), kid=issuer.kid)
    if alg != "HS256":
        header, payload, signature = token.split(".")
        header = tokens.b64url_json({"alg": alg, "kid": issuer.kid})
        token = f"{header}.{payload}.{signature}"
    await refused(verifier, token, "unsupported_algorithm")


async def test_oct_keys_in_jwks_are_ignored() -> None:
    secret = b"s" * 32
    source = StaticKeySource({"keys": [{"kty": "oct", "k": tokens.b64url(secret), "kid": "h"}]})
    verifier = TokenVerifier(ISSUER, source)
    await refused(
        verifier, tokens.sign_hs256(secret, tokens.claims(), kid="h"), "unsupported_algorithm"
    )


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
async def test_accepted_algorithms(alg: str) -> None:
    key: Any = {"ES256": tokens.new_ec, "RS256": tokens.new_rsa, "EdDSA": tokens.new_ed25519}[alg]()
    verifier = TokenVerifier(ISSUER, StaticKeySource({"keys": [tokens.public_jwk(key, "k")]}))
    token = tokens.sign(key, alg, tokens.claims(scp=["a", "b"]), kid="k")
    principal = await verifier.verify(token)
    assert principal.scopes == {"a", "b"}


async def test_algorithm_must_fit_the_key() -> None:
    rsa_key = tokens.new_rsa()
    ec_key = tokens.new_ec()
    verifier = TokenVerifier(ISSUER, StaticKeySource({"keys": [tokens.public_jwk(ec_key, "k")]}))
    # an RS256 token naming an EC key
    await refused(
        verifier, tokens.sign(rsa_key, "RS256", tokens.claims(), kid="k"), "invalid_token"
    )


async def test_audience(issuer: DevIssuer) -> None:
    verifier = TokenVerifier(ISSUER, issuer.key_source(), audience="kiban-intake")
    assert await verifier.verify(issuer.mint("operator:o-1", [], {"aud": "kiban-intake"}))
    assert await verifier.verify(issuer.mint("operator:o-1", [], {"aud": ["x", "kiban-intake"]}))
    await refused(
        verifier, issuer.mint("operator:o-1", [], {"aud": "kiban-optout"}), "wrong_audience"
    )
    await refused(verifier, issuer.mint("operator:o-1", []), "wrong_audience")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"exp": None}, "invalid_token"),
        ({"exp": "tomorrow"}, "invalid_token"),
        ({"sub": None}, "invalid_token"),
        ({"sub": ""}, "invalid_token"),
        ({"sub": 42}, "invalid_token"),
        ({"iss": None}, "wrong_issuer"),
        ({"scope": ["a"]}, "invalid_token"),
        ({"scp": [1]}, "invalid_token"),
        ({"nbf": 9_999_999_999}, "invalid_token"),
    ],
)
async def test_required_claims(changes: dict[str, Any], code: str) -> None:
    key = tokens.new_ec()
    verifier = TokenVerifier(ISSUER, StaticKeySource({"keys": [tokens.public_jwk(key, "k")]}))
    payload = {k: v for k, v in {**tokens.claims(name=CANARY), **changes}.items() if v is not None}
    await refused(verifier, tokens.sign(key, "ES256", payload, kid="k"), code)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d.e",
        "!!!.e30.sig",
        "e30.e30.sig",
        tokens.b64url(b"[1]") + ".e30.sig",
        "x" * 20_000,
    ],
)
async def test_malformed(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        await verifier.verify(token)
    assert info.value.code in {"invalid_token", "unsupported_algorithm"}


async def test_scope_string_and_scp_string(issuer: DevIssuer, verifier: TokenVerifier) -> None:
    principal = await verifier.verify(issuer.mint("researcher:r-1", ["a", "b"]))
    assert principal.scopes == {"a", "b"}
    key = tokens.new_ec()
    source = StaticKeySource({"keys": [tokens.public_jwk(key, "k")]})
    token = tokens.sign(key, "ES256", tokens.claims(scp="x y"), kid="k")
    assert (await TokenVerifier(ISSUER, source).verify(token)).scopes == {"x", "y"}


class CountingKeys(StaticKeySource):
    """A key source that counts lookups: one lookup = one full verification."""

    def __init__(self, issuer: DevIssuer) -> None:
        super().__init__(issuer.jwks())
        self.lookups = 0

    async def find(self, kid: str | None) -> Any:
        self.lookups += 1
        return await super().find(kid)


async def test_a_reused_token_is_verified_once_per_cache_period(issuer: DevIssuer) -> None:
    keys = CountingKeys(issuer)
    verifier = TokenVerifier(ISSUER, keys, cache_seconds=60)
    token = issuer.mint("patient:p-1", ["optout:read"])
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first
    assert keys.lookups == 1
    await verifier.verify(issuer.mint("patient:p-2", ["optout:read"]))
    assert keys.lookups == 2


async def test_a_cached_token_is_never_honoured_past_its_expiry(
    issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(ISSUER, issuer.key_source(), cache_seconds=600, leeway_seconds=0)
    token = issuer.mint("patient:p-1", [], ttl_seconds=30)
    await verifier.verify(token)
    later = time.time() + 31
    monkeypatch.setattr("kiban_common.security._verifier.time.time", lambda: later)
    await refused(verifier, token, "token_expired")
    assert token not in verifier._verified


async def test_refusals_are_not_cached_and_zero_turns_the_cache_off(issuer: DevIssuer) -> None:
    keys = CountingKeys(issuer)
    cached = TokenVerifier(ISSUER, keys, cache_seconds=60)
    token = issuer.mint("patient:p-1", [])
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        await refused(cached, tampered, "invalid_token")
    assert keys.lookups == 2
    uncached = TokenVerifier(ISSUER, keys, cache_seconds=0)
    for _ in range(2):
        await uncached.verify(token)
    assert keys.lookups == 4


async def test_the_cache_holds_at_most_cache_size_tokens(issuer: DevIssuer) -> None:
    verifier = TokenVerifier(ISSUER, issuer.key_source(), cache_seconds=60, cache_size=3)
    for n in range(5):
        await verifier.verify(issuer.mint(f"patient:p-{n}", []))
    assert len(verifier._verified) == 3
