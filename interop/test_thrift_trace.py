"""Thrift through tracebridge with real Python `thrift` 0.25.0 peers: every client dialect
(THeader binary / compact / compact+zlib, framed binary, unframed compact) against a Python
THeader server and a Python framed-binary server. The calls must arrive intact (echo of an
`Everything` exercising every Thrift type, a declared exception, a oneway), the trace must
cross the gateway in THeader info headers (`traceparent`, `x-trace-raw`), and the gateway's
spans, checked at a real OTLP receiver, must chain client span → gateway SERVER span →
gateway CLIENT span → upstream."""

import base64
import re
import secrets

import pytest
from thrift.Thrift import TApplicationException, TMessageType

from harness import start_gateway, wait_for
from thrift_harness import (
    CLIENTS,
    ThriftUpstream,
    close,
    sample_everything,
    set_headers,
    thrift_address,
    thrift_config,
    ttypes,
)

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind
METHODS = ["echo", "fail", "fire", "ping"]  # in call order
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def random_ids() -> tuple[str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    if int(trace_id, 16) == 0 or int(span_id, 16) == 0:  # all-zero ids are invalid
        return random_ids()
    return trace_id, span_id


def parse_traceparent(value: str) -> tuple[str, str, int]:
    m = TRACEPARENT.match(value)
    assert m, f"not a version-00 traceparent: {value!r}"
    trace_id, span_id, flags = m.group(1), m.group(2), int(m.group(3), 16)
    assert int(trace_id, 16) != 0 and int(span_id, 16) != 0, f"all-zero id in {value!r}"
    return trace_id, span_id, flags


def decode_trace_raw(value: str) -> tuple[str, str, int]:
    """`x-trace-raw`: padded standard base64 of version 0, field 0 + 16-byte trace id,
    field 1 + 8-byte span id, field 2 + 1-byte options (src/trace/binary.rs)."""
    assert len(value) == 40, f"x-trace-raw is not 40 base64 characters: {value!r}"
    raw = base64.b64decode(value, validate=True)
    assert len(raw) == 29, raw.hex()
    assert (raw[0], raw[1], raw[18], raw[27]) == (0, 0, 1, 2), f"bad x-trace-raw layout: {raw.hex()}"
    return raw[2:18].hex(), raw[19:27].hex(), raw[28]


def check_upstream_context(seen) -> tuple[str, str]:
    """The `traceparent` and `x-trace-raw` a THeader upstream got agree; returns
    (trace id, parent span id)."""
    assert "traceparent" in seen.headers, f"{seen.method}: upstream saw no traceparent: {seen.headers}"
    assert "x-trace-raw" in seen.headers, f"{seen.method}: upstream saw no x-trace-raw: {seen.headers}"
    trace_id, parent, flags = parse_traceparent(seen.headers["traceparent"])
    raw_trace, raw_parent, raw_flags = decode_trace_raw(seen.headers["x-trace-raw"])
    assert (raw_trace, raw_parent) == (trace_id, parent), (seen.headers, raw_trace, raw_parent)
    assert flags & 1 and raw_flags & 1, f"{seen.method}: not sampled: {seen.headers}"
    return trace_id, parent


def gateway_spans(receiver, method: str, trace_id: str | None = None):
    """The gateway's (SERVER, CLIENT) spans for one call of `method`."""

    def find():
        spans = [
            s
            for s in receiver.snapshot()
            if s.attributes.get("rpc.method") == method and (trace_id is None or s.trace_id == trace_id)
        ]
        servers = [s for s in spans if s.kind == SERVER]
        clients = [s for s in spans if s.kind == CLIENT]
        return (servers, clients) if servers and clients else None

    servers, clients = wait_for(find, what=f"the gateway's spans for {method} (trace {trace_id})")
    assert len(servers) == 1 and len(clients) == 1, (servers, clients)
    server, client = servers[0], clients[0]
    for span in (server, client):
        assert span.service_name == "tracebridge"
        assert span.attributes.get("rpc.system") == "apache_thrift", span.attributes
        assert span.attributes.get("rpc.method") == method, span.attributes
        assert span.attributes.get("rpc.service"), span.attributes
    assert client.trace_id == server.trace_id
    assert client.parent_span_id == server.span_id, "the CLIENT span must be the SERVER span's child"
    return server, client


def run_calls(client, sent: dict):
    """echo, fail, fire (oneway), ping; with a fresh W3C context on each call of a THeader
    client (recorded in `sent`: method -> (trace id, client span id))."""

    def context(method):
        if client.header is not None:
            trace_id, span_id = random_ids()
            sent[method] = (trace_id, span_id)
            set_headers(client, {"traceparent": f"00-{trace_id}-{span_id}-01"})

    value = sample_everything()
    context("echo")
    assert client.echo(value) == value

    context("fail")
    with pytest.raises(ttypes.Oops) as err:
        client.fail("on purpose")
    assert err.value.message == "failed: on purpose"
    assert err.value.code == 418

    context("fire")
    assert client.fire("fire and forget") is None
    context("ping")
    assert client.ping() is None
    return value


# (ThriftUpstream kind, the gateway's upstream transport)
UPSTREAMS = {"header-upstream": "header", "framed-upstream": "framed"}


@pytest.mark.parametrize("upstream_kind", list(UPSTREAMS))
@pytest.mark.parametrize("dialect", list(CLIENTS))
def test_thrift_call_and_trace_through_the_gateway(dialect, upstream_kind, receiver, tmp_path):
    kind = UPSTREAMS[upstream_kind]
    sent: dict = {}
    with ThriftUpstream(kind) as upstream:
        gateway = start_gateway(thrift_config(upstream.address, receiver.endpoint, transport=kind), tmp_path)
        try:
            client = CLIENTS[dialect](thrift_address(gateway))
            try:
                value = run_calls(client, sent)
                # ping returned after fire was sent on the same connection: the oneway
                # must already have reached the upstream.
                seen = upstream.snapshot()
            finally:
                close(client)
        finally:
            assert gateway.stop() == 0, gateway.lines

    # The upstream got every call, intact, in order, with the right message types.
    assert [c.method for c in seen] == METHODS, seen
    calls = {c.method: c for c in seen}
    assert calls["echo"].args == (value,)
    assert calls["fail"].args == ("on purpose",)
    assert calls["fire"].args == ("fire and forget",)
    assert calls["fire"].oneway, f"fire arrived as message type {calls['fire'].message_type}, not ONEWAY"
    for m in ("echo", "fail", "ping"):
        assert calls[m].message_type == TMessageType.CALL, (m, calls[m].message_type)

    if kind == "header":
        for c in seen:
            assert c.client_type == "headers", f"{c.method}: the gateway sent {c.client_type} to a THeader upstream"
            assert c.protocol == "binary", f"{c.method}: upstream configured binary, got {c.protocol}"
            assert c.header_seqid == c.seqid, f"{c.method}: header seq id {c.header_seqid} != message seqid {c.seqid}"

    if dialect.startswith("header"):
        # The client's trace continues: same trace id at the upstream, the gateway's CLIENT
        # span as the parent, and the chain client → SERVER → CLIENT at the receiver.
        for method in METHODS:
            trace_id, client_span = sent[method]
            server, gw_client = gateway_spans(receiver, method, trace_id)
            assert server.parent_span_id == client_span, f"{method}: SERVER span's parent is not the client span"
            if kind == "header":
                up_trace, up_parent = check_upstream_context(calls[method])
                assert up_trace == trace_id, f"{method}: upstream trace {up_trace}, client sent {trace_id}"
                assert up_parent != client_span, f"{method}: the gateway must be the upstream's parent"
                assert up_parent == gw_client.span_id, f"{method}: upstream parent is not the gateway CLIENT span"
    else:
        # No headers from the client: the gateway starts a new root trace per call.
        roots = set()
        for method in METHODS:
            if kind == "header":
                up_trace, up_parent = check_upstream_context(calls[method])
                server, gw_client = gateway_spans(receiver, method, up_trace)
                assert up_parent == gw_client.span_id, f"{method}: upstream parent is not the gateway CLIENT span"
            else:
                server, gw_client = gateway_spans(receiver, method)
            assert server.parent_span_id == "", f"{method}: expected a new root, parent {server.parent_span_id}"
            roots.add(server.trace_id)
        assert len(roots) == len(METHODS), f"each call must start its own trace: {roots}"

    if kind == "framed":
        for c in seen:
            assert c.headers == {}, c  # framed binary carries no headers at all


@pytest.mark.parametrize("dialect", ["framed-binary", "header-compact-zlib"])
def test_protocol_translation_to_a_compact_header_upstream(dialect, receiver, tmp_path):
    """thrift_protocol = "compact": binary callers reach a THeader compact upstream (and the
    compact+zlib caller a compact upstream without zlib) with the arguments intact and the
    replies translated back."""
    with ThriftUpstream("header") as upstream:
        config = thrift_config(upstream.address, receiver.endpoint, protocol="compact")
        gateway = start_gateway(config, tmp_path)
        try:
            client = CLIENTS[dialect](thrift_address(gateway))
            try:
                value = run_calls(client, {})
                seen = upstream.snapshot()
            finally:
                close(client)
        finally:
            assert gateway.stop() == 0, gateway.lines
    assert [c.method for c in seen] == METHODS, seen
    assert seen[0].args == (value,)
    for c in seen:
        assert (c.client_type, c.protocol) == ("headers", "compact"), c
        check_upstream_context(c)


def test_reject_without_trace_context(receiver, tmp_path):
    """on_missing = "reject": a THeader call without any trace header gets a
    TApplicationException naming the headers looked for, and never reaches the upstream;
    the same connection then works once it carries a traceparent."""
    with ThriftUpstream("header") as upstream:
        config = thrift_config(upstream.address, receiver.endpoint, on_missing="reject")
        gateway = start_gateway(config, tmp_path)
        try:
            client = CLIENTS["header-binary"](thrift_address(gateway))
            try:
                with pytest.raises(TApplicationException) as err:
                    client.echo(sample_everything())
                message = err.value.message or ""
                for header in ("traceparent", "uber-trace-id", "x-b3-traceid", "x-trace-raw"):
                    assert header in message, f"{header!r} not named in {message!r}"
                assert upstream.snapshot() == [], "a rejected call reached the upstream"

                trace_id, span_id = random_ids()
                set_headers(client, {"traceparent": f"00-{trace_id}-{span_id}-01"})
                client.ping()
            finally:
                close(client)
            # A framed client can carry no context at all: rejected the same way.
            legacy = CLIENTS["framed-binary"](thrift_address(gateway))
            try:
                with pytest.raises(TApplicationException) as err:
                    legacy.ping()
                assert "traceparent" in (err.value.message or ""), err.value.message
            finally:
                close(legacy)
        finally:
            assert gateway.stop() == 0, gateway.lines
    seen = upstream.snapshot()
    assert [c.method for c in seen] == ["ping"], seen
    assert check_upstream_context(seen[0])[0] == trace_id
