"""One trace id across an OpenTelemetry SDK client (Jaeger, B3 or W3C propagator) →
tracebridge → a W3C-instrumented Python server, with the gateway's spans checked at a real
OTLP receiver: client span → gateway SERVER span → gateway CLIENT span → upstream."""

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from harness import OtlpHttpReceiver, gateway_binary, http_config, start_gateway, wait_for

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind

PROPAGATORS = {
    "jaeger": (JaegerPropagator(), ["uber-trace-id"]),
    "b3-single": (B3SingleFormat(), ["b3"]),
    "b3-multi": (B3MultiFormat(), ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled"]),
    "w3c": (TraceContextTextMapPropagator(), ["traceparent"]),
}


def call_through(gateway_url: str, propagator, path: str = "/orders/1"):
    """Starts a client span with the OpenTelemetry SDK, injects it with `propagator`, calls."""
    tracer = TracerProvider().get_tracer("interop-client")
    with tracer.start_as_current_span("client-call") as span:
        headers: dict = {}
        propagator.inject(headers)
        ctx = span.get_span_context()
        request = urllib.request.Request(gateway_url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            body = response.read()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), headers, body


@pytest.mark.parametrize("name", list(PROPAGATORS))
def test_one_trace_id_through_the_gateway(name, receiver, upstream, tmp_path):
    propagator, sent_headers = PROPAGATORS[name]
    gateway = start_gateway(http_config(upstream.address, receiver.endpoint), tmp_path)
    try:
        trace_id, client_span, headers, _ = call_through(gateway.url(), propagator)
        for h in sent_headers:
            assert h in headers, f"the {name} propagator did not write {h}: {headers}"
    finally:
        assert gateway.stop() == 0, gateway.lines

    # The upstream continued the client's trace, with the gateway's span as parent.
    assert len(upstream.seen) == 1
    seen = upstream.seen[0]
    assert seen.trace_id == trace_id
    assert seen.parent_span_id not in ("", client_span), "the gateway must be the new parent"
    assert seen.sampled
    assert "traceparent" in seen.headers
    for stale in ("uber-trace-id", "b3", "x-b3-traceid", "x-b3-spanid"):
        assert stale not in seen.headers, f"stale {stale} reached the upstream"

    # The gateway's spans reached the OTLP receiver with the right parent links.
    spans = wait_for(lambda: [s for s in receiver.snapshot() if s.trace_id == trace_id], what="gateway spans")
    assert len(spans) == 2, spans
    client = next(s for s in spans if s.kind == CLIENT)
    server = next(s for s in spans if s.kind == SERVER)
    assert client.span_id == seen.parent_span_id
    assert client.parent_span_id == server.span_id
    assert server.parent_span_id == client_span
    assert server.service_name == client.service_name == "tracebridge"
    assert server.attributes["http.request.method"] == "GET"
    assert client.attributes["http.response.status_code"] == 200


def test_spans_over_otlp_http_protobuf(upstream, tmp_path):
    receiver = OtlpHttpReceiver()
    try:
        config = http_config(upstream.address, receiver.endpoint, otlp_protocol="http/protobuf")
        gateway = start_gateway(config, tmp_path)
        try:
            trace_id, client_span, _, _ = call_through(gateway.url(), TraceContextTextMapPropagator())
        finally:
            assert gateway.stop() == 0, gateway.lines
        spans = wait_for(lambda: [s for s in receiver.snapshot() if s.trace_id == trace_id], what="spans")
        assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
        server = next(s for s in spans if s.kind == SERVER)
        client = next(s for s in spans if s.kind == CLIENT)
        assert server.parent_span_id == client_span
        assert client.parent_span_id == server.span_id
        assert client.span_id == upstream.seen[0].parent_span_id
    finally:
        receiver.stop()


def test_jaeger_in_jaeger_out_for_a_jaeger_upstream(receiver, upstream, tmp_path):
    """With inject = ["jaeger"] the upstream gets uber-trace-id naming the gateway's span."""
    gateway = start_gateway(http_config(upstream.address, receiver.endpoint, inject='"jaeger"'), tmp_path)
    try:
        trace_id, client_span, _, _ = call_through(gateway.url(), JaegerPropagator())
    finally:
        assert gateway.stop() == 0
    got = JaegerPropagator().extract(upstream.seen[0].headers)
    from opentelemetry import trace

    ctx = trace.get_current_span(got).get_span_context()
    assert format(ctx.trace_id, "032x") == trace_id
    assert format(ctx.span_id, "016x") != client_span
    assert "traceparent" not in upstream.seen[0].headers


def test_reject_without_trace_context(upstream, tmp_path):
    gateway = start_gateway(http_config(upstream.address, None, on_missing="reject"), tmp_path)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(gateway.url() + "/orders/1", timeout=10)
        assert err.value.code == 400
        body = json.loads(err.value.read())
        assert body["kind"] == "missing_trace_context"
        assert {"traceparent", "uber-trace-id", "b3", "x-b3-traceid"} <= set(body["looked_for"])
    finally:
        assert gateway.stop() == 0
    assert upstream.seen == []


def test_check_rejects_a_bad_config_with_the_key_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[listeners]]\nname = "edge"\nprotocol = "http"\naddress = "nowhere"\n')
    result = subprocess.run([gateway_binary(), "check", "--config", str(path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "listeners[0].address" in result.stderr
    assert '"nowhere"' in result.stderr
