"""`kiban release trace` names the release and recipient of a file or of a leaked excerpt of
it; `kiban release verify` checks a manifest offline."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiban_cli.main import main as kiban
from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_release import datafile
from kiban_release.domain.trace import Verdict
from kiban_release.main import create_app
from kiban_release.settings import ReleaseSettings
from kiban_release.tracing import trace_with_url
from kiban_testing import RunningService, embedded_settings, eventually, running_service

from .conftest import (
    OTHER_RESEARCHER,
    RESEARCHER,
    FakeAnonymizer,
    FakeClock,
    anonymizer_running,
    decided,
    publish,
    sample_rows,
)


class World:
    """Four ready releases: two anonymized (two recipients), two pseudonymized of one
    application."""

    def __init__(self, svc: RunningService, fake: FakeAnonymizer, url: str, tmp: Path) -> None:
        self.svc, self.fake, self.url, self.tmp = svc, fake, url, tmp
        self.ids: dict[str, str] = {}

    def file(self, key: str, name: str) -> Path:
        return self.fake.built[self.ids[key]].files[name]


@pytest.fixture
async def world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    broker = MemoryBroker()
    settings = embedded_settings(ReleaseSettings, tmp_path)
    assert isinstance(settings, ReleaseSettings)
    transport = MemoryTransport(broker)
    fake = FakeAnonymizer(transport, settings.files_dir, persons=120)
    async with (
        running_service(functools.partial(create_app, clock=clock), settings, broker=broker) as svc,
        anonymizer_running(fake),
    ):
        w = World(svc, fake, settings.database_url, tmp_path)
        plan = [
            ("a", "app-a", RESEARCHER, "anonymized"),
            ("b", "app-b", OTHER_RESEARCHER, "anonymized"),
            ("c1", "app-c", RESEARCHER, "pseudonymized"),
            ("c2", "app-c", RESEARCHER, "pseudonymized"),
        ]
        for key, app, who, kind in plan:
            fake.applications.add(app)
            before = set(fake.built)
            await publish(transport, decided(app, applicant=who, kind=kind))
            await eventually(lambda b=before: _async(set(fake.built) - b), until=bool)
            (w.ids[key],) = set(fake.built) - before
        for release_id in w.ids.values():
            await eventually(lambda r=release_id: _status(svc, r), until=lambda s: s == "ready")
        yield w


async def test_a_full_file_traces_to_its_release_and_recipient(world: World) -> None:
    result = await trace_with_url(world.url, world.file("a", "conditions.csv"))
    assert result.verdict is Verdict.FILE
    assert result.release_id == world.ids["a"]
    assert result.recipient == RESEARCHER
    assert result.file_name == "conditions.csv"
    assert result.coverage == 1.0


@pytest.mark.parametrize(
    ("key", "name", "recipient"),
    [("a", "conditions.csv", RESEARCHER), ("b", "patients.csv", OTHER_RESEARCHER)],
)
async def test_a_50_row_sample_traces_uniquely_to_its_release(
    world: World, key: str, name: str, recipient: str
) -> None:
    sample = sample_rows(world.file(key, name), world.tmp / "leak.csv", 50)
    result = await trace_with_url(world.url, sample)
    assert result.verdict is Verdict.RELEASE
    assert [c.release_id for c in result.contenders] == [world.ids[key]]
    assert result.release_id == world.ids[key]
    assert result.recipient == recipient
    # every id of the sample is in that release and in no other
    assert [c.release_id for c in result.matches] == [world.ids[key]]
    assert result.coverage == 1.0


async def test_a_sample_that_lost_its_header_still_traces(world: World) -> None:
    sample = sample_rows(
        world.file("b", "conditions.csv"), world.tmp / "leak.csv", 50, header=False
    )
    result = await trace_with_url(world.url, sample)
    assert result.verdict is Verdict.RELEASE
    assert result.release_id == world.ids["b"]
    assert result.recipient == OTHER_RESEARCHER
    assert result.notes


async def test_a_pseudonymized_sample_names_the_application_and_its_releases(world: World) -> None:
    sample = sample_rows(world.file("c1", "patients.csv"), world.tmp / "leak.csv", 50)
    result = await trace_with_url(world.url, sample)
    assert result.verdict is Verdict.APPLICATION
    assert result.application_id == "app-c"
    assert result.recipient == RESEARCHER
    assert {c.release_id for c in result.contenders} == {world.ids["c1"], world.ids["c2"]}


async def test_unrelated_rows_trace_to_nothing(world: World) -> None:
    stray = world.tmp / "stray.csv"
    stray.write_text("person_id,code\n" + "".join(f"zz{n:014x},I10\n" for n in range(50)))
    result = await trace_with_url(world.url, stray)
    assert result.verdict is Verdict.NONE


def parquet_sample(
    source: Path, target: Path, n: int, *, rename: bool = False, seed: int = 7
) -> Path:
    """`n` random rows of a released CSV written as a Parquet file of their own (what someone
    leaking part of a Parquet release hands on); `rename` drops the column names."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    with source.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    picked = random.Random(seed).sample(rows, n)
    names = [f"c{i}" for i in range(len(header))] if rename else header
    pq.write_table(pa.table({name: [r[i] for r in picked] for i, name in enumerate(names)}), target)
    return target


async def test_a_50_row_parquet_sample_traces_to_its_release(world: World) -> None:
    sample = parquet_sample(world.file("b", "conditions.csv"), world.tmp / "leak.parquet", 50)
    ids = datafile.read_ids(sample)
    assert ids.has_person_column
    assert ids.rows == 50
    result = await trace_with_url(world.url, sample)
    assert result.verdict is Verdict.RELEASE
    assert [c.release_id for c in result.matches] == [world.ids["b"]]
    assert result.recipient == OTHER_RESEARCHER
    assert result.coverage == 1.0


async def test_a_parquet_sample_without_its_column_names_still_traces(world: World) -> None:
    sample = parquet_sample(
        world.file("a", "patients.csv"), world.tmp / "leak.parquet", 50, rename=True
    )
    result = await trace_with_url(world.url, sample)
    assert result.verdict is Verdict.RELEASE
    assert result.release_id == world.ids["a"]
    assert result.recipient == RESEARCHER
    assert result.notes


async def test_kiban_release_trace_reads_a_parquet_sample_and_refuses_a_torn_one(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = parquet_sample(world.file("a", "conditions.csv"), world.tmp / "leak.parquet", 50)
    code = await asyncio.to_thread(
        kiban, ["release", "trace", str(sample), "--database-url", world.url, "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["verdict"], out["release_id"]) == ("release", world.ids["a"])
    torn = world.tmp / "torn.parquet"
    torn.write_bytes(sample.read_bytes()[: sample.stat().st_size // 2])
    code = await asyncio.to_thread(
        kiban, ["release", "trace", str(torn), "--database-url", world.url]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "torn.parquet: not a readable Parquet file" in err
    assert "Traceback" not in err


async def test_kiban_release_trace_command_prints_release_and_recipient(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_rows(world.file("a", "patients.csv"), world.tmp / "leak.csv", 50)
    code = await asyncio.to_thread(
        kiban, ["release", "trace", str(sample), "--database-url", world.url, "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "release"
    assert out["release_id"] == world.ids["a"]
    assert out["recipient"] == RESEARCHER
    assert out["application_id"] == "app-a"

    code = await asyncio.to_thread(
        kiban, ["release", "trace", str(sample), "--database-url", world.url]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert world.ids["a"] in text
    assert RESEARCHER in text

    stray = world.tmp / "stray.csv"
    stray.write_text("person_id\nnobody\n")
    code = await asyncio.to_thread(
        kiban, ["release", "trace", str(stray), "--database-url", world.url]
    )
    assert code == 1


async def test_kiban_release_verify_checks_a_manifest_offline(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    release_id = world.ids["a"]
    headers = world.svc.auth(RESEARCHER, ["release:download"])
    envelope = (
        await world.svc.client.get(f"/v1/releases/{release_id}/manifest", headers=headers)
    ).json()
    key = (await world.svc.client.get("/v1/manifest-key")).json()["public_key"]
    good, bad, pem = world.tmp / "m.json", world.tmp / "bad.json", world.tmp / "key.pem"
    good.write_text(json.dumps(envelope))
    envelope["manifest"]["recipient"] = OTHER_RESEARCHER
    bad.write_text(json.dumps(envelope))
    pem.write_text(key)
    assert (
        await asyncio.to_thread(kiban, ["release", "verify", str(good), "--public-key", str(pem)])
        == 0
    )
    assert (
        await asyncio.to_thread(kiban, ["release", "verify", str(bad), "--public-key", str(pem)])
        == 1
    )
    out = capsys.readouterr().out
    assert "valid" in out
    assert "INVALID" in out


async def _status(svc: RunningService, release_id: str) -> str:
    r = await svc.client.get(
        f"/v1/releases/{release_id}", headers=svc.auth("operator:o", ["admin"])
    )
    return str(r.json()["status"])


async def _async(value: object) -> object:
    return value
