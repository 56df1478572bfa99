"""The fee statement of a release: cost recovery under a published tariff (rule 22).

Three lines: a base fee (review, processing and production of the dataset), a data fee per row
delivered (rounded up to the yen), an environment fee (secure delivery, access control and the
download log for the release's lifetime); then consumption tax, rounded down to the yen as
Japanese invoices do. Amounts are integers of yen; unit prices may be fractional.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any


@dataclass(frozen=True)
class Tariff:
    base_fee_yen: int
    data_fee_per_row_yen: Decimal
    environment_fee_yen: int
    tax_percent: Decimal


def fee_statement(
    tariff: Tariff, *, release_id: str, application_id: str, rows: int, issued_at: datetime
) -> dict[str, Any]:
    data_fee = int((tariff.data_fee_per_row_yen * rows).to_integral_value(ROUND_CEILING))
    lines = [
        _line("base", "dataset production (base fee)", 1, Decimal(tariff.base_fee_yen)),
        _line("data", "data rows delivered", rows, tariff.data_fee_per_row_yen, data_fee),
        _line(
            "environment", "secure provision environment", 1, Decimal(tariff.environment_fee_yen)
        ),
    ]
    subtotal = sum(int(line["amount_yen"]) for line in lines)
    tax = int((Decimal(subtotal) * tariff.tax_percent / 100).to_integral_value(ROUND_FLOOR))
    return {
        "release_id": release_id,
        "application_id": application_id,
        "currency": "JPY",
        "issued_at": issued_at.isoformat(),
        "lines": lines,
        "subtotal_yen": subtotal,
        "tax_percent": str(tariff.tax_percent),
        "tax_yen": tax,
        "total_yen": subtotal + tax,
        "basis": "cost recovery (collection, processing, provision) per the published tariff",
    }


def _line(
    item: str, description: str, quantity: int, unit: Decimal, amount: int | None = None
) -> dict[str, Any]:
    return {
        "item": item,
        "description": description,
        "quantity": quantity,
        "unit_price_yen": format(unit.normalize(), "f"),
        "amount_yen": amount if amount is not None else int(unit * quantity),
    }
