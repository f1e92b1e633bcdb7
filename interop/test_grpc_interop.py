"""grpc's interop test cases (doc/interop-test-descriptions.md in grpc/grpc) with a grpcio
client and a grpcio interop server, each run twice: `direct` (client → server, the baseline
that proves the test itself) and `gateway` (client → tracebridge → server). Through the
gateway the server must also see the client's trace continued: the W3C `traceparent` the
client sent arrives with the same trace id and the gateway's span as the new parent.

Compression flags are read off the wire by the H2Tap in front of the server (what the server
got) and in front of the gateway (what the client got); grpcio does not expose them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from grpc_harness import (
    ECHO_INITIAL,
    ECHO_TRAILING,
    H2Tap,
    InteropServer,
    Sent,
    empty_pb2,
    grpc_config,
    messages_pb2,
    parse_traceparent,
    test_pb2_grpc,
)
from harness import OtlpReceiver, start_gateway, wait_for

SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind
TIMEOUT = 10.0  # per-call deadline for calls that are meant to succeed
TESTSERVICE = "/grpc.testing.TestService/"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"


def zeros(n: int):
    return messages_pb2.Payload(body=bytes(n))


@pytest.fixture(scope="module")
def server():
    s = InteropServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def otlp():
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def gateway(server, otlp, tmp_path_factory):
    gw = start_gateway(grpc_config(server.address, otlp.endpoint), tmp_path_factory.mktemp("grpc-gateway"))
    tap = H2Tap(gw.addresses["edge"])  # what the client receives from the gateway
    yield gw, tap
    tap.stop()
    code = gw.stop()
    assert code == 0, f"gateway exited {code}: {gw.lines[-20:]}"


@dataclass
class Target:
    """Where a test's client connects. `tap` sees the bytes the client exchanges."""

    name: str
    address: str
    tap: H2Tap
    server: InteropServer
    channel: grpc.Channel

    @property
    def via_gateway(self) -> bool:
        return self.name == "gateway"

    @property
    def stub(self):
        return test_pb2_grpc.TestServiceStub(self.channel)

    def server_call(self, sent: Sent, method: str):
        """The server's record of the call `sent`; asserts it reached the right method and that
        the trace went on: unchanged when direct, same trace id and a new parent through the
        gateway."""
        calls = wait_for(lambda: self.server.calls_for(sent.call_id), 5.0, f"the server to see call {method}")
        assert len(calls) == 1, f"the server saw the call {len(calls)} times"
        call = calls[0]
        assert call.method == (method if method.startswith("/") else TESTSERVICE + method)
        self.assert_trace(sent, call)
        return call

    def assert_trace(self, sent: Sent, call):
        seen = call.get("traceparent")
        if not self.via_gateway:
            assert seen == dict(sent.metadata)["traceparent"]
            return
        parsed = parse_traceparent(seen)
        assert parsed, f"the server got no valid traceparent: {seen!r} (metadata {call.metadata})"
        trace_id, parent = parsed
        assert trace_id == sent.trace_id, f"trace id changed: sent {sent.trace_id}, server got {trace_id}"
        assert parent != sent.span_id, "the gateway forwarded the client's span as parent, not its own"
        assert parent != "0" * 16

    def assert_reset_upstream(self, sent: Sent):
        """The call reached the server as a stream the caller's side reset (RST_STREAM) without
        having ended it: read off the wire in front of the server. (grpcio's handler cannot tell:
        its request iterator may end as if half-closed when the call is cancelled.)"""

        def reset():
            streams = self.server.tap.find(sent.call_id)
            return [s for s in streams if any(who == "client" for who, _ in s.resets)]

        for stream in wait_for(reset, 5.0, "the server-side stream to be reset"):
            assert not stream.request_ended, f"END_STREAM before the reset: {stream.events}"

    def assert_ended(self, sent: Sent, within: float = 5.0):
        """Every call the server saw for `sent` ends within `within` seconds (a cancelled or
        timed-out caller must not leave the upstream call running)."""
        for call in self.server.calls_for(sent.call_id):
            assert call.ended.wait(within), f"the server's {call.method} was still running {within}s later"


@pytest.fixture(scope="module")
def direct_channel(server):
    channel = grpc.insecure_channel(server.address)
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def gateway_channel(gateway):
    _, tap = gateway
    channel = grpc.insecure_channel(tap.address)
    yield channel
    channel.close()


@pytest.fixture(params=["direct", "gateway"])
def target(request, server) -> Target:
    if request.param == "direct":
        channel = request.getfixturevalue("direct_channel")
        return Target("direct", server.address, server.tap, server, channel)
    _, tap = request.getfixturevalue("gateway")
    channel = request.getfixturevalue("gateway_channel")
    return Target("gateway", tap.address, tap, server, channel)


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = fn(*args, **kwargs)
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return err.value


def blocking_requests(first, release: threading.Event):
    """Sends `first` (if any), then keeps the request stream open until `release` is set."""
    if first is not None:
        yield first
    release.wait()


# --- the interop cases -------------------------------------------------------------------------


def test_empty_unary(target):
    sent = Sent.new()
    response, call = target.stub.EmptyCall.with_call(empty_pb2.Empty(), metadata=sent.metadata, timeout=TIMEOUT)
    assert call.code() == grpc.StatusCode.OK
    assert response is not None and isinstance(response, empty_pb2.Empty)
    assert response.ByteSize() == 0
    target.server_call(sent, "EmptyCall")


def test_large_unary(target):
    sent = Sent.new()
    request = messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828))
    response, call = target.stub.UnaryCall.with_call(request, metadata=sent.metadata, timeout=TIMEOUT)
    assert call.code() == grpc.StatusCode.OK
    assert len(response.payload.body) == 314159
    assert response.payload.body == bytes(314159)
    target.server_call(sent, "UnaryCall")


def test_client_compressed_unary(target):
    def request(expect: bool):
        r = messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828))
        r.expect_compressed.value = expect
        return r

    # 1. The feature probe: uncompressed, expect_compressed = true → INVALID_ARGUMENT.
    probe = Sent.new()
    err = rpc_error(target.stub.UnaryCall, request(True), metadata=probe.metadata, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    target.server_call(probe, "UnaryCall")

    # 2. Compressed, expect_compressed = true; 3. uncompressed, expect_compressed = false.
    for expect, compression in ((True, grpc.Compression.Gzip), (False, grpc.Compression.NoCompression)):
        sent = Sent.new()
        response, call = target.stub.UnaryCall.with_call(
            request(expect), metadata=sent.metadata, timeout=TIMEOUT, compression=compression
        )
        assert call.code() == grpc.StatusCode.OK
        assert len(response.payload.body) == 314159
        assert response.payload.body == bytes(314159)
        target.server_call(sent, "UnaryCall")
        (stream,) = target.server.tap.find(sent.call_id)
        assert [flag for flag, _ in stream.request_messages] == [1 if expect else 0]


def test_server_compressed_unary(target):
    for compressed in (True, False):
        sent = Sent.new()
        request = messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828))
        request.response_compressed.value = compressed
        response, call = target.stub.UnaryCall.with_call(request, metadata=sent.metadata, timeout=TIMEOUT)
        assert call.code() == grpc.StatusCode.OK
        assert len(response.payload.body) == 314159
        assert response.payload.body == bytes(314159)
        target.server_call(sent, "UnaryCall")
        # The compressed flag of the response message as the client received it.
        (stream,) = target.tap.find(sent.call_id)
        flags = [flag for flag, _ in stream.response_messages]
        assert flags == [1 if compressed else 0], (
            f"response_compressed={compressed}: message flags {flags}, "
            f"grpc-encoding {stream.header('grpc-encoding', 'response_headers')!r}"
        )


def test_client_streaming(target):
    sent = Sent.new()
    sizes = [27182, 8, 1828, 45904]
    requests = (messages_pb2.StreamingInputCallRequest(payload=zeros(n)) for n in sizes)
    response, call = target.stub.StreamingInputCall.with_call(requests, metadata=sent.metadata, timeout=TIMEOUT)
    assert call.code() == grpc.StatusCode.OK
    assert response.aggregated_payload_size == 74922
    assert target.server_call(sent, "StreamingInputCall").request_stream_end() == "half-closed"


def test_server_streaming(target):
    sent = Sent.new()
    sizes = [31415, 9, 2653, 58979]
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in sizes]
    )
    call = target.stub.StreamingOutputCall(request, metadata=sent.metadata, timeout=TIMEOUT)
    bodies = [r.payload.body for r in call]
    assert call.code() == grpc.StatusCode.OK
    assert [len(b) for b in bodies] == sizes
    assert all(b == bytes(len(b)) for b in bodies)
    target.server_call(sent, "StreamingOutputCall")


def test_ping_pong(target):
    sent = Sent.new()
    steps = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
    requests: queue.Queue = queue.Queue()

    def outgoing():
        while (r := requests.get()) is not None:
            yield r

    call = target.stub.FullDuplexCall(outgoing(), metadata=sent.metadata, timeout=TIMEOUT)
    sizes = []
    try:
        for response_size, payload_size in steps:
            requests.put(
                messages_pb2.StreamingOutputCallRequest(
                    response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                    payload=zeros(payload_size),
                )
            )
            body = next(call).payload.body
            assert body == bytes(len(body))
            sizes.append(len(body))
    finally:
        requests.put(None)  # half-close
    assert list(call) == [], "responses after the half-close"
    assert call.code() == grpc.StatusCode.OK
    assert sizes == [31415, 9, 2653, 58979]
    assert target.server_call(sent, "FullDuplexCall").request_stream_end() == "half-closed"


def test_empty_stream(target):
    sent = Sent.new()
    call = target.stub.FullDuplexCall(iter(()), metadata=sent.metadata, timeout=TIMEOUT)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK
    target.server_call(sent, "FullDuplexCall")


def test_custom_metadata(target):
    echo = ((ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab"))

    # 1. UnaryCall.
    sent = Sent.new(*echo)
    request = messages_pb2.SimpleRequest(response_size=314159, payload=zeros(271828))
    response, call = target.stub.UnaryCall.with_call(request, metadata=sent.metadata, timeout=TIMEOUT)
    assert call.code() == grpc.StatusCode.OK
    assert len(response.payload.body) == 314159
    assert (ECHO_INITIAL, "test_initial_metadata_value") in tuple(call.initial_metadata())
    assert (ECHO_TRAILING, b"\xab\xab\xab") in tuple(call.trailing_metadata())
    target.server_call(sent, "UnaryCall")

    # 2. FullDuplexCall, then half-close.
    sent = Sent.new(*echo)
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=314159)], payload=zeros(271828)
    )
    call = target.stub.FullDuplexCall(iter([request]), metadata=sent.metadata, timeout=TIMEOUT)
    assert [len(r.payload.body) for r in call] == [314159]
    assert call.code() == grpc.StatusCode.OK
    assert (ECHO_INITIAL, "test_initial_metadata_value") in tuple(call.initial_metadata())
    assert (ECHO_TRAILING, b"\xab\xab\xab") in tuple(call.trailing_metadata())
    target.server_call(sent, "FullDuplexCall")


def test_status_code_and_message(target):
    status = messages_pb2.EchoStatus(code=2, message="test status message")

    # 1. UnaryCall.
    sent = Sent.new()
    err = rpc_error(
        target.stub.UnaryCall,
        messages_pb2.SimpleRequest(response_status=status),
        metadata=sent.metadata,
        timeout=TIMEOUT,
    )
    assert err.code().value[0] == 2 and err.code() == grpc.StatusCode.UNKNOWN
    assert err.details() == "test status message"
    target.server_call(sent, "UnaryCall")

    # 2. FullDuplexCall, then half-close.
    sent = Sent.new()
    request = messages_pb2.StreamingOutputCallRequest(response_status=status)
    err = rpc_error(target.stub.FullDuplexCall, iter([request]), metadata=sent.metadata, timeout=TIMEOUT)
    assert err.code().value[0] == 2
    assert err.details() == "test status message"
    target.server_call(sent, "FullDuplexCall")


def test_special_status_message(target):
    sent = Sent.new()
    request = messages_pb2.SimpleRequest(response_status=messages_pb2.EchoStatus(code=2, message=SPECIAL_MESSAGE))
    err = rpc_error(target.stub.UnaryCall, request, metadata=sent.metadata, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert err.details() == SPECIAL_MESSAGE
    target.server_call(sent, "UnaryCall")


def test_unimplemented_method(target):
    sent = Sent.new()
    err = rpc_error(target.stub.UnimplementedCall, empty_pb2.Empty(), metadata=sent.metadata, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())
    target.server_call(sent, "UnimplementedCall")


def test_unimplemented_service(target):
    sent = Sent.new()
    stub = test_pb2_grpc.UnimplementedServiceStub(target.channel)
    err = rpc_error(stub.UnimplementedCall, empty_pb2.Empty(), metadata=sent.metadata, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())
    target.server_call(sent, "/grpc.testing.UnimplementedService/UnimplementedCall")


def test_cancel_after_begin(target):
    sent = Sent.new()
    release = threading.Event()
    try:
        future = target.stub.StreamingInputCall.future(
            blocking_requests(None, release), metadata=sent.metadata, timeout=TIMEOUT
        )
        future.cancel()
        assert future.cancelled()
        assert future.code() == grpc.StatusCode.CANCELLED
        # A call the server saw must end there too, and not as a half-closed request stream
        # (checked before the request generator is released, as below).
        target.assert_ended(sent)
        for call in target.server.calls_for(sent.call_id):
            target.assert_trace(sent, call)
        if target.server.tap.find(sent.call_id):  # the stream reached the server: reset there
            target.assert_reset_upstream(sent)
    finally:
        release.set()


def test_cancel_after_first_response(target):
    sent = Sent.new()
    release = threading.Event()
    first = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=31415)], payload=zeros(27182)
    )
    try:
        call = target.stub.FullDuplexCall(blocking_requests(first, release), metadata=sent.metadata, timeout=TIMEOUT)
        assert len(next(call).payload.body) == 31415
        call.cancel()
        with pytest.raises(grpc.RpcError):
            next(call)
        assert call.code() == grpc.StatusCode.CANCELLED
        # Checked while the request generator is still blocked: once released, the client's
        # sender thread could race the cancellation with a half-close of its own.
        seen = target.server_call(sent, "FullDuplexCall")
        target.assert_ended(sent)
        assert seen.request_stream_end() != "still reading"
        target.assert_reset_upstream(sent)
    finally:
        release.set()


def test_timeout_on_sleeping_server(target):
    sent = Sent.new()
    release = threading.Event()
    request = messages_pb2.StreamingOutputCallRequest(payload=zeros(27182))
    try:
        call = target.stub.FullDuplexCall(blocking_requests(request, release), metadata=sent.metadata, timeout=0.001)
        with pytest.raises(grpc.RpcError):
            list(call)
        assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (call.code(), call.details())
    finally:
        release.set()
    target.assert_ended(sent)
    for seen in target.server.calls_for(sent.call_id):
        target.assert_trace(sent, seen)


# --- the gateway's spans ---------------------------------------------------------------------


def test_gateway_spans_for_a_grpc_call(server, otlp, gateway):
    """The gateway's SERVER and CLIENT spans reach the OTLP receiver with the RPC attributes,
    linked client span → SERVER → CLIENT → the parent the upstream saw."""
    _, tap = gateway
    with grpc.insecure_channel(tap.address) as channel:
        sent = Sent.new()
        request = messages_pb2.SimpleRequest(response_status=messages_pb2.EchoStatus(code=5, message="nope"))
        err = rpc_error(test_pb2_grpc.TestServiceStub(channel).UnaryCall, request, metadata=sent.metadata, timeout=TIMEOUT)
        assert err.code() == grpc.StatusCode.NOT_FOUND
    (call,) = wait_for(lambda: server.calls_for(sent.call_id), 5.0, "the server's call")
    _, upstream_parent = parse_traceparent(call.get("traceparent"))
    spans = wait_for(
        lambda: (s := [s for s in otlp.snapshot() if s.trace_id == sent.trace_id]) and len(s) >= 2 and s,
        10.0,
        "the gateway's spans",
    )
    server_span = next(s for s in spans if s.kind == SERVER)
    client_span = next(s for s in spans if s.kind == CLIENT)
    assert server_span.parent_span_id == sent.span_id
    assert client_span.parent_span_id == server_span.span_id
    assert client_span.span_id == upstream_parent
    for span in (server_span, client_span):
        assert span.attributes.get("rpc.system") == "grpc", span.attributes
        assert span.attributes.get("rpc.service") == "grpc.testing.TestService"
        assert span.attributes.get("rpc.method") == "UnaryCall"
    assert server_span.attributes.get("rpc.grpc.status_code") == 5


# --- a Node (@grpc/grpc-js) client -------------------------------------------------------------

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_CASES = ["empty_unary", "large_unary", "server_streaming", "ping_pong", "custom_metadata", "status_code_and_message"]


def npm_ci():
    """`npm ci` once; node_modules is reused while package-lock.json is older than it."""
    modules = NODE_DIR / "node_modules"
    stamp = modules / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= (NODE_DIR / "package-lock.json").stat().st_mtime:
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("route", ["direct", "gateway"])
def test_node_grpc_js_client(route, server, request):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the @grpc/grpc-js client (not found on PATH)")
    npm_ci()
    address = server.address if route == "direct" else request.getfixturevalue("gateway")[1].address
    result = subprocess.run(
        ["node", str(NODE_DIR / "interop_client.js"), address, *NODE_CASES],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    results = {r["case"]: r for r in lines}
    assert list(results) == NODE_CASES, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    failed = {name: r.get("error") for name, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert result.returncode == 0, result.stderr
    # Every call reached the server with the trace continued.
    for r in lines:
        for call_id, trace_id, span_id in r["calls"]:
            (seen,) = wait_for(lambda: server.calls_for(call_id), 5.0, f"the server to see {r['case']}")
            got = parse_traceparent(seen.get("traceparent"))
            assert got, f"{r['case']}: no traceparent at the server: {seen.metadata}"
            assert got[0] == trace_id
            if route == "gateway":
                assert got[1] != span_id, f"{r['case']}: the client's span reached the server as parent"
            else:
                assert got[1] == span_id
