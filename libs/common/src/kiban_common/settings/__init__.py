"""Settings from `KIBAN_*` environment variables (pydantic-settings)."""

from kiban_common.settings._loading import SettingsError, load_settings
from kiban_common.settings._models import (
    AuthSettings,
    ConsumerSettings,
    CryptoSettings,
    HttpSettings,
    KafkaSettings,
    KibanSettings,
    OutboxSettings,
    TelemetrySettings,
    ZoneGuardSettings,
)

__all__ = [
    "AuthSettings",
    "ConsumerSettings",
    "CryptoSettings",
    "HttpSettings",
    "KafkaSettings",
    "KibanSettings",
    "OutboxSettings",
    "SettingsError",
    "TelemetrySettings",
    "ZoneGuardSettings",
    "load_settings",
]
