"""Real peers for the interop suite: an OTLP/gRPC receiver, a W3C-instrumented HTTP upstream,
and a tracebridge process started from a config on port 0.

Nothing here mocks the gateway: the tests drive the real binary with real OpenTelemetry
SDK clients and read what the real upstream and the real OTLP receiver saw.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

REPO = Path(__file__).resolve().parent.parent


def gateway_binary() -> str:
    return os.environ.get("TRACEBRIDGE_BIN", str(REPO / "target" / "debug" / "tracebridge"))


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Polls `predicate` until it returns something truthy, bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# --- OTLP receiver -------------------------------------------------------------------------


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind: 2 SERVER, 3 CLIENT
    service_name: str
    attributes: dict


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: list, lock: threading.Lock):
        self.sink = sink
        self.lock = lock

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for rs in request.resource_spans:
                service = ""
                for attr in rs.resource.attributes:
                    if attr.key == "service.name":
                        service = attr.value.string_value
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attrs = {}
                        for a in s.attributes:
                            v = a.value
                            attrs[a.key] = v.string_value if v.HasField("string_value") else v.int_value
                        self.sink.append(
                            ReceivedSpan(
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                name=s.name,
                                kind=s.kind,
                                service_name=service,
                                attributes=attrs,
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """A real OTLP/gRPC trace receiver (grpcio + opentelemetry-proto) on 127.0.0.1:0."""

    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self.spans, self._lock), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def stop(self):
        self.server.stop(grace=None)


class OtlpHttpReceiver:
    """A real OTLP/HTTP receiver: POST /v1/traces with an `application/x-protobuf`
    ExportTraceServiceRequest, decoded with opentelemetry-proto."""

    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        lock = threading.Lock()
        self._lock = lock
        sink, paths = self.spans, self.paths
        service = _TraceService(sink, lock)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                paths.append(self.path)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                service.Export(request, None)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- W3C upstream --------------------------------------------------------------------------


@dataclass
class SeenRequest:
    path: str
    headers: dict
    trace_id: str
    parent_span_id: str
    sampled: bool
    own_span_id: str


class W3cUpstream:
    """An HTTP server instrumented with the OpenTelemetry SDK and the W3C propagator: it
    extracts the incoming context, starts its own SERVER span as a child, and records what
    it saw."""

    def __init__(self):
        self.seen: list[SeenRequest] = []
        provider = TracerProvider()
        tracer = provider.get_tracer("interop-upstream")
        propagator = TraceContextTextMapPropagator()
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                headers = {k.lower(): v for k, v in self.headers.items()}
                ctx = propagator.extract(headers)
                parent = trace.get_current_span(ctx).get_span_context()
                with tracer.start_as_current_span("upstream", context=ctx, kind=trace.SpanKind.SERVER) as span:
                    own = span.get_span_context()
                    seen.append(
                        SeenRequest(
                            path=self.path,
                            headers=headers,
                            trace_id=format(parent.trace_id, "032x") if parent.is_valid else "",
                            parent_span_id=format(parent.span_id, "016x") if parent.is_valid else "",
                            sampled=bool(parent.trace_flags.sampled),
                            own_span_id=format(own.span_id, "016x"),
                        )
                    )
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- the gateway ---------------------------------------------------------------------------


@dataclass
class Gateway:
    process: subprocess.Popen
    addresses: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)

    def url(self, listener: str = "edge") -> str:
        return f"http://{self.addresses[listener]}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait (bounded) for exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_gateway(config_text: str, tmp: Path | None = None, timeout: float = 15.0) -> Gateway:
    """Writes the config, starts `tracebridge run`, and waits for its `ready` line."""
    directory = tmp or Path(tempfile.mkdtemp())
    path = directory / "tracebridge.toml"
    path.write_text(config_text)
    process = subprocess.Popen(
        [gateway_binary(), "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gateway = Gateway(process=process)
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            raise TimeoutError(f"gateway not ready after {timeout}s: {gateway.lines}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"gateway exited with {process.wait()}: {gateway.lines}")
        gateway.lines.append(line)
        if line.startswith("listening "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            gateway.addresses[fields["name"]] = fields["address"]
        if line == "ready":
            return gateway


def http_config(
    upstream: str,
    otlp_endpoint: str | None,
    on_missing: str = "start",
    inject: str = '"w3c"',
    otlp_protocol: str = "grpc",
) -> str:
    otlp = f'otlp_endpoint = "{otlp_endpoint}"\notlp_protocol = "{otlp_protocol}"' if otlp_endpoint else ""
    return f"""
[admin]
listen = "127.0.0.1:0"
[telemetry]
service_name = "tracebridge"
{otlp}
sampler = {{ kind = "parent_ratio", ratio = 1.0 }}
[propagation]
extract = ["w3c", "jaeger", "b3", "grpc-trace-bin", "x-trace-raw"]
inject = [{inject}]
on_missing = "{on_missing}"
[shutdown]
drain_timeout = "5s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
match = {{ path_prefix = "/" }}
upstream = "svc"
[[upstreams]]
name = "svc"
protocol = "http"
endpoints = ["{upstream}"]
"""
