from __future__ import annotations

import pytest

from kiban_common.events import Zone
from kiban_common.settings import KibanSettings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KIBAN_") and not name.startswith("KIBAN_TEST_"):
            monkeypatch.delenv(name)


def test_settings_come_from_kiban_variables_nested_with_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KIBAN_ZONE", "core")
    monkeypatch.setenv("KIBAN_DATABASE_URL", "postgresql://u@db/intake")
    monkeypatch.setenv("KIBAN_KAFKA_BOOTSTRAP", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("KIBAN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KIBAN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KIBAN_KAFKA__SASL_USERNAME", "intake")
    monkeypatch.setenv("KIBAN_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("KIBAN_HTTP__PORT", "9000")
    settings = load_settings(KibanSettings)
    assert settings.zone is Zone.CORE
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.http.port == 9000
    assert "hunter2" not in repr(settings)


def test_missing_database_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBAN_ZONE", "core")
    monkeypatch.setenv("KIBAN_BUS", "memory")
    with pytest.raises(SettingsError, match="KIBAN_DATABASE_URL: Field required"):
        load_settings(KibanSettings)


def test_wrong_value_names_the_variable_but_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBAN_ZONE", "core")
    monkeypatch.setenv("KIBAN_BUS", "memory")
    monkeypatch.setenv("KIBAN_DATABASE_URL", "mysql://secret-password@db/x")
    with pytest.raises(SettingsError) as raised:
        load_settings(KibanSettings)
    assert "KIBAN_DATABASE_URL" in str(raised.value)
    assert "secret-password" not in str(raised.value)


def test_kafka_bus_without_bootstrap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBAN_ZONE", "information")
    monkeypatch.setenv("KIBAN_DATABASE_URL", "sqlite:///x.db")
    with pytest.raises(SettingsError, match="KIBAN_KAFKA_BOOTSTRAP is required"):
        load_settings(KibanSettings)


def test_misspelt_variable_is_refused_instead_of_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBAN_DATABSE_URL", "sqlite:///x.db")
    with pytest.raises(SettingsError, match="KIBAN_DATABSE_URL"):
        load_settings(KibanSettings, zone="core", bus="memory", database_url="sqlite:///y.db")


def test_sasl_without_credentials_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIBAN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="KIBAN_KAFKA__SASL_USERNAME"):
        load_settings(
            KibanSettings, zone="core", database_url="sqlite:///y.db", kafka_bootstrap="k:9092"
        )
