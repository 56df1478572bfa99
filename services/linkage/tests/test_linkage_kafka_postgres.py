"""End to end on a real Kafka broker and a real PostgreSQL: `record-received` in,
`record-linked` out, with no identity in what goes on the wire."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiban_common.bus import KafkaTransport
from kiban_common.events import RECORD_LINKED, RecordLinkedV1, WireMessage, decode
from kiban_common.settings import KafkaSettings
from kiban_linkage.main import create_app
from kiban_linkage.settings import LinkageSettings
from kiban_testing import embedded_settings, eventually, running_service

if TYPE_CHECKING:
    from conftest import Linked

IDENTITY = {
    "institution_patient_id": "KP-31337",
    "family_name": "髙橋",
    "given_name": "美咲",
    "family_name_kana": "タカハシ",
    "given_name_kana": "ミサキ",
    "birth_date": "1975-12-24",
    "sex": "female",
    "postal_code": "〒060-0042",
    "address": "北海道札幌市中央区大通西13丁目",
    "insurance_numbers": ["01234567", "記号12・番号98765432"],
    "deceased_on": None,
}
RESOURCES = [
    {
        "resourceType": "Encounter",
        "id": "enc-KP-31337-1",
        "status": "finished",
        "subject": {"reference": "Patient/KP-31337", "display": "髙橋 美咲"},
        "participant": [{"individual": {"reference": "Practitioner/doc-77", "display": "渡辺健"}}],
        "period": {"start": "2024-05-01T09:00:00+09:00"},
    },
    {
        "resourceType": "Observation",
        "id": "obs-KP-31337-1",
        "status": "final",
        "subject": {"reference": "Patient/KP-31337"},
        "encounter": {"reference": "Encounter/enc-KP-31337-1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "valueQuantity": {"value": 98, "unit": "mg/dL"},
        "note": [{"text": "髙橋さん本人より聴取 電話011-000-1111"}],
        "identifier": [{"system": "urn:lab", "value": "LAB-555-0001"}],
    },
]
SECRETS = (
    "髙橋",
    "高橋",
    "美咲",
    "タカハシ",
    "ミサキ",
    "KP-31337",
    "北海道",
    "札幌",
    "大通",
    "01234567",
    "98765432",
    "渡辺",
    "doc-77",
    "LAB-555",
    "011-000",
    "enc-KP",
)


async def test_record_received_to_record_linked_on_kafka_and_postgres_without_identity(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str, harness: type[Linked]
) -> None:
    url = postgres_cluster.create_database(f"linkage_{secrets.token_hex(3)}")
    settings = embedded_settings(
        LinkageSettings, tmp_path, database_url=url, bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    reader = KafkaTransport(kafka_bootstrap, KafkaSettings())
    await reader.start()
    try:
        async with running_service(create_app, settings) as svc:
            linked = harness(svc, broker=None)
            # The session's broker is shared with other services' tests: this test's record is
            # the one from its own institution.
            institution = f"9{secrets.randbelow(10**9):09d}"
            await linked.receive(IDENTITY, RESOURCES, institution=institution)
            consumer = await reader.consumer(f"test-{secrets.token_hex(3)}", [RECORD_LINKED])
            seen: list[WireMessage] = []

            async def poll() -> int:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                seen.extend(
                    r.message
                    for r in batch
                    if decode(r.message, RecordLinkedV1).data.institution_code == institution
                )
                return len(seen)

            await eventually(poll, timeout=60)
            await consumer.stop()
            stats = await linked.stats()
    finally:
        await reader.stop()

    (message,) = seen
    wire = message.value.decode() + message.key.decode()
    wire += "".join(v.decode(errors="replace") for _, v in message.headers)
    for value in SECRETS:
        assert value not in wire, "an identity value reached the wire"
    event = decode(message, RecordLinkedV1)
    data = event.data
    assert event.key == data.person
    assert len(data.person) == 64
    assert data.demographics.model_dump(mode="json") == {
        "birth_date": "1975-12-24",
        "sex": "female",
        "postal_code": "060-0042",
        "deceased_on": None,
    }
    encounter, observation = data.resources
    assert encounter["subject"] == observation["subject"] == {"reference": f"Patient/{data.person}"}
    assert observation["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
    assert observation["valueQuantity"] == {"value": 98, "unit": "mg/dL"}
    assert "participant" not in encounter
    assert "note" not in observation
    assert (stats["persons"], stats["records"]) == (1, 1)
