"""The pure rules: who may download when, the fee statement, manifest signatures, trace
verdicts, and reading ids from dataset files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiban_release import datafile
from kiban_release.domain.access import download_refusal
from kiban_release.domain.manifest import ManifestSigner, build_manifest, canonical, verify
from kiban_release.domain.release import ReleaseStatus, safe_file_name
from kiban_release.domain.tariff import Tariff, fee_statement
from kiban_release.domain.trace import Candidate, Verdict, judge

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "expires", "used", "code"),
    [
        (ReleaseStatus.READY, NOW + timedelta(days=1), 0, None),
        (ReleaseStatus.READY, NOW + timedelta(days=1), 4, None),
        (ReleaseStatus.READY, NOW + timedelta(days=1), 5, "download_limit_reached"),
        (ReleaseStatus.READY, NOW, 0, "release_expired"),
        (ReleaseStatus.BUILDING, None, 0, "not_ready"),
        (ReleaseStatus.FAILED, None, 0, "release_failed"),
        (ReleaseStatus.REVOKED, NOW + timedelta(days=1), 0, "release_revoked"),
        (ReleaseStatus.EXPIRED, NOW + timedelta(days=1), 0, "release_expired"),
    ],
)
def test_download_refusals(
    status: ReleaseStatus, expires: datetime | None, used: int, code: str | None
) -> None:
    refusal = download_refusal(status=status, expires_at=expires, now=NOW, used=used, limit=5)
    assert (refusal.code if refusal else None) == code


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("patients.csv", True),
        ("../x", False),
        (".hidden", False),
        ("a/b", False),
        ("", False),
        ("a\nb", False),
    ],
)
def test_file_names_are_single_safe_segments(name: str, ok: bool) -> None:
    assert safe_file_name(name) is ok


def test_fee_statement_rounds_data_fee_up_and_tax_down() -> None:
    tariff = Tariff(150_000, Decimal("0.3"), 50_000, Decimal("10"))
    fee = fee_statement(tariff, release_id="r", application_id="a", rows=1001, issued_at=NOW)
    assert [line["amount_yen"] for line in fee["lines"]] == [150_000, 301, 50_000]
    assert fee["lines"][1]["unit_price_yen"] == "0.3"
    assert fee["subtotal_yen"] == 200_301
    assert fee["tax_yen"] == 20_030
    assert fee["total_yen"] == 220_331


def _manifest() -> dict[str, object]:
    return build_manifest(
        release_id="r1",
        application_id="a1",
        recipient="researcher:x",
        organization="Org",
        kind="anonymized",
        build_id="b1",
        issued_at=NOW,
        expires_at=NOW + timedelta(days=90),
        files=[{"name": "f.csv", "rows": 3, "bytes": 10, "sha256": "a" * 64}],
        privacy={"k": 5, "achieved_k": 6, "suppressed": 0},
    )


def test_manifest_signature_verifies_with_the_signer_key_only_and_not_after_tampering() -> None:
    signer = ManifestSigner(Ed25519PrivateKey.generate())
    envelope = signer.sign(_manifest())
    assert verify(envelope)
    assert verify(envelope, signer.public_pem)
    stranger = ManifestSigner(Ed25519PrivateKey.generate())
    assert not verify(envelope, stranger.public_pem)
    forged = stranger.sign({**envelope["manifest"], "recipient": "researcher:y"})
    assert verify(forged)  # self-consistent ...
    assert not verify(forged, signer.public_pem)  # ... but not the operator's signature
    tampered = {**envelope, "manifest": {**envelope["manifest"], "build_id": "b2"}}
    assert not verify(tampered)
    assert not verify({**envelope, "signature": "not base64!"})
    assert not verify({**envelope, "algorithm": "RS256"})


def test_canonical_form_is_independent_of_key_order() -> None:
    assert (
        canonical({"b": 1, "a": "é"}) == canonical({"a": "é", "b": 1}) == '{"a":"é","b":1}'.encode()
    )


def _c(release: str, app: str, matched: int) -> Candidate:
    return Candidate(release, app, "researcher:x", "anonymized", "ready", matched)


def test_trace_verdicts() -> None:
    assert judge(50, []).verdict is Verdict.NONE
    one = judge(50, [_c("r1", "a1", 50), _c("r2", "a2", 1)])  # a stray collision
    assert one.verdict is Verdict.RELEASE
    assert one.release_id == "r1"
    assert one.coverage == 1.0
    app = judge(50, [_c("r1", "a1", 50), _c("r2", "a1", 50)])
    assert app.verdict is Verdict.APPLICATION
    assert app.application_id == "a1"
    assert app.release_id is None
    mixed = judge(50, [_c("r1", "a1", 25), _c("r2", "a2", 25)])
    assert mixed.verdict is Verdict.AMBIGUOUS
    assert mixed.application_id is None
    exact = judge(50, [_c("r1", "a1", 50)], exact=_c("r1", "a1", 50), exact_name="f.csv")
    assert exact.verdict is Verdict.FILE
    assert exact.file_name == "f.csv"


def test_ids_are_read_from_csv_tsv_and_ndjson(tmp_path: Path) -> None:
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("code,person_id\nI10,p1\nI11,p2\nE11,p1\n")
    ids = datafile.read_ids(csv_file)
    assert (ids.rows, ids.person_ids, ids.has_person_column) == (3, {"p1", "p2"}, True)
    tsv = tmp_path / "a.tsv"
    tsv.write_text("person_id\tcode\np3\tI10\n")
    assert datafile.read_ids(tsv).person_ids == {"p3"}
    nd = tmp_path / "a.ndjson"
    nd.write_text('{"person_id": "p4", "code": "I10"}\n{"person_id": "p5"}\n')
    assert datafile.read_ids(nd).person_ids == {"p4", "p5"}
    headerless = tmp_path / "b.csv"
    headerless.write_text("p6,I10\np7,I11\n")
    loose = datafile.read_ids(headerless)
    assert not loose.has_person_column
    assert {"p6", "p7"} <= loose.loose_values
    assert loose.rows == 2
