"""What the release service's routes, handlers and sweep share: settings, clock, signer, tariff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from kiban_release.domain.manifest import ManifestSigner
from kiban_release.domain.tariff import Tariff
from kiban_release.keys import load_signing_key
from kiban_release.settings import ReleaseSettings

SOURCE = "/kiban/release"


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class ReleaseContext:
    settings: ReleaseSettings
    clock: Clock
    signer: ManifestSigner
    tariff: Tariff

    @property
    def files_dir(self) -> Path:
        return self.settings.files_dir


def build_context(settings: ReleaseSettings, clock: Clock | None = None) -> ReleaseContext:
    key = load_signing_key(
        settings.signing_key_path, generate=settings.release.signing_key_file is None
    )
    t = settings.tariff
    return ReleaseContext(
        settings=settings,
        clock=clock or SystemClock(),
        signer=ManifestSigner(key),
        tariff=Tariff(
            base_fee_yen=t.base_fee_yen,
            data_fee_per_row_yen=t.data_fee_per_row_yen,
            environment_fee_yen=t.environment_fee_yen,
            tax_percent=t.tax_percent,
        ),
    )
