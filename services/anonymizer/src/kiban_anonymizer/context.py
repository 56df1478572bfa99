"""The anonymizer's own objects, built once per runtime and shared by routes, handlers and the
build worker (`runtime.context`)."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiban_anonymizer.settings import AnonymizerSettings

STABLE_ID_CONTEXT = "kiban.anonymizer.release-person"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AnonymizerContext:
    settings: AnonymizerSettings
    files_dir: Path
    stable_id: Callable[[str, str], str]  # (application id, pseudonym) → person id
    worker_id: str = field(default_factory=lambda: f"w-{secrets.token_hex(6)}")
    clock: Callable[[], datetime] = _now
    rng: random.Random = field(default_factory=random.SystemRandom)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Test seam: awaited after a build took its snapshot, before it processes it.
    after_snapshot: Callable[[str], Awaitable[None]] | None = None


def build_context(runtime: Any) -> AnonymizerContext:
    settings: AnonymizerSettings = runtime.settings

    def stable_id(application_id: str, pseudonym: str) -> str:
        digest: str = runtime.crypto.index.digest(
            f"{application_id}/{pseudonym}", context=STABLE_ID_CONTEXT
        )
        return digest[:32]

    return AnonymizerContext(settings=settings, files_dir=settings.dataset_dir, stable_id=stable_id)
