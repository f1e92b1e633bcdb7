"""Real Thrift peers for the interop suite: Python code generated from thrift/interop.thrift
at test time, Python `thrift` 0.25.0 servers (THeader and framed binary) that record what
each call carried, and generated clients for every dialect tracebridge must speak.

Nothing here mocks the gateway or the Thrift library: the servers and clients are the
PyPI `thrift` package's own transports and protocols.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolFactory
from thrift.protocol.TCompactProtocol import TCompactProtocol, TCompactProtocolFactory
from thrift.protocol.THeaderProtocol import THeaderProtocol, THeaderProtocolFactory
from thrift.server.TServer import TThreadedServer
from thrift.Thrift import TMessageType
from thrift.transport import TSocket, TTransport
from thrift.transport.THeaderTransport import (
    THeaderClientType,
    THeaderSubprotocolID,
    THeaderTransformID,
)

from harness import REPO, Gateway

IDL = REPO / "thrift" / "interop.thrift"
GEN_DIR = Path(__file__).resolve().parent / ".gen"
PACKAGE = "interop_thrift"

CLIENT_TYPE_NAMES = {
    THeaderClientType.HEADERS: "headers",
    THeaderClientType.FRAMED_BINARY: "framed_binary",
    THeaderClientType.UNFRAMED_BINARY: "unframed_binary",
    THeaderClientType.FRAMED_COMPACT: "framed_compact",
    THeaderClientType.UNFRAMED_COMPACT: "unframed_compact",
}
ALL_CLIENT_TYPES = tuple(CLIENT_TYPE_NAMES)
SOCKET_TIMEOUT_MS = 10_000


# --- code generation -----------------------------------------------------------------------


def thrift_compiler() -> str:
    found = os.environ.get("THRIFT") or shutil.which("thrift")
    if not found:
        raise RuntimeError("the Thrift compiler is not on PATH (Debian: apt-get install -y thrift-compiler)")
    return found


def _generated_is_fresh(out: Path) -> bool:
    stamp = out / PACKAGE / "ttypes.py"
    return stamp.exists() and stamp.stat().st_mtime >= IDL.stat().st_mtime


def generate(out: Path = GEN_DIR) -> Path:
    """Runs `thrift --gen py` into `out` unless the code there is newer than the IDL, puts
    `out` on sys.path, and returns it. `out` ignores itself in git (it is never committed)."""
    if not _generated_is_fresh(out):
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run([thrift_compiler(), "--gen", "py", "-out", str(tmp), str(IDL)], check=True)
        (tmp / ".gitignore").write_text("*\n")
        shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:  # another process generated it first
            shutil.rmtree(tmp, ignore_errors=True)
            if not _generated_is_fresh(out):
                raise
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return out


def load():
    """(Interop service module, ttypes module), generating the code first if needed."""
    generate()
    service = importlib.import_module(f"{PACKAGE}.Interop")
    ttypes = importlib.import_module(f"{PACKAGE}.ttypes")
    return service, ttypes


Interop, ttypes = load()


def sample_everything(seed: int = 0):
    """A fully populated `Everything`: every optional field set, extreme scalar values,
    non-ASCII text, binary that is not UTF-8, every container non-empty. Deterministic
    for a given seed (used by the fixtures with seed 0)."""
    T = ttypes
    return T.Everything(
        flag=True,
        tiny=-128,
        small=-32768,
        medium=-(2**31),
        large=2**63 - 1 - seed,
        ratio=-1.25e-300,
        text=f"héllo wörld ☃ {seed}",
        blob=bytes(range(256)) + b"\xff\xfe\x00",
        maybe_flag=False,
        maybe_tiny=127,
        maybe_small=32767,
        maybe_medium=2**31 - 1,
        maybe_large=-(2**63),
        maybe_ratio=3.141592653589793,
        maybe_text="",
        maybe_blob=b"",
        default_flag=False,
        default_medium=-7,
        default_text="not the default",
        default_ratio=float("inf"),
        color=T.Color.BLUE,
        maybe_color=T.Color.RED,
        inner=T.Inner(label="inner", weight=-1, color=T.Color.RED),
        maybe_inner=T.Inner(label="maybe", weight=None, color=T.Color.GREEN),
        inners=[T.Inner(label=f"i{n}", weight=n * 1000, color=T.Color.BLUE) for n in range(3)],
        tags={"alpha", "beta", "gamma", "δέλτα"},
        series={"empty": [], "one": [1], "mixed": [-(2**63), 0, 2**63 - 1, 300, -300]},
        nested={0: {}, -1: {"k": b"\x00\x01"}, 2**31 - 1: {"a": b"A", "b": b"\xff" * 20}},
        far_field="far away",
    )


# --- servers -------------------------------------------------------------------------------


@dataclass
class SeenCall:
    """One call as the Python server saw it."""

    method: str
    message_type: int  # TMessageType: 1 CALL, 4 ONEWAY
    seqid: int
    client_type: str  # "headers", "framed_binary", ... (THeader server); the server kind otherwise
    headers: dict  # THeader info headers, decoded (UTF-8, errors replaced); {} without THeader
    raw_headers: dict  # the same as bytes -> bytes
    protocol: str = ""  # "binary" | "compact"
    header_seqid: int | None = None  # the THeader SEQUENCE ID field
    flags: int | None = None  # the THeader FLAGS field
    args: tuple = ()

    @property
    def oneway(self) -> bool:
        return self.message_type == TMessageType.ONEWAY


class _Current(threading.local):
    iprot = None
    begin = None


class _Handler:
    def __init__(self, server: "ThriftUpstream"):
        self.server = server

    def _record(self, method, *args) -> SeenCall:
        return self.server._record(method, args)

    def echo(self, e):
        self._record("echo", e)
        return e

    def ping(self):
        self._record("ping")

    def fail(self, why):
        self._record("fail", why)
        raise ttypes.Oops(message=f"failed: {why}", code=418)

    def fire(self, note):
        self._record("fire", note)

    def whoami(self):
        seen = self._record("whoami")
        return ttypes.TraceSeen(headers=dict(seen.headers), client_type=seen.client_type)


class _Processor(Interop.Processor):
    """Remembers, per connection thread, the input protocol and message header of the call
    being processed so the handler can record what arrived with it."""

    def __init__(self, handler, current: _Current):
        super().__init__(handler)
        self._current = current
        self.on_message_begin(lambda name, mtype, seqid: setattr(current, "begin", (name, mtype, seqid)))

    def process(self, iprot, oprot):
        self._current.iprot = iprot
        self._current.begin = None
        return super().process(iprot, oprot)


class ThriftUpstream:
    """A Python Thrift server on 127.0.0.1:0 in background threads, recording every call.

    kind = "header": THeaderProtocolFactory (iprot is oprot), accepting every client type by
    default so a wrong dialect from the gateway is recorded (`client_type`) instead of
    silently dropped; pass `allowed=(THeaderClientType.HEADERS,)` for a strict server.
    kind = "framed": TFramedTransport + TBinaryProtocol (no headers possible).
    """

    def __init__(self, kind: str = "header", allowed=ALL_CLIENT_TYPES):
        if kind == "header":
            transport_factory = TTransport.TTransportFactoryBase()
            protocol_factory = THeaderProtocolFactory(allowed_client_types=allowed)
        elif kind == "framed":
            transport_factory = TTransport.TFramedTransportFactory()
            protocol_factory = TBinaryProtocolFactory()
        else:
            raise ValueError(f"unknown upstream kind {kind!r}")
        self.kind = kind
        self.calls: list[SeenCall] = []
        self._lock = threading.Lock()
        self._current = _Current()
        self._connections: list = []
        self._closing = False
        self.server_socket = TSocket.TServerSocket(host="127.0.0.1", port=0)
        self.server_socket.listen()
        self.port = self.server_socket.handle.getsockname()[1]
        self.server = TThreadedServer(
            _Processor(_Handler(self), self._current),
            self.server_socket,
            transport_factory,
            protocol_factory,
            daemon=True,
        )
        self.thread = threading.Thread(target=self._serve, name=f"thrift-{kind}-{self.port}", daemon=True)
        self.thread.start()

    # The accept loop of TThreadedServer.serve, without its listen() (already bound, to learn
    # the port) and with a way out.
    def _serve(self):
        while not self._closing:
            try:
                client = self.server_socket.accept()
            except Exception:
                if self._closing:
                    return
                continue
            if not client:
                continue
            with self._lock:
                self._connections.append(client)
            threading.Thread(target=self.server.handle, args=(client,), daemon=True).start()

    def _record(self, method: str, args: tuple) -> SeenCall:
        iprot = self._current.iprot
        begin = self._current.begin or (method, None, None)
        trans = getattr(iprot, "trans", None)
        raw = {}
        header_seqid = flags = None
        if self.kind == "header":
            client_type = CLIENT_TYPE_NAMES.get(trans._client_type, str(trans._client_type))
            protocol = "compact" if trans.protocol_id == THeaderSubprotocolID.COMPACT else "binary"
            if trans._client_type == THeaderClientType.HEADERS:
                raw = dict(trans.get_headers())
                header_seqid, flags = trans.sequence_id, trans.flags
        else:
            client_type, protocol = "framed_binary", "binary"
        seen = SeenCall(
            method=method,
            message_type=begin[1],
            seqid=begin[2],
            client_type=client_type,
            headers={k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()},
            raw_headers=raw,
            protocol=protocol,
            header_seqid=header_seqid,
            flags=flags,
            args=args,
        )
        with self._lock:
            self.calls.append(seen)
        return seen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def snapshot(self) -> list[SeenCall]:
        with self._lock:
            return list(self.calls)

    def methods(self) -> list[str]:
        return [c.method for c in self.snapshot()]

    def stop(self):
        self._closing = True
        try:
            self.server_socket.handle.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server_socket.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for c in connections:
            try:
                c.handle.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
            c.close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --- clients -------------------------------------------------------------------------------


def _socket(address: str) -> TSocket.TSocket:
    host, port = split_address(address)
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(SOCKET_TIMEOUT_MS)
    return sock


def _connect(transport, protocol, header=None):
    transport.open()
    client = Interop.Client(protocol)
    # Extra attributes on the generated client: what to close, and (THeader only) where
    # the info headers of the next call are set.
    client.transport = transport
    client.header = header
    return client


def header_client(address: str, protocol: str = "binary", zlib: bool = False):
    """A THeader client (THeaderTransport over a TSocket): binary or compact subprotocol,
    optionally with the zlib transform on every request it writes."""
    sub = THeaderSubprotocolID.COMPACT if protocol == "compact" else THeaderSubprotocolID.BINARY
    sock = _socket(address)
    proto = THeaderProtocol(sock, allowed_client_types=(THeaderClientType.HEADERS,), default_protocol=sub)
    if zlib:
        proto.add_transform(THeaderTransformID.ZLIB)
    return _connect(proto.trans, proto, header=proto.trans)


def header_binary_client(address: str):
    return header_client(address, "binary")


def header_compact_client(address: str):
    return header_client(address, "compact")


def header_compact_zlib_client(address: str):
    return header_client(address, "compact", zlib=True)


def framed_binary_client(address: str):
    trans = TTransport.TFramedTransport(_socket(address))
    return _connect(trans, TBinaryProtocol(trans))


def unframed_compact_client(address: str):
    trans = TTransport.TBufferedTransport(_socket(address))
    return _connect(trans, TCompactProtocol(trans))


CLIENTS = {
    "header-binary": header_binary_client,
    "header-compact": header_compact_client,
    "header-compact-zlib": header_compact_zlib_client,
    "framed-binary": framed_binary_client,
    "unframed-compact": unframed_compact_client,
}


def set_headers(client, headers: dict):
    """Sets THeader info headers for the client's NEXT call only (the Python THeader
    transport clears its write headers after every frame it sends)."""
    if client.header is None:
        raise ValueError("not a THeader client: info headers are impossible")
    for k, v in headers.items():
        client.header.set_header(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)


def reply_headers(client) -> dict:
    """Info headers of the last reply a THeader client read ({} otherwise)."""
    if client.header is None:
        return {}
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in client.header.get_headers().items()}


def close(client):
    client.transport.close()


# --- gateway -------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def thrift_address(gateway: Gateway, listener: str = "rpc") -> str:
    """The `IP:PORT` of a thrift listener, from its `listening name=... address=...` line."""
    return gateway.addresses[listener]


def thrift_config(
    upstream_addr: str,
    otlp_endpoint: str,
    transport: str = "header",
    protocol: str = "binary",
    inject=("w3c", "x-trace-raw"),
    on_missing: str = "start",
) -> str:
    injected = ", ".join(f'"{i}"' for i in inject)
    return f"""[admin]
listen = ""
[telemetry]
service_name = "tracebridge"
otlp_endpoint = "{otlp_endpoint}"
[propagation]
extract = ["w3c", "jaeger", "b3", "x-trace-raw"]
inject = [{injected}]
on_missing = "{on_missing}"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
listener = "rpc"
upstream = "up"
[[upstreams]]
name = "up"
protocol = "thrift"
transport = "{transport}"
thrift_protocol = "{protocol}"
endpoints = ["{upstream_addr}"]
"""
