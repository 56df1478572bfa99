"""Bearer-token verification: signature against the issuer's keys, then the claims."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeGuard

from kiban_common.security._errors import AuthenticationError
from kiban_common.security._jose import (
    ALLOWED_ALGORITHMS,
    JWT,
    BadSignatureError,
    JoseError,
    key_fits_algorithm,
)
from kiban_common.security._principal import Principal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kiban_common.security._keys import KeySource

MAX_TOKEN_CHARS = 16_384
_MAX_SUBJECT_CHARS = 256


class TokenVerifier:
    """Verifies compact JWS tokens from one issuer.

    Accepted: `alg` in ES256 / RS256 / EdDSA with a key of the matching type; `iss` equal to
    `issuer`; `sub` a non-empty string; `exp` present and not passed (`nbf` and `iat`, when
    present, not in the future), with `leeway_seconds` of clock skew either way; `aud`
    containing `audience` when one is configured. Scopes come from `scope` (space-separated)
    or `scp` (a list).

    Every refusal is an `AuthenticationError` whose message never includes the token or a
    claim value.

    A token that verified is remembered by its exact text for `cache_seconds` (never past its
    `exp`; at most `cache_size` tokens, least recently used first out), so a client that reuses
    its token is not checked again on every call. Refusals are never remembered.
    """

    def __init__(
        self,
        issuer: str,
        key_source: KeySource,
        audience: str | None = None,
        leeway_seconds: int = 30,
        cache_seconds: int = 0,
        cache_size: int = 10_000,
    ) -> None:
        if not issuer:
            raise ValueError("a token verifier needs an issuer")
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._keys = key_source
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        if self.cache_seconds:
            now = time.time()
            cached = self._verified.get(token)
            if cached is not None:
                if now < cached[0]:
                    self._verified.move_to_end(token)
                    return cached[1]
                del self._verified[token]
        principal = await self._verify(token)
        if self.cache_seconds:
            exp = float(principal.claims["exp"])
            self._verified[token] = (min(now + self.cache_seconds, exp), principal)
            if len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        alg, kid = _read_header(token)
        key = await self._keys.find(kid)
        if not key_fits_algorithm(key, alg):
            raise AuthenticationError(
                "invalid_token", "the key named by the token does not fit its algorithm"
            )
        try:
            claims: dict[str, Any] = dict(JWT.decode(token, key))
        except BadSignatureError:
            raise AuthenticationError("invalid_token", "the signature does not verify") from None
        except (JoseError, ValueError, TypeError):
            raise AuthenticationError("invalid_token", "the token cannot be decoded") from None
        self._check_claims(claims, now=time.time())
        return Principal.from_subject(claims["sub"], _scopes(claims), claims)

    def _check_claims(self, claims: Mapping[str, Any], *, now: float) -> None:
        if claims.get("iss") != self.issuer:
            raise AuthenticationError("wrong_issuer", "the token is not from the expected issuer")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUBJECT_CHARS:
            raise AuthenticationError("invalid_token", "the token has no valid 'sub' claim")
        leeway = self.leeway_seconds
        exp = claims.get("exp")
        if not _is_number(exp):
            raise AuthenticationError("invalid_token", "the token has no valid 'exp' claim")
        if now >= exp + leeway:
            raise AuthenticationError("token_expired", "the token has expired")
        for name in ("nbf", "iat"):
            if name in claims:
                value = claims[name]
                if not _is_number(value):
                    raise AuthenticationError("invalid_token", f"the '{name}' claim is invalid")
                if value > now + leeway:
                    raise AuthenticationError("invalid_token", "the token is not valid yet")
        if self.audience is not None and not _audience_matches(claims.get("aud"), self.audience):
            raise AuthenticationError("wrong_audience", "the token is not for this audience")

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, audience={self.audience!r})"


def _read_header(token: object) -> tuple[str, str | None]:
    """The `alg` and `kid` of the protected header, checked before any key lookup."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("invalid_token", "the token is malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise AuthenticationError("invalid_token", "the token is not a signed JWT")
    try:
        segment = parts[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise AuthenticationError("invalid_token", "the token header is malformed") from None
    if not isinstance(header, dict):
        raise AuthenticationError("invalid_token", "the token header is malformed")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise AuthenticationError(
            "unsupported_algorithm",
            f"only {', '.join(ALLOWED_ALGORITHMS)} signed tokens are accepted",
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthenticationError("invalid_token", "the token header is malformed")
    return alg, kid


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    scp = claims.get("scp")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthenticationError("invalid_token", "the 'scope' claim must be a string")
        return frozenset(scope.split())
    if scp is not None:
        if isinstance(scp, str):
            return frozenset(scp.split())
        if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
            return frozenset(scp)
        raise AuthenticationError("invalid_token", "the 'scp' claim must be a list of strings")
    return frozenset()


def _audience_matches(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    if isinstance(aud, list):
        return audience in aud
    return False


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
