"""What the linkage service's routes, handlers and loops share (`runtime.context`): keys, the
match model in force, a cache of normalized identities and the clock."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.crypto import BlindIndex, FieldCipher
from kiban_common.service import freeze_heap
from kiban_linkage.domain.matching import (
    MatchModel,
    Normalized,
    blocking_keys,
    identity_from_mapping,
    normalize,
)
from kiban_linkage.replica import VAULT_IDENTITY as VAULT_IDENTITY
from kiban_linkage.replica import Replica
from kiban_linkage.settings import LinkageOptions
from kiban_linkage.store import vault

# Contexts bind each token or digest to its use, so none can be replayed in another field
# (`VAULT_IDENTITY`, the vault's, comes from `replica`, which opens vault tokens too).
BLOCK_SUBJECT = "kiban.linkage.block-entry/subject"
REVIEW_SUBJECT = "kiban.linkage.optout-review/subject"
BLOCKING = "kiban.linkage.blocking"  # records and opt-out subjects share it, so they meet
PSEUDONYM = "kiban.linkage.pseudonym"
RESOURCE_ID = "kiban.linkage.resource-id"
RECORD_RECEIVED_IDENTITY = "kiban.intake.record-received.v1/identity"
RECORD_RECEIVED_RESOURCES = "kiban.intake.record-received.v1/resources"
OPTOUT_SUBJECT = "kiban.optout.optout-requested.v1/subject"
PATIENT_KEY = "kiban.patient-key"


def utcnow() -> datetime:
    return datetime.now(UTC)


log = logging.getLogger("kiban.linkage")


def _cache_key(token: str) -> bytes:
    # A 128-bit hash of the token instead of the token (~0.5 KB) itself: a million entries
    # then hold ~50 MB of keys instead of ~0.5 GB.
    return hashlib.blake2b(token.encode("ascii"), digest_size=16).digest()


class NormalizedCache:
    """Normalized identities by token (first in, first out): block-entry subjects and the
    vault records an opt-out is scored against. A token is unique per encryption (random
    nonce), so an entry can never describe another record or an older identity. Linking does
    not use it: it scores on the match index (`replica`)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[bytes, Normalized] = OrderedDict()

    @property
    def size(self) -> int:
        return self._size

    def get(self, token: str) -> Normalized | None:
        return self._items.get(_cache_key(token))

    def put(self, token: str, value: Normalized) -> None:
        if self._size <= 0:
            return
        self._items[_cache_key(token)] = value
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, tokens: Iterable[str]) -> None:
        for token in tokens:
            self._items.pop(_cache_key(token), None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Linkage:
    options: LinkageOptions
    cipher: FieldCipher
    index: BlindIndex
    pseudonym_index: BlindIndex
    model: MatchModel
    model_id: int | None = None
    clock: Callable[[], datetime] = utcnow
    cache: NormalizedCache = field(default_factory=lambda: NormalizedCache(0))
    replica: Replica = field(default_factory=Replica)  # the match index in memory
    unseal: Callable[[str, str], bytes] | None = None  # (token, context) -> plaintext
    model_records: int = 0  # vault size the model in force was fitted on
    gc_freeze: bool = True  # KIBAN_GC_FREEZE
    _model_loaded: bool = False

    async def ensure_model(self, conn: AsyncConnection) -> None:
        """Load the newest persisted model once (the context is built before the database is
        open, so it starts from `MatchModel.default()`)."""
        if self._model_loaded:
            return
        row = await vault.latest_model(conn)
        if row is not None and row["id"] != self.model_id:
            self.use_model(model_from_json(row["params"]), row["id"], row["records"])
        self._model_loaded = True

    def use_model(self, model: MatchModel, model_id: int | None, records: int) -> None:
        self.model, self.model_id, self.model_records = model, model_id, records

    def freeze(self) -> None:
        """After loading the index (`replica.load_index`) and after a new match model: the
        index's key table and vocabularies and the model live for the whole process, and left
        in the collector's generations every full collection would walk them again (millions
        of objects at a 1M-record index: in the engine bench such collections landed in the
        measured window and moved a run between ~4,800 and ~7,300 records/s).
        `kiban_common.service.freeze_heap`, unless `KIBAN_GC_FREEZE` is off."""
        if self.gc_freeze:
            freeze_heap()

    def pseudonym(self, person_key: str) -> str:
        return _pseudonym(self.pseudonym_index, person_key)

    def resource_id(self, institution_code: str, kind: str, local_id: str) -> str:
        return self.index.digest(f"{institution_code}/{kind}/{local_id}", context=RESOURCE_ID)[:32]

    def digests(self, normalized: Normalized) -> list[str]:
        keys = sorted(set(blocking_keys(normalized)))
        return [self.index.digest(k, context=BLOCKING) for k in keys]

    def patient_key(self, institution_code: str, patient_id: str) -> str:
        return self.index.digest(f"{institution_code}/{patient_id}", context=PATIENT_KEY)

    @property
    def link_threshold(self) -> float:
        return float(self.model.link_threshold)

    @property
    def possible_threshold(self) -> float:
        return float(self.model.possible_threshold)

    @property
    def strict_threshold(self) -> float:
        return max(self.options.optout_threshold, self.link_threshold)

    # Vault tokens ---------------------------------------------------------------------------

    def seal_identity(self, identity: dict[str, Any]) -> str:
        return self.cipher.encrypt_json(identity, context=VAULT_IDENTITY)

    def open_identity(self, token: str) -> dict[str, Any]:
        return self.cipher.decrypt_json(token, context=VAULT_IDENTITY)

    def normalized(self, token: str, *, context: str = VAULT_IDENTITY) -> Normalized:
        """The normalized identity behind a vault (or block-entry) token, cached."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        value = normalize(identity_from_mapping(self.cipher.decrypt_json(token, context=context)))
        self.cache.put(token, value)
        return value


@lru_cache(maxsize=65536)
def _pseudonym(index: BlindIndex, person_key: str) -> str:
    return index.digest(person_key, context=PSEUDONYM)


def model_from_json(text: str) -> MatchModel:
    return MatchModel.from_dict(json.loads(text))


def model_to_json(model: MatchModel) -> str:
    return json.dumps(model.to_dict(), ensure_ascii=False, sort_keys=True)
