"""Settings of the anonymizer service: the common settings with this service's zone and port."""

from __future__ import annotations

from pydantic import Field

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8104


class AnonymizerSettings(KibanSettings):
    zone: Zone = Zone.CORE
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
