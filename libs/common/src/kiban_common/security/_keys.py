"""Where verification keys come from: a JWKS given inline, in a file, or at a URL.

A key source only ever holds public signing keys: symmetric and encryption entries of a JWKS are
ignored and private members are dropped on import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from kiban_common.security._errors import AuthenticationError
from kiban_common.security._jose import Jwk, import_public_jwk

_log = logging.getLogger(__name__)


class KeySource(ABC):
    """Finds the key a token names in its `kid` header."""

    @abstractmethod
    async def find(self, kid: str | None) -> Jwk:
        """The key with id `kid` (the only key when `kid` is None and the set holds one).

        Raises `AuthenticationError("unknown_key")`, or `"keys_unavailable"` when no key set
        could be loaded at all.
        """


class _KeyIndex:
    def __init__(self, keys: list[Jwk]) -> None:
        self._keys = keys
        self._by_kid: dict[str, Jwk] = {}
        for key in keys:
            kid = key.kid
            if isinstance(kid, str):
                self._by_kid.setdefault(kid, key)

    def get(self, kid: str | None) -> Jwk | None:
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return self._by_kid.get(kid)

    def __len__(self) -> int:
        return len(self._keys)


def _parse_jwks(document: Any) -> _KeyIndex:
    """Raises ValueError when `document` is not a JWKS (`{"keys": [...]}`)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS must be an object with a "keys" list')
    keys: list[Jwk] = []
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            raise ValueError("a JWKS entry must be an object")
        key = import_public_jwk(entry)
        if key is not None:
            keys.append(key)
    return _KeyIndex(keys)


def _unknown() -> AuthenticationError:
    return AuthenticationError("unknown_key", "the token is signed with a key that is not known")


def _unavailable() -> AuthenticationError:
    return AuthenticationError("keys_unavailable", "verification keys are not available")


class StaticKeySource(KeySource):
    """A JWKS given as a dict (tests, or keys baked into configuration)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._index = _parse_jwks(jwks)

    async def find(self, kid: str | None) -> Jwk:
        key = self._index.get(kid)
        if key is None:
            raise _unknown()
        return key


class FileKeySource(KeySource):
    """A JWKS file, read again whenever its modification time or size changes (the
    development issuer rewrites it; a mounted secret is replaced in place).

    A file that cannot be read or parsed keeps the keys read before, if any.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._index: _KeyIndex | None = None
        self._signature: tuple[int, int] | None = None
        self._failing = False

    async def find(self, kid: str | None) -> Jwk:
        self._reload_if_changed()
        if self._index is None:
            raise _unavailable()
        key = self._index.get(kid)
        if key is None:
            raise _unknown()
        return key

    def _reload_if_changed(self) -> None:
        # A stat per verification; small enough to do inline rather than in a thread.
        try:
            stat = self._path.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._signature:
                return
            index = _parse_jwks(json.loads(self._path.read_bytes()))
        except (OSError, ValueError) as exc:
            if not self._failing:  # once per outage, not once per request
                _log.warning("cannot read the JWKS file %s (%s)", self._path, type(exc).__name__)
            self._failing = True
            return
        self._index, self._signature, self._failing = index, signature, False


class UrlKeySource(KeySource):
    """A JWKS fetched over HTTP and cached for `cache_seconds`.

    A token naming an unknown `kid` triggers one early refetch (the issuer may have rotated),
    but fetches never happen more often than every `min_refetch_seconds`, so tokens with made-up
    key ids cannot make the service hammer the issuer. When a fetch fails the previous keys stay
    in use.
    """

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        cache_seconds: float = 300,
        *,
        min_refetch_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._cache_seconds = cache_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._index: _KeyIndex | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()

    async def find(self, kid: str | None) -> Jwk:
        if self._index is None or self._clock() - self._fetched_at >= self._cache_seconds:
            await self._refresh()
        if self._index is None:
            raise _unavailable()
        key = self._index.get(kid)
        if key is None:
            await self._refresh()
            key = self._index.get(kid)
        if key is None:
            raise _unknown()
        return key

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_refetch:
                return  # fetched (or failed) just now, possibly by a concurrent caller
            self._attempted_at = now
            try:
                response = await self._http.get(self._url, headers={"Accept": "application/json"})
                response.raise_for_status()
                index = _parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                _log.warning("cannot fetch the JWKS from %s (%s)", self._url, type(exc).__name__)
                return
            self._index, self._fetched_at = index, now
