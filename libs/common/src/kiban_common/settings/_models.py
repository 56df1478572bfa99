"""Kiban's settings, read from `KIBAN_*` environment variables (nested with `__`).

Flat names in CONTRACT.md stay flat (`KIBAN_DATABASE_URL`, `KIBAN_KAFKA_BOOTSTRAP`); groups of
options are nested models (`KIBAN_KAFKA__SECURITY_PROTOCOL`, `KIBAN_AUTH__ISSUER`, ...).
Settings are built once in a service's `main.py`, never at import time.
"""

from __future__ import annotations

import json
from datetime import time
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kiban_common.events import Zone

_DB_SCHEMES = ("postgresql", "postgresql+asyncpg", "sqlite", "sqlite+aiosqlite")


class KafkaSettings(BaseModel):
    """Client options for the broker (the bootstrap address is `KIBAN_KAFKA_BOOTSTRAP`)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    client_id: str | None = None
    topic_partitions: int = Field(default=3, ge=1, le=1000)
    topic_replication_factor: int = Field(default=1, ge=1, le=10)
    create_topics: bool = True
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    # How long the broker may hold a consumer's fetch that found nothing new (aiokafka's default
    # is 500 ms, which put a 500 ms tail on delivery: records for a partition left out of the
    # pending fetch wait for it to return). At 50 ms an idle consumer sends 20 small fetches/s.
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "SASL needs KIBAN_KAFKA__SASL_MECHANISM, KIBAN_KAFKA__SASL_USERNAME and "
                "KIBAN_KAFKA__SASL_PASSWORD"
            )
        return self


class ConsumerSettings(BaseModel):
    """How the consumer runner retries an event before it goes to the dead-letter topic."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_initial_ms: int = Field(default=100, ge=0)
    backoff_max_ms: int = Field(default=10_000, ge=0)
    batch_size: int = Field(default=500, ge=1, le=10_000)


class OutboxSettings(BaseModel):
    batch_size: int = Field(default=500, ge=1, le=10_000)
    poll_interval_ms: int = Field(default=200, ge=1)


class AuthSettings(BaseModel):
    """Where bearer tokens come from. One of `jwks_url` / `jwks_file` is needed to serve."""

    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    # A verified token is remembered (by its exact bytes) for this long, never past its `exp`,
    # so a client reusing its token costs one signature check per period, not per call. A key
    # removed from the JWKS stops being honoured after at most this delay. 0 = verify each call.
    verified_cache_seconds: int = Field(default=60, ge=0, le=3600)

    @field_validator("jwks_url")
    @classmethod
    def _https_or_loopback(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("https://", "http://127.", "http://localhost")
        ):
            raise ValueError("must be an https:// URL (or http on loopback)")
        return value


class CryptoSettings(BaseModel):
    """Field-encryption keys (AES-256, base64) by key id, and the blind-index key.

    Either inline (`KIBAN_CRYPTO__KEYS='{"k1": "<base64>"}'`) or a JSON file mounted from a
    secret (`KIBAN_CRYPTO__KEYS_FILE`) holding `keys`, `active_key_id` and `index_key`.
    """

    keys: dict[str, SecretStr] = Field(default_factory=dict)
    active_key_id: str | None = None
    index_key: SecretStr | None = None
    keys_file: Path | None = None
    # Sealing to the core zone (X25519 PEM files): the information zone holds only the
    # public key, so it can seal identity it can never read back; core services hold both.
    sealing_public_key_file: Path | None = None
    sealing_private_key_file: Path | None = None

    @model_validator(mode="after")
    def _load_file(self) -> CryptoSettings:
        if self.keys_file is None:
            return self
        try:
            raw: dict[str, Any] = json.loads(self.keys_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the key file: {type(exc).__name__}") from None
        self.keys = {**{k: SecretStr(v) for k, v in raw.get("keys", {}).items()}, **self.keys}
        self.active_key_id = self.active_key_id or raw.get("active_key_id")
        if self.index_key is None and raw.get("index_key"):
            self.index_key = SecretStr(raw["index_key"])
        return self

    @property
    def configured(self) -> bool:
        return bool(self.keys and self.active_key_id and self.index_key)


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)


class ZoneGuardSettings(BaseModel):
    """Networks a core-zone service accepts callers from (the information zone is open)."""

    allowed_networks: list[IPv4Network | IPv6Network] = Field(default_factory=lambda: _loopback())


def _loopback() -> list[IPv4Network | IPv6Network]:
    return [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_ALL_DAYS: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class HoursWindow(BaseModel):
    """When a kind of principal may call (e.g. an institution's nightly batch window). `end`
    before `start` spans midnight."""

    days: list[Day] = Field(default_factory=lambda: list(_ALL_DAYS))
    start: time = time(0, 0)
    end: time = time(23, 59, 59)
    timezone: str = "Asia/Tokyo"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a known IANA time zone") from None
        return value


class ReadCeiling(BaseModel):
    limit: int = Field(ge=1)
    window_seconds: int = Field(ge=1)


class MonitorSettings(BaseModel):
    """The access monitor's policy: a breach blocks the principal at once (shared through the
    database) until an operator lifts it with a reason.

    `networks`: principal pattern (`institution:*`, `operator:alice`) → source networks it may
    call from. `hours`: principal kind → allowed window. `read_ceilings`: principal kind → most
    reads (GET) per window. `kinds`: principal kinds this service serves (default: the zone's);
    any other kind is an unknown-principal or disallowed-zone attempt."""

    enabled: bool = True
    networks: dict[str, list[IPv4Network | IPv6Network]] = Field(default_factory=dict)
    hours: dict[str, HoursWindow] = Field(default_factory=dict)
    read_ceilings: dict[str, ReadCeiling] = Field(default_factory=dict)
    kinds: list[str] | None = None
    # How old this replica's copy of the active blocks may get. A block raised here applies at
    # once; one raised by another replica within this delay. 0 = ask the database every call.
    blocks_refresh_seconds: float = Field(default=1.0, ge=0, le=60)


class DatabasePoolSettings(BaseModel):
    """The PostgreSQL connection pool of one process (SQLite opens a connection per use).
    `pre_ping` tests each connection with a round trip before use: safer right after a
    database failover, but it doubles the round trips of short transactions; without it a
    connection found dead fails that one unit of work (retried by consumers, a 500 for HTTP)
    and is replaced. No overflow by default: an overflow connection is closed as soon as it is
    returned, so a pool that overflows under steady load opens and closes connections all the
    time (the intake bench saw five new PostgreSQL sessions a second, each re-preparing its
    statements); with a fixed pool a request beyond `size` waits for a connection instead."""

    size: int = Field(default=20, ge=1, le=200)
    max_overflow: int = Field(default=0, ge=0, le=200)
    pre_ping: bool = False


class LimitSettings(BaseModel):
    """Per-principal request rate (token bucket per replica; the caller is keyed by its bearer
    token, or its address without one). 0 turns it off."""

    requests_per_second: float = Field(default=100.0, ge=0)
    burst: int = Field(default=200, ge=1)


class TelemetrySettings(BaseModel):
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None

    @model_validator(mode="after")
    def _endpoint_for_otlp(self) -> TelemetrySettings:
        if self.exporter == "otlp" and not self.otlp_endpoint:
            raise ValueError("KIBAN_TELEMETRY__OTLP_ENDPOINT is needed with exporter 'otlp'")
        return self


class KibanSettings(BaseSettings):
    """Settings every service reads. A service subclasses it to set its own defaults."""

    model_config = SettingsConfigDict(
        env_prefix="KIBAN_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    zone: Zone
    database_url: str
    db_pool: DatabasePoolSettings = Field(default_factory=DatabasePoolSettings)
    bus: Literal["kafka", "memory"] = "kafka"
    kafka_bootstrap: str | None = None
    migrate_on_start: bool = False
    state_dir: Path = Path(".kiban")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    zone_guard: ZoneGuardSettings = Field(default_factory=ZoneGuardSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    # Once started, move every object then alive (modules, FHIR and pydantic schemas, the app)
    # out of the garbage collector's generations (`gc.freeze`): a full collection then scans
    # only what requests allocate. It had run inside requests, a third of p99 in the intake bench.
    gc_freeze: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in _DB_SCHEMES:
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in _DB_SCHEMES)}")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for hostport in value.split(","):
            host, _, port = hostport.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port...]")
        return value

    @model_validator(mode="after")
    def _bus_has_broker(self) -> KibanSettings:
        if self.bus == "kafka" and not self.kafka_bootstrap:
            raise ValueError("KIBAN_KAFKA_BOOTSTRAP is required when KIBAN_BUS is 'kafka'")
        return self
