"""Event handlers of the intake service, by consumer group suffix and event type.

One handler: `kiban.optout.optout-requested.v1` → stop (and delete) the matched patients'
data here, block future submissions, acknowledge with `kiban.intake.optout-applied.v1`.
"""

from __future__ import annotations

from typing import Any

from kiban_common.bus import Handler
from kiban_common.events import OPTOUT_REQUESTED, Event, OptoutRequestedV1
from kiban_common.outbox import Transaction


def handlers(runtime: Any) -> dict[str, dict[str, Handler]]:
    """Built once the runtime (and its context, the `Intake`) exists."""

    async def on_optout_requested(event: Event[OptoutRequestedV1], tx: Transaction) -> None:
        await runtime.context.apply_optout(event, tx)

    return {"": {OPTOUT_REQUESTED: on_optout_requested}}
