"""Settings from `KIBAN_*` environment variables (pydantic-settings)."""

from kiban_common.settings._loading import SettingsError, load_settings
from kiban_common.settings._models import (
    AuthSettings,
    ConsumerSettings,
    CryptoSettings,
    DatabasePoolSettings,
    HoursWindow,
    HttpSettings,
    KafkaSettings,
    KibanSettings,
    LimitSettings,
    MonitorSettings,
    OutboxSettings,
    ReadCeiling,
    TelemetrySettings,
    ZoneGuardSettings,
)

__all__ = [
    "AuthSettings",
    "ConsumerSettings",
    "CryptoSettings",
    "DatabasePoolSettings",
    "HoursWindow",
    "HttpSettings",
    "KafkaSettings",
    "KibanSettings",
    "LimitSettings",
    "MonitorSettings",
    "OutboxSettings",
    "ReadCeiling",
    "SettingsError",
    "TelemetrySettings",
    "ZoneGuardSettings",
    "load_settings",
]
