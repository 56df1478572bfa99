"""The embedded default's state directory (`./.kiban/`): SQLite files, the development token
issuer and development field keys, created on first use and kept between runs."""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from kiban_common.crypto import SealingKeyPair
from kiban_common.events import Zone
from kiban_common.security import DevIssuer
from kiban_common.settings import AuthSettings, CryptoSettings, HttpSettings

DEV_ISSUER = "kiban-dev"


def state_dir() -> Path:
    return Path(os.environ.get("KIBAN_STATE_DIR", ".kiban"))


def dev_issuer(state: Path) -> DevIssuer:
    issuer = DevIssuer.load_or_create(state / "dev-issuer.jwk", issuer=DEV_ISSUER)
    issuer.write_jwks(state / "dev-jwks.json")
    return issuer


def dev_crypto(state: Path, zone: Zone | None = None) -> CryptoSettings:
    """Development keys. Core services get the sealing private key, the information zone only
    the public one (as in production, where the private key never reaches that zone)."""
    public, private = _dev_sealing(state)
    path = state / "dev-keys.json"
    if not path.exists():
        state.mkdir(parents=True, exist_ok=True)
        material = {
            "keys": {"dev1": base64.b64encode(secrets.token_bytes(32)).decode()},
            "active_key_id": "dev1",
            "index_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(material, f)
    return CryptoSettings(
        keys_file=path,
        sealing_public_key_file=public,
        sealing_private_key_file=private if zone is Zone.CORE else None,
    )


def _dev_sealing(state: Path) -> tuple[Path, Path]:
    private, public = state / "dev-sealing.pem", state / "dev-sealing.pub.pem"
    if not private.exists():
        state.mkdir(parents=True, exist_ok=True)
        pair = SealingKeyPair.generate()
        try:
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return public, private
        with os.fdopen(fd, "wb") as f:
            f.write(pair.private_pem())
        public.write_bytes(pair.public_pem())
    return public, private


def dev_overrides(
    state: Path, name: str, port: int, host: str, zone: Zone | None = None
) -> dict[str, Any]:
    """Settings that make one service run embedded: SQLite under `state`, in-process bus,
    migrations on start, tokens from the development issuer."""
    dev_issuer(state)
    return {
        "database_url": f"sqlite:///{state.resolve()}/{name}.db",
        "bus": "memory",
        "migrate_on_start": True,
        "state_dir": state,
        "auth": AuthSettings(issuer=DEV_ISSUER, jwks_file=state / "dev-jwks.json"),
        "crypto": dev_crypto(state, zone),
        "http": HttpSettings(host=host, port=port),
    }


__all__ = ["dev_crypto", "dev_issuer", "dev_overrides", "state_dir"]
