"""The background refit: EM on the vault once it has grown, persisted, and used after a restart;
the index load at start (the vault into the match index in memory, then `gc.freeze()`)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_common.events import RECORD_LINKED
from kiban_linkage.main import create_app
from kiban_linkage.refit import refit_once
from kiban_linkage.settings import LinkageOptions, LinkageSettings
from kiban_testing import embedded_settings, eventually, running_service

if TYPE_CHECKING:
    from conftest import Linked

FAMILY = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
]
GIVEN = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("健", "ケン"),
    ("美咲", "ミサキ"),
    ("翔", "ショウ"),
    ("陽菜", "ヒナ"),
    ("大輔", "ダイスケ"),
    ("結衣", "ユイ"),
]


@pytest.fixture
def people(people_of: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """`n` synthetic identities without addresses (conftest's `synthetic_people`)."""

    def make(n: int, seed: int = 7) -> list[dict[str, Any]]:
        return people_of(n, seed=seed, family=FAMILY, given=GIVEN, addresses=False)

    return make


async def test_refit_estimates_the_model_from_the_vault_and_a_restart_uses_it(
    tmp_path: Path, harness: type[Linked], people: Callable[..., list[dict[str, Any]]]
) -> None:
    options = LinkageOptions(refit_min_records=40, refit_interval_seconds=3600)
    settings = embedded_settings(LinkageSettings, tmp_path, linkage=options)
    base = people(60)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        linked = harness(svc, broker=None)
        for identity in base:
            await linked.receive(identity)
        # the same people again at a second institution, some with a new postal code
        for i, identity in enumerate(base[:30]):
            again = {**identity, "institution_patient_id": f"F-{i}"}
            if i % 3 == 0:
                again["postal_code"] = "999-0000"
            await linked.receive(again, institution="2712345678")
        assert await refit_once(svc.runtime)
        fitted = linked.ctx.model
        assert linked.ctx.model_records == 90
        assert linked.ctx.model_id is not None
        assert fitted.to_dict() != type(fitted).default().to_dict()
        assert not await refit_once(svc.runtime)  # not grown since
        model_id = linked.ctx.model_id
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        linked = harness(svc, broker=None)
        await linked.receive({**base[0], "institution_patient_id": "G-1"}, institution="33")
        assert linked.ctx.model_id == model_id
        assert linked.ctx.model.to_dict() == fitted.to_dict()


async def test_a_restart_loads_the_vault_into_memory_and_freezes_it_out_of_the_collector(
    tmp_path: Path, harness: type[Linked], people: Callable[..., list[dict[str, Any]]]
) -> None:
    settings = embedded_settings(LinkageSettings, tmp_path)
    base = people(12, seed=3)
    broker = MemoryBroker()
    async with running_service(create_app, settings, broker=broker) as svc:
        linked = harness(svc, broker=broker)
        for identity in base:
            await linked.receive(identity)
        first = linked.published(RECORD_LINKED)[0].data.person
    gc.unfreeze()
    broker = MemoryBroker()
    async with running_service(create_app, settings, broker=broker, gc_freeze=True) as svc:
        linked = harness(svc, broker=broker)
        linked.sent = len(base)  # the vault's events were processed before the restart

        async def indexed() -> int:
            return len(linked.ctx.replica.index)

        await eventually(indexed, until=lambda n: n == len(base))
        await eventually(_frozen, until=bool)
        await linked.receive({**base[0], "institution_patient_id": "H-1"}, institution="44")
        assert linked.published(RECORD_LINKED)[-1].data.person == first


async def test_the_index_load_leaves_the_collector_alone_when_gc_freeze_is_off(
    tmp_path: Path, harness: type[Linked], people: Callable[..., list[dict[str, Any]]]
) -> None:
    settings = embedded_settings(LinkageSettings, tmp_path, gc_freeze=False)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        await harness(svc, broker=None).receive(people(1, seed=4)[0])
    gc.unfreeze()
    async with running_service(create_app, settings, broker=MemoryBroker(), gc_freeze=True) as svc:
        linked = harness(svc, broker=None)

        async def indexed() -> int:
            return len(linked.ctx.replica.index)

        await eventually(indexed, until=lambda n: n == 1)
        assert gc.get_freeze_count() == 0


async def _frozen() -> int:
    return gc.get_freeze_count()
