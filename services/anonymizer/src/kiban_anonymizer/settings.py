"""Settings of the anonymizer service: the common settings with this service's zone and port,
where dataset files go, and how builds process data (`KIBAN_BUILD__*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8104


class BuildSettings(BaseModel):
    """How datasets are built."""

    # Anonymized dates: "generalize" renders every date of a person at the granularity the
    # engine chose for their first diagnosis (month, year, 5-year span, or removed); "shift"
    # moves every date of a person by one random offset in [-shift_days, shift_days], keeping
    # intervals within the person exact.
    date_mode: Literal["generalize", "shift"] = "generalize"
    date_shift_days: int = Field(default=182, ge=1, le=3650)
    suppression_limit: float = Field(default=0.02, ge=0.0, le=1.0)
    method: Literal["auto", "optimal", "local"] = "auto"
    # records whose prosecutor risk (1 / class size) exceeds this are reported as "at risk"
    risk_threshold: float = Field(default=0.2, gt=0.0, le=1.0)
    poll_interval_ms: int = Field(default=500, ge=10)
    # a running build whose worker has not heart-beaten for this long is taken over and retried
    lease_seconds: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    # a build rebuilt this many times because purges kept hitting its cohort fails instead
    max_purge_reruns: int = Field(default=5, ge=0, le=100)


class AnonymizerSettings(KibanSettings):
    zone: Zone = Zone.CORE
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    # where dataset files are written, `<files_dir>/<release_id>/<name>` (default
    # `<state_dir>/files`)
    files_dir: Path | None = None
    build: BuildSettings = Field(default_factory=BuildSettings)

    @property
    def dataset_dir(self) -> Path:
        return (self.files_dir or self.state_dir / "files").resolve()
