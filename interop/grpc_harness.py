"""Real peers for the gRPC interop suite: Python code generated from proto/grpc/testing with
grpc_tools.protoc, a grpcio server implementing grpc's interop `TestService` (the server
features of grpc's interop test descriptions), an HTTP/2 wire tap, and the gateway config.

The wire tap is a byte-for-byte TCP relay that also decodes the HTTP/2 it carries (frames with
hyperframe, header blocks with hpack). grpcio hides two facts the interop descriptions rely on,
the compressed flag of each length-prefixed message and `grpc-encoding`; the tap reads them off
the wire without changing a byte. The server also uses it for the CompressedRequest feature.
"""

from __future__ import annotations

import importlib
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from hpack import Decoder
from hyperframe.frame import ContinuationFrame, DataFrame, Frame, HeadersFrame, RstStreamFrame

from harness import REPO

PROTO_ROOT = REPO / "proto"
PROTO_FILES = ("grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto")
GEN_DIR = Path(__file__).resolve().parent / ".gen_grpc"
# The generated modules live in this package, not in `grpc.testing`: that name belongs to
# grpcio's own `grpc` package, so protoc's `from grpc.testing import ...` lines are rewritten.
GEN_PACKAGE = "interop_grpc_testing"

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
CALL_ID = "x-interop-call"  # our own per-call id, so server and tap records can be found
CODES = {code.value[0]: code for code in grpc.StatusCode}


# --- generated code --------------------------------------------------------------------------


def generate():
    """Runs grpc_tools.protoc into interop/.gen_grpc/ when the protos are newer than the last
    run, and returns the (empty_pb2, messages_pb2, test_pb2, test_pb2_grpc) modules."""
    package = GEN_DIR / GEN_PACKAGE
    stamp = package / ".generated"
    newest = max((PROTO_ROOT / p).stat().st_mtime for p in PROTO_FILES)
    if not stamp.exists() or stamp.stat().st_mtime < newest:
        from grpc_tools import protoc

        GEN_DIR.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=GEN_DIR))
        try:
            args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={work}", f"--grpc_python_out={work}"]
            if protoc.main(args + list(PROTO_FILES)) != 0:
                raise RuntimeError(f"grpc_tools.protoc failed on {PROTO_FILES}")
            staged = work / GEN_PACKAGE
            staged.mkdir()
            for module in (work / "grpc" / "testing").glob("*.py"):
                text = module.read_text().replace("from grpc.testing import ", f"from {GEN_PACKAGE} import ")
                (staged / module.name).write_text(text)
            (staged / "__init__.py").write_text("")
            (staged / ".generated").write_text("")
            shutil.rmtree(package, ignore_errors=True)
            staged.rename(package)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if str(GEN_DIR) not in sys.path:
        sys.path.insert(0, str(GEN_DIR))
    names = ("empty_pb2", "messages_pb2", "test_pb2", "test_pb2_grpc")
    return tuple(importlib.import_module(f"{GEN_PACKAGE}.{name}") for name in names)


empty_pb2, messages_pb2, test_pb2, test_pb2_grpc = generate()


# --- the HTTP/2 wire tap ---------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class TapStream:
    """One HTTP/2 stream as it crossed the tap. `request_messages`/`response_messages` hold
    (compressed flag, length) of each gRPC length-prefixed message."""

    connection: int
    stream_id: int
    request_headers: list = field(default_factory=list)
    request_trailers: list = field(default_factory=list)
    response_headers: list = field(default_factory=list)
    response_trailers: list = field(default_factory=list)
    request_messages: list = field(default_factory=list)
    response_messages: list = field(default_factory=list)
    resets: list = field(default_factory=list)  # (direction, error code)
    # "> HEADERS", "< DATA 5 END_STREAM", ...: exact order per direction, interleaving approximate
    events: list = field(default_factory=list)
    request_ended: bool = False
    response_ended: bool = False

    def header(self, name: str, which: str = "request_headers"):
        for k, v in getattr(self, which):
            if k == name:
                return v
        return None


class _Direction:
    """Parses one direction of one connection: frames, header blocks, gRPC message prefixes."""

    def __init__(self, tap: H2Tap, connection: int, client_side: bool):
        self.tap = tap
        self.connection = connection
        self.client_side = client_side  # bytes from the client (requests)
        self.buffer = bytearray()
        self.preface_left = len(PREFACE) if client_side else 0
        self.decoder = Decoder(max_header_list_size=1 << 24)
        self.decoder.max_allowed_table_size = 1 << 24
        self.block: tuple[int, bytearray, bool] | None = None  # (stream, fragments, END_STREAM)
        self.pending: dict[int, bytearray] = {}  # unparsed gRPC message bytes per stream
        self.skip: dict[int, int] = {}  # message body bytes still to pass per stream
        self.broken: str | None = None

    def feed(self, data: bytes):
        if self.broken:
            return
        try:
            self._feed(data)
        except Exception as exc:  # the relay goes on; the record says where decoding stopped
            self.broken = repr(exc)
            self.tap.errors.append(f"connection {self.connection}: {exc!r}")

    def _feed(self, data: bytes):
        self.buffer += data
        if self.preface_left:
            take = min(self.preface_left, len(self.buffer))
            del self.buffer[:take]
            self.preface_left -= take
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buffer[:9])))
            if len(self.buffer) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self.buffer[9 : 9 + length])))
            del self.buffer[: 9 + length]
            self._frame(frame)

    def _frame(self, frame):
        if isinstance(frame, HeadersFrame):
            self.block = (frame.stream_id, bytearray(frame.data), "END_STREAM" in frame.flags)
            if "END_HEADERS" in frame.flags:
                self._headers()
        elif isinstance(frame, ContinuationFrame) and self.block is not None:
            self.block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._headers()
        elif isinstance(frame, DataFrame):
            self._data(frame.stream_id, bytes(frame.data), "END_STREAM" in frame.flags)
        elif isinstance(frame, RstStreamFrame):
            with self.tap.lock:
                s = self._stream(frame.stream_id)
                s.resets.append(("client" if self.client_side else "server", frame.error_code))
                s.events.append(f"{self._arrow} RST_STREAM {frame.error_code}")

    @property
    def _arrow(self) -> str:
        return ">" if self.client_side else "<"

    def _headers(self):
        stream_id, block, end = self.block
        self.block = None
        headers = []
        for k, v in self.decoder.decode(bytes(block), raw=True):
            name = k.decode("latin-1")
            headers.append((name, v if name.endswith("-bin") else v.decode("latin-1")))
        with self.tap.lock:
            s = self._stream(stream_id)
            s.events.append(f"{self._arrow} HEADERS" + (" END_STREAM" if end else ""))
            if self.client_side:
                if not s.request_headers:
                    s.request_headers = headers
                else:
                    s.request_trailers = headers
                s.request_ended |= end
            else:
                # A second HEADERS, or a first one ending the stream (trailers-only), is trailers.
                if not s.response_headers and not end:
                    s.response_headers = headers
                else:
                    s.response_trailers = headers
                s.response_ended |= end

    def _data(self, stream_id: int, data: bytes, end: bool):
        pending = self.pending.setdefault(stream_id, bytearray())
        skip = self.skip.get(stream_id, 0)
        view = memoryview(data)
        if skip:
            passed = min(skip, len(view))
            view = view[passed:]
            skip -= passed
        pending += view
        found = []
        while not skip and len(pending) >= 5:
            flag, length = pending[0], int.from_bytes(pending[1:5], "big")
            found.append((flag, length))
            del pending[:5]
            passed = min(length, len(pending))
            del pending[:passed]
            skip = length - passed
        self.skip[stream_id] = skip
        with self.tap.lock:
            s = self._stream(stream_id)
            s.events.append(f"{self._arrow} DATA {len(data)}" + (" END_STREAM" if end else ""))
            (s.request_messages if self.client_side else s.response_messages).extend(found)
            if self.client_side:
                s.request_ended |= end
            else:
                s.response_ended |= end

    def _stream(self, stream_id: int) -> TapStream:
        key = (self.connection, stream_id)
        s = self.tap.index.get(key)
        if s is None:
            s = TapStream(connection=self.connection, stream_id=stream_id)
            self.tap.index[key] = s
            self.tap.streams.append(s)
        return s


class H2Tap:
    """A TCP relay on 127.0.0.1:0 to `target` that records the HTTP/2 streams it carries.
    Every byte is forwarded as received; a stream's bytes are recorded before they are
    forwarded, so a peer that has read a message can already find its record."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.lock = threading.Lock()
        self.streams: list[TapStream] = []
        self.index: dict = {}
        self.errors: list[str] = []
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            for s in (downstream, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                number = self.connections
                self.sockets += [downstream, upstream]
            requests = _Direction(self, number, client_side=True)
            responses = _Direction(self, number, client_side=False)
            threading.Thread(target=self._pump, args=(downstream, upstream, requests), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, responses), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, parser: _Direction):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                parser.feed(data)
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def find(self, call_id: str) -> list[TapStream]:
        with self.lock:
            return [s for s in self.streams if s.header(CALL_ID) == call_id]

    def stop(self):
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass


# --- the interop server ----------------------------------------------------------------------


@dataclass
class ServerCall:
    """What the server saw of one call."""

    method: str
    metadata: list  # (key, value) as received; `-bin` values are bytes
    call_id: str | None
    time_remaining: float | None = None  # the deadline left when the handler started
    ended: threading.Event = field(default_factory=threading.Event)
    half_closed: bool = False  # the request stream ended cleanly (the client's END_STREAM)
    request_stream_broken: bool = False  # reading the request stream failed (cancellation)
    requests_done: threading.Event = field(default_factory=threading.Event)  # either of the two

    def request_stream_end(self, within: float = 5.0) -> str:
        """How the handler's reading of the request stream ended: "half-closed", "broken", or
        "still reading" when it had not ended `within` seconds. The gRPC core may signal the
        call's end before the handler thread has seen it, hence the wait."""
        if not self.requests_done.wait(within):
            return "still reading"
        return "broken" if self.request_stream_broken else "half-closed"

    def get(self, key: str):
        for k, v in self.metadata:
            if k == key:
                return v
        return None


def _zeros(n: int):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=bytes(n))


class _Recorder(grpc.ServerInterceptor):
    """Records every call (also those to methods no handler serves) and hooks each handler
    so the record learns the deadline left and when the call ended."""

    def __init__(self, server: InteropServer):
        self.server = server

    def intercept_service(self, continuation, details):
        metadata = list(details.invocation_metadata)
        call_id = next((v for k, v in metadata if k == CALL_ID), None)
        record = ServerCall(method=details.method, metadata=metadata, call_id=call_id)
        with self.server.lock:
            self.server.calls.append(record)
        handler = continuation(details)
        if handler is None:
            record.ended.set()
            return None

        def watched(requests):
            try:
                yield from requests
            except grpc.RpcError:
                record.request_stream_broken = True
                raise
            else:
                record.half_closed = True
            finally:
                record.requests_done.set()

        def hooked(behaviour, streaming_requests: bool):
            def run(request, context):
                record.time_remaining = context.time_remaining()
                # add_callback refuses (False) once the call has already ended, e.g. a 1 ms
                # deadline that passed before this handler ran: then it has ended.
                if not context.add_callback(record.ended.set):
                    record.ended.set()
                return behaviour(watched(request) if streaming_requests else request, context)

            return run

        for kind, factory in (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        ):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return factory(
                    hooked(behaviour, kind.startswith("stream_")),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


class _TestService(test_pb2_grpc.TestServiceServicer):
    """grpc's interop server features: EmptyCall, UnaryCall, StreamingInputCall,
    StreamingOutputCall, FullDuplexCall, HalfDuplexCall, CompressedRequest (via the tap),
    CompressedResponse, Echo Status, Echo Metadata, ResponseParameters.interval_us; and
    UnimplementedCall answers UNIMPLEMENTED."""

    def __init__(self, server: InteropServer):
        self.server = server

    # features shared by the methods

    @staticmethod
    def _echo_metadata(context):
        md = {k: v for k, v in context.invocation_metadata()}
        if ECHO_INITIAL in md:
            context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
        if ECHO_TRAILING in md:
            context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))

    @staticmethod
    def _echo_status(request, context):
        if request.HasField("response_status") and request.response_status.code != 0:
            status = request.response_status
            context.abort(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)

    def _request_compressed(self, context, index: int) -> bool | None:
        """The compressed flag of request message `index` as it reached this server."""
        call_id = next((v for k, v in context.invocation_metadata() if k == CALL_ID), None)
        if call_id is None:
            return None
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for stream in self.server.tap.find(call_id):
                if len(stream.request_messages) > index:
                    return bool(stream.request_messages[index][0])
            time.sleep(0.01)
        return None

    def _expect_compressed(self, expect, context, index: int = 0):
        if not expect.value:
            return
        flag = self._request_compressed(context, index)
        if flag is None:
            context.abort(grpc.StatusCode.INTERNAL, f"the wire tap has no record of request message {index}")
        if not flag:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Expected compressed request, got an uncompressed one")

    @staticmethod
    def _responses(params, context):
        if any(p.compressed.value for p in params):
            context.set_compression(grpc.Compression.Gzip)
        for p in params:
            if p.interval_us:
                time.sleep(p.interval_us / 1e6)
            if not p.compressed.value:
                context.disable_next_message_compression()
            yield messages_pb2.StreamingOutputCallResponse(payload=_zeros(p.size))

    # the methods

    def EmptyCall(self, request, context):  # noqa: N802
        self._echo_metadata(context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):  # noqa: N802
        self._expect_compressed(request.expect_compressed, context)
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        else:
            context.set_compression(grpc.Compression.NoCompression)
        self._echo_metadata(context)
        self._echo_status(request, context)
        return messages_pb2.SimpleResponse(payload=_zeros(request.response_size))

    def StreamingOutputCall(self, request, context):  # noqa: N802
        self._echo_metadata(context)
        self._echo_status(request, context)
        yield from self._responses(request.response_parameters, context)

    def StreamingInputCall(self, request_iterator, context):  # noqa: N802
        self._echo_metadata(context)
        total = 0
        for index, request in enumerate(request_iterator):
            self._expect_compressed(request.expect_compressed, context, index)
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):  # noqa: N802
        self._echo_metadata(context)
        for request in request_iterator:
            self._echo_status(request, context)
            yield from self._responses(request.response_parameters, context)

    def HalfDuplexCall(self, request_iterator, context):  # noqa: N802
        self._echo_metadata(context)
        requests = list(request_iterator)
        for request in requests:
            self._echo_status(request, context)
            yield from self._responses(request.response_parameters, context)

    def UnimplementedCall(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UnimplementedCall is not implemented")


class InteropServer:
    """The interop TestService on grpcio (a thread pool server on 127.0.0.1:0), behind an
    H2Tap: `address` is the tap's, which clients and the gateway dial."""

    def __init__(self, workers: int = 16):
        self.lock = threading.Lock()
        self.calls: list[ServerCall] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[_Recorder(self)])
        test_pb2_grpc.add_TestServiceServicer_to_server(_TestService(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.tap = H2Tap(f"127.0.0.1:{self.port}")

    @property
    def address(self) -> str:
        return self.tap.address

    def calls_for(self, call_id: str) -> list[ServerCall]:
        with self.lock:
            return [c for c in self.calls if c.call_id == call_id]

    def stop(self):
        self.server.stop(grace=None)
        self.tap.stop()


# --- trace context from the client -----------------------------------------------------------


@dataclass
class Sent:
    """The metadata a test call carried: a W3C traceparent with a fresh random trace id and
    our call id."""

    call_id: str
    trace_id: str
    span_id: str
    metadata: list

    @classmethod
    def new(cls, *extra) -> Sent:
        trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        call_id = uuid.uuid4().hex
        md = [("traceparent", f"00-{trace_id}-{span_id}-01"), (CALL_ID, call_id), *extra]
        return cls(call_id=call_id, trace_id=trace_id, span_id=span_id, metadata=md)


TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value) -> tuple[str, str] | None:
    m = TRACEPARENT.match(value or "")
    return (m.group(1), m.group(2)) if m else None


# --- the gateway -----------------------------------------------------------------------------


def grpc_config(upstream_addr: str, otlp_endpoint: str) -> str:
    """One HTTP listener (h2c carries gRPC) routing everything to a gRPC upstream."""
    return f"""
[admin]
listen = ""
[telemetry]
service_name = "tracebridge"
otlp_endpoint = "{otlp_endpoint}"
[propagation]
extract = ["w3c", "grpc-trace-bin", "jaeger", "b3"]
inject = ["w3c"]
on_missing = "start"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
upstream = "grpc-up"
timeout = "30s"
[[upstreams]]
name = "grpc-up"
protocol = "grpc"
endpoints = ["{upstream_addr}"]
"""
