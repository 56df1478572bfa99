"""Event handlers of the release service, by consumer group suffix and event type.

One group (`kiban-release`) reads both types: the committee's decisions and the anonymizer's
build results. Handlers close over the service's context (`handlers(runtime)`).
"""

from __future__ import annotations

from typing import Any

from kiban_common.events import APPLICATION_DECIDED, DATASET_BUILT, Event
from kiban_common.outbox import Transaction
from kiban_common.service import Handlers, ServiceRuntime
from kiban_release.consumers.builds import apply_build
from kiban_release.consumers.decisions import apply_decision


def handlers(runtime: ServiceRuntime) -> Handlers:
    context = runtime.context

    async def on_decided(event: Event[Any], tx: Transaction) -> None:
        await apply_decision(context, event, tx)

    async def on_built(event: Event[Any], tx: Transaction) -> None:
        await apply_build(context, event, tx)

    return {"": {APPLICATION_DECIDED: on_decided, DATASET_BUILT: on_built}}


__all__ = ["handlers"]
