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
