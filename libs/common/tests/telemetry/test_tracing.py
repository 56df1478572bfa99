"""Consumer spans: skipped when nothing exports them, trace context kept either way."""

from __future__ import annotations


def test_a_consumer_without_an_exporter_makes_no_span_but_carries_the_trace_on() -> None:
    from kiban_common.telemetry import build_tracer_provider, consume_span, current_traceparent

    provider = build_tracer_provider("silent", "none")
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with consume_span(
        provider, event_type="t", event_id="e", group="g", traceparent=incoming
    ) as span:
        assert not span.is_recording()
        outgoing = current_traceparent()
    assert outgoing is not None
    assert outgoing.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


async def _trace_ids_seen(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """(trace id of the span a handler runs under, traceparent it would give an event)."""
    import httpx
    from fastapi import FastAPI
    from opentelemetry import trace

    from kiban_common.telemetry import TraceContextMiddleware, current_traceparent

    app = FastAPI()
    seen: dict[str, str | None] = {}

    @app.get("/x")
    async def handler() -> dict[str, str]:
        span = trace.get_current_span()
        assert not span.is_recording()
        context = span.get_span_context()
        seen["trace"] = format(context.trace_id, "032x") if context.is_valid else None
        seen["traceparent"] = current_traceparent()
        return {}

    app.add_middleware(TraceContextMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/x", headers=headers)).status_code == 200
    return seen["trace"], seen["traceparent"]


async def test_without_an_exporter_a_request_continues_the_callers_trace_without_spans() -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    trace_id, outgoing = await _trace_ids_seen({"traceparent": incoming})
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert outgoing is not None
    assert outgoing.split("-")[1] == trace_id
    assert outgoing.split("-")[2] != "b7ad6b7169203331"  # the request's own span id


async def test_without_an_exporter_a_request_without_a_caller_trace_starts_one() -> None:
    first, _ = await _trace_ids_seen({})
    second, outgoing = await _trace_ids_seen({"traceparent": "junk"})
    assert first is not None
    assert second is not None
    assert len({first, second}) == 2
    assert outgoing is not None
    assert outgoing.split("-")[1] == second


def test_a_service_without_an_exporter_is_not_instrumented_and_one_with_is(
    tmp_path: object,
) -> None:
    from kiban_common.telemetry import build_tracer_provider, is_silent

    assert is_silent(build_tracer_provider("a", "none"))
    assert not is_silent(build_tracer_provider("b", "console"))
