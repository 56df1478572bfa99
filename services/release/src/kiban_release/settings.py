"""Settings of the release service: the common settings with this service's zone and port, plus
delivery rules (`KIBAN_RELEASE__*`) and the fee tariff (`KIBAN_TARIFF__*`)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8106
# `files_dir` not given: the validator derives it (typed Any so the field stays a `Path`).
_UNSET: Any = None


class DeliverySettings(BaseModel):
    """How a ready release is delivered and for how long."""

    # Downloads of one file by its recipient; the next one is refused (403 download_limit_reached).
    download_limit: int = Field(default=5, ge=1, le=1000)
    # A release expires this many days after it became ready.
    expiry_days: int = Field(default=90, ge=1, le=3650)
    # How often the background sweep looks for releases past their expiry.
    sweep_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # Where the anonymizer writes dataset files (convention 7); a `file://` uri outside it is
    # refused. Wins over `KIBAN_FILES_DIR` when both are set; default: `<state_dir>/files`,
    # the anonymizer's own default.
    files_dir: Path | None = None
    # Ed25519 private key (PKCS#8 PEM) that signs release manifests. Unset: one is generated
    # once under `<state_dir>/release-signing-key.pem` (the embedded default; production mounts
    # a key from a secret).
    signing_key_file: Path | None = None
    # Bytes read per chunk when streaming a file.
    chunk_bytes: int = Field(default=256 * 1024, ge=4096, le=16 * 1024 * 1024)


class TariffSettings(BaseModel):
    """Cost-recovery fee schedule in yen (rule 22), tax excluded."""

    base_fee_yen: int = Field(default=150_000, ge=0)
    # Per data row delivered (all files of the release); the data fee is rounded up to the yen.
    data_fee_per_row_yen: Decimal = Field(default=Decimal("2"), ge=0)
    # The analysis environment (secure delivery, access control, download log) per release.
    environment_fee_yen: int = Field(default=50_000, ge=0)
    # Consumption tax shown on the statement, in percent.
    tax_percent: Decimal = Field(default=Decimal("10"), ge=0, le=100)


class ReleaseSettings(KibanSettings):
    zone: Zone = Zone.INFORMATION
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    release: DeliverySettings = Field(default_factory=DeliverySettings)
    tariff: TariffSettings = Field(default_factory=TariffSettings)
    # The shared file store, resolved: `KIBAN_RELEASE__FILES_DIR`, else `KIBAN_FILES_DIR` (the
    # variable the anonymizer reads and the Helm chart sets on both), else `<state_dir>/files`.
    # Declared after `release` so the validator can see it.
    files_dir: Path = Field(default_factory=lambda: _UNSET)

    @field_validator("files_dir", mode="before")
    @classmethod
    def _resolve_files_dir(cls, value: object, info: ValidationInfo) -> Path:
        delivery = info.data.get("release")
        if isinstance(delivery, DeliverySettings) and delivery.files_dir is not None:
            return delivery.files_dir.resolve()
        if value is not None:
            return Path(str(value)).resolve()
        state = info.data.get("state_dir")
        return ((Path(str(state)) if state is not None else Path(".kiban")) / "files").resolve()

    @property
    def signing_key_path(self) -> Path:
        return self.release.signing_key_file or self.state_dir / "release-signing-key.pem"
