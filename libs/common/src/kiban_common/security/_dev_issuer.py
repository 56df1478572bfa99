"""A token issuer for development and tests: one ES256 key kept in a private JWK file.

Never configure a production service to trust it: whoever can read the key file can mint any
principal with any scope.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiban_common.security._jose import JWT, Jwk, generate_es256_key, import_private_jwk
from kiban_common.security._keys import StaticKeySource

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_RESERVED_CLAIMS = frozenset({"iss", "sub", "iat", "exp", "jti", "scope", "scp"})


class DevIssuer:
    def __init__(self, key: Jwk, issuer: str) -> None:
        tokens = key.tokens
        if tokens.get("kty") != "EC" or tokens.get("crv") != "P-256" or "d" not in tokens:
            raise ValueError("the development issuer needs an EC P-256 private key")
        self._key = key
        self.issuer = issuer
        self.kid: str = tokens.get("kid") or key.thumbprint()

    @classmethod
    def load_or_create(cls, path: Path, issuer: str = "kiban-dev") -> DevIssuer:
        """The issuer whose key is in `path`, creating the key (mode 0600, directory 0700) on
        first use. Concurrent first uses agree on one key."""
        path = Path(path)
        if not path.exists():
            _create_exclusively(path, generate_es256_key())
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            key = import_private_jwk(raw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"cannot load the development issuer key from {path} ({type(exc).__name__})"
            ) from None
        return cls(key, issuer)

    def jwks(self) -> dict[str, Any]:
        """The public key set to give verifiers (no private members)."""
        public = self._key.as_dict(is_private=False)
        public.update(kid=self.kid, alg="ES256", use="sig")
        return {"keys": [public]}

    def write_jwks(self, path: Path) -> None:
        """Write `jwks()` atomically, so a `FileKeySource` never reads half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.jwks(), indent=2, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # public keys
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def key_source(self) -> StaticKeySource:
        return StaticKeySource(self.jwks())

    def mint(
        self,
        subject: str,
        scopes: Sequence[str],
        claims: Mapping[str, Any] | None = None,
        ttl_seconds: int = 3600,
        now: datetime | None = None,
    ) -> str:
        """A signed token for `subject`. `claims` adds more claims (e.g. `aud`, a patient's
        profile); it may not override the ones this method sets."""
        extra = dict(claims or {})
        clash = _RESERVED_CLAIMS.intersection(extra)
        if clash:
            raise ValueError(f"claims {sorted(clash)} are set by mint itself")
        if isinstance(scopes, str):
            raise TypeError("scopes must be a sequence of scope names, not one string")
        issued = now if now is not None else datetime.now(UTC)
        if issued.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        iat = int(issued.timestamp())
        payload = {
            **extra,
            "iss": self.issuer,
            "sub": subject,
            "iat": iat,
            "exp": iat + ttl_seconds,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
        }
        header = {"alg": "ES256", "kid": self.kid, "typ": "JWT"}
        token: bytes = JWT.encode(header, payload, self._key, check=False)
        return token.decode("ascii")

    def __repr__(self) -> str:
        return f"DevIssuer(issuer={self.issuer!r}, kid={self.kid!r})"


def _create_exclusively(path: Path, key: Jwk) -> None:
    """Write the key to a private temp file, then hard-link it into place: the file appears
    complete or not at all, and a concurrent creator's key wins without being overwritten."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(key.as_dict(is_private=True), sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
