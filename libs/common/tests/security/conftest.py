from __future__ import annotations

from pathlib import Path

import pytest

from kiban_common.security import DevIssuer, TokenVerifier

ISSUER = "kiban-dev"


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer.load_or_create(tmp_path / "state" / "dev-issuer.jwk", issuer=ISSUER)


@pytest.fixture
def verifier(issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, key_source=issuer.key_source())
