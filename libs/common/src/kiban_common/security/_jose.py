"""The one module that touches authlib's JOSE implementation.

authlib marks `authlib.jose` deprecated in favour of joserfc (authlib >= 1.6) and warns once on
import; the warning is silenced here because tests run with warnings as errors. Moving to
joserfc changes this module only: the rest of the package sees `Jwk` objects, `JWT.encode` /
`JWT.decode` and the error types below.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

with warnings.catch_warnings():
    import authlib.deprecate  # installs an "always" filter of its own; ours must come after

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import BadSignatureError, JoseError

# An authlib key object (untyped library).
Jwk = Any

# Asymmetric only: `none` and the HMAC family are never accepted, which also rules out the
# "public key used as HMAC secret" confusion.
ALLOWED_ALGORITHMS: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
_KEY_TYPE_BY_ALG = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "EdDSA": ("OKP", None)}
_SIGNING_KEY_TYPES = frozenset({"EC", "RSA", "OKP"})
# Members of private or symmetric JWKs; a published key set must not carry them, and if one
# does they are dropped before import so a verifier never holds private material.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

JWT = JsonWebToken(list(ALLOWED_ALGORITHMS))


def import_public_jwk(raw: Mapping[str, Any]) -> Jwk | None:
    """A verification key from one JWKS entry, or None for entries that cannot sign tokens
    (symmetric keys, encryption keys, unknown types). Raises ValueError for a broken entry."""
    if raw.get("kty") not in _SIGNING_KEY_TYPES or raw.get("use", "sig") != "sig":
        return None
    public = {k: v for k, v in raw.items() if k not in _PRIVATE_MEMBERS}
    try:
        return JsonWebKey.import_key(public)
    except Exception as exc:  # authlib raises assorted types for malformed members
        raise ValueError(f"a JWKS entry cannot be imported ({type(exc).__name__})") from None


def key_fits_algorithm(key: Jwk, alg: str) -> bool:
    kty, crv = _KEY_TYPE_BY_ALG[alg]
    tokens: dict[str, Any] = key.tokens
    if tokens.get("kty") != kty or (crv is not None and tokens.get("crv") != crv):
        return False
    return tokens.get("alg") in (None, alg)


def generate_es256_key(kid: str | None = None) -> Jwk:
    key = JsonWebKey.generate_key("EC", "P-256", is_private=True)
    return JsonWebKey.import_key(
        key.as_dict(is_private=True), {"kid": kid or key.thumbprint(), "alg": "ES256", "use": "sig"}
    )


def import_private_jwk(raw: Mapping[str, Any]) -> Jwk:
    return JsonWebKey.import_key(dict(raw))


__all__ = [
    "ALLOWED_ALGORITHMS",
    "JWT",
    "BadSignatureError",
    "JoseError",
    "Jwk",
    "generate_es256_key",
    "import_private_jwk",
    "import_public_jwk",
    "key_fits_algorithm",
]
