"""Fixtures of the anonymizer tests; helpers and synthetic data are in `anonymizer_kit`."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiban_anonymizer.main import create_app
from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_testing import running_service
from kiban_testing.services import RunningService

sys.path.insert(0, str(Path(__file__).parent))  # anonymizer_kit beside this file

from anonymizer_kit import Peer, settings_for


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def peer(broker: MemoryBroker) -> Peer:
    return Peer(MemoryTransport(broker))


@pytest.fixture
async def service(tmp_path: Path, broker: MemoryBroker) -> AsyncIterator[RunningService]:
    async with running_service(create_app, settings_for(tmp_path), broker=broker) as svc:
        yield svc
