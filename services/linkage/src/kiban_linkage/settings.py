"""Settings of the linkage service: the common settings with this service's zone and port, and
the linkage options (`KIBAN_LINKAGE__*`)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8103


class LinkageOptions(BaseModel):
    """How records are linked, opt-outs matched and the model refitted."""

    # Key of the person pseudonym (base64, >= 32 bytes). Unset: the blind-index key under the
    # context `kiban.linkage.pseudonym`, which no other digest uses.
    pseudonym_key: SecretStr | None = None
    # An opt-out subject matches a person only at or above this probability (never below the
    # model's link threshold); between the model's "possible" threshold and this one it goes
    # to operator review.
    optout_threshold: float = Field(default=0.999, gt=0, le=1)
    # Candidate records scored per incoming record (the blocking keys' union, capped).
    max_candidates: int = Field(default=500, ge=1, le=100_000)
    # A blocking key shared by more vault records than this is ignored (a placeholder birth
    # date, a name written 不明 everywhere): it would only add comparisons.
    max_block: int = Field(default=2000, ge=1)
    # Decrypted, normalized identities kept in memory by token for opt-out matching and block
    # entries (linking scores on the match index in memory, which always holds the whole
    # vault).
    cache_size: int = Field(default=20_000, ge=0)
    # Rows of the vault's change feed kept for replicas to catch up from; once it is twice
    # this long, the oldest are pruned (a replica that fell behind them reloads the vault).
    change_retention: int = Field(default=1_000_000, ge=1_000)
    # The background refit: every `refit_interval_seconds`, refit the model by EM on (a
    # sample of) the vault when it holds at least `refit_min_records` records and grew by
    # `refit_growth` (a fraction) since the last fit.
    refit_interval_seconds: float = Field(default=3600, gt=0)
    refit_min_records: int = Field(default=1000, ge=2)
    refit_growth: float = Field(default=0.25, ge=0)
    refit_sample: int = Field(default=200_000, ge=2)


class LinkageSettings(KibanSettings):
    zone: Zone = Zone.CORE
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    linkage: LinkageOptions = Field(default_factory=LinkageOptions)
