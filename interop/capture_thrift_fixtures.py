"""Captures golden Thrift wire fixtures from the Python `thrift` 0.25.0 peers.

For every dialect, a generated `Interop` client writes a call (fixed `Everything` value,
fixed seqid, fixed info headers) into an in-memory transport: those bytes are
`<name>.req.bin`. The generated `Interop.Processor` of the Python server for that dialect
then reads exactly those bytes and writes its reply into another in-memory transport:
`<name>.rep.bin`. Each reply is read back by the client (the echo must equal the input) so
every fixture is a pair the Python library itself accepts. README.md is written from the
bytes (frame lengths, protocol ids, seqids, header keys, SHA-256).

    interop/.venv/bin/python interop/capture_thrift_fixtures.py            # (re)write tests/fixtures/thrift/
    interop/.venv/bin/python interop/capture_thrift_fixtures.py --check    # exit 1 if the files differ

Deterministic: fixed values and seqids; the process re-executes itself with
PYTHONHASHSEED=0 because the order of a Thrift `set<string>` on the wire is Python's set
iteration order, which depends on the string hash seed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    sys.exit(subprocess.call([sys.executable, *sys.argv]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import thrift  # noqa: E402
from thrift.protocol.TBinaryProtocol import TBinaryProtocol  # noqa: E402
from thrift.protocol.TCompactProtocol import TCompactProtocol  # noqa: E402
from thrift.protocol.THeaderProtocol import THeaderProtocol  # noqa: E402
from thrift.Thrift import TApplicationException, TMessageType, TType  # noqa: E402
from thrift.transport.THeaderTransport import (  # noqa: E402
    THeaderClientType,
    THeaderSubprotocolID,
    THeaderTransformID,
)
from thrift.transport.TTransport import (  # noqa: E402
    TBufferedTransport,
    TFramedTransport,
    TTransportBase,
)

from harness import REPO  # noqa: E402
from thrift_harness import ALL_CLIENT_TYPES, Interop, sample_everything, ttypes  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "thrift"
COMMAND = "interop/.venv/bin/python interop/capture_thrift_fixtures.py"

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


class Pipe(TTransportBase):
    """One direction in, one direction out, in memory: reads `inbound`, collects writes."""

    def __init__(self, inbound: bytes = b""):
        self._in = io.BytesIO(inbound)
        self._out = io.BytesIO()

    def isOpen(self):
        return True

    def open(self):
        pass

    def close(self):
        pass

    def read(self, sz):
        return self._in.read(sz)

    def write(self, buf):
        self._out.write(buf)

    def flush(self):
        pass

    def written(self) -> bytes:
        return self._out.getvalue()

    def unread(self) -> int:
        return len(self._in.getvalue()) - self._in.tell()


@dataclass(frozen=True)
class Dialect:
    transport: str  # header | framed | unframed
    protocol: str  # binary | compact
    zlib: bool = False

    def describe(self) -> str:
        if self.transport == "header":
            return f"THeader, {self.protocol} subprotocol" + (", zlib transform" if self.zlib else "")
        return f"{self.transport} {self.protocol}"

    def client_protocol(self, trans):
        """(protocol, transport to flush) for a client writing into `trans`."""
        if self.transport == "header":
            sub = THeaderSubprotocolID.COMPACT if self.protocol == "compact" else THeaderSubprotocolID.BINARY
            proto = THeaderProtocol(trans, allowed_client_types=(THeaderClientType.HEADERS,), default_protocol=sub)
            if self.zlib:
                proto.add_transform(THeaderTransformID.ZLIB)
            return proto
        layer = TFramedTransport(trans) if self.transport == "framed" else TBufferedTransport(trans)
        return TCompactProtocol(layer) if self.protocol == "compact" else TBinaryProtocol(layer)

    def server_protocols(self, trans, legacy_via_header: bool = False):
        """(iprot, oprot) of the Python server for this dialect. THeader servers use one
        protocol for both directions; `legacy_via_header` serves a framed/unframed dialect
        with a THeader server that allows every client type instead of the plain one."""
        if self.transport == "header" or legacy_via_header:
            proto = THeaderProtocol(trans, allowed_client_types=ALL_CLIENT_TYPES)
            return proto, proto
        layer = TFramedTransport(trans) if self.transport == "framed" else TBufferedTransport(trans)
        proto = TCompactProtocol(layer) if self.protocol == "compact" else TBinaryProtocol(layer)
        return proto, proto


HB = Dialect("header", "binary")
HC = Dialect("header", "compact")
HCZ = Dialect("header", "compact", zlib=True)
FB = Dialect("framed", "binary")
FC = Dialect("framed", "compact")
UB = Dialect("unframed", "binary")
UC = Dialect("unframed", "compact")


@dataclass(frozen=True)
class Case:
    name: str
    dialect: Dialect
    method: str  # echo | fail | fire | nosuch (not in the IDL: TApplicationException)
    seqid: int
    headers: tuple = ()
    note: str = ""


CASES = [
    Case("header_binary_echo", HB, "echo", 1),
    Case("header_binary_info_echo", HB, "echo", 2, (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)),
         "THeader with info headers traceparent and tracestate (one KEYVALUE block, in that order)"),
    Case("header_compact_echo", HC, "echo", 300, note="compact seqid 300 is a 2-byte varint (ac 02)"),
    Case("header_compact_zlib_echo", HCZ, "echo", 2147483647,
         note="compact seqid 2^31-1 is a 5-byte varint; the Python server does not compress its reply"),
    Case("framed_binary_echo", FB, "echo", 5),
    Case("framed_compact_echo", FC, "echo", 128, note="compact seqid 128 is a 2-byte varint (80 01)"),
    Case("unframed_binary_echo", UB, "echo", 7),
    Case("unframed_compact_echo", UC, "echo", 8),
    Case("header_binary_unknown_method", HB, "nosuch", 9,
         note="method not in the IDL: the reply is a TApplicationException UNKNOWN_METHOD (type 1)"),
    Case("framed_binary_unknown_method", FB, "nosuch", 10,
         note="method not in the IDL: the reply is a TApplicationException UNKNOWN_METHOD (type 1)"),
    Case("header_compact_fail", HC, "fail", 12,
         note="declared exception: a REPLY message whose result struct has field 1 (Oops) set"),
    Case("header_binary_fire_oneway", HB, "fire", 11, note="ONEWAY (message type 4): the server writes no reply"),
]


def request_bytes(case: Case):
    """(bytes on the wire, the client) for `case`."""
    pipe = Pipe()
    proto = case.dialect.client_protocol(pipe)
    client = Interop.Client(proto)
    client._seqid = case.seqid
    for k, v in case.headers:
        proto.set_header(k.encode(), v.encode())
    if case.method == "echo":
        client.send_echo(sample_everything())
    elif case.method == "fail":
        client.send_fail("on purpose")
    elif case.method == "fire":
        client.send_fire("fire and forget")
    elif case.method == "nosuch":
        proto.writeMessageBegin("nosuch", TMessageType.CALL, case.seqid)
        proto.writeStructBegin("nosuch_args")
        proto.writeFieldBegin("x", TType.I32, 1)
        proto.writeI32(42)
        proto.writeFieldEnd()
        proto.writeFieldStop()
        proto.writeStructEnd()
        proto.writeMessageEnd()
        proto.trans.flush()
    else:
        raise ValueError(case.method)
    return pipe.written()


class _FixtureHandler:
    def echo(self, e):
        return e

    def ping(self):
        pass

    def fail(self, why):
        raise ttypes.Oops(message=f"failed: {why}", code=418)

    def fire(self, note):
        pass

    def whoami(self):
        return ttypes.TraceSeen(headers={}, client_type="")


def reply_bytes(case: Case, request: bytes, legacy_via_header: bool = False) -> bytes:
    pipe = Pipe(request)
    iprot, oprot = case.dialect.server_protocols(pipe, legacy_via_header)
    Interop.Processor(_FixtureHandler()).process(iprot, oprot)
    if pipe.unread():
        raise AssertionError(f"{case.name}: the server left {pipe.unread()} request bytes unread")
    if case.dialect.transport == "header" and not legacy_via_header:
        seen = {k.decode(): v.decode() for k, v in iprot.trans.get_headers().items()}
        if seen != dict(case.headers):
            raise AssertionError(f"{case.name}: server saw headers {seen}, sent {dict(case.headers)}")
    return pipe.written()


def check_reply(case: Case, reply: bytes):
    """The Python client accepts the reply and gets back what it should."""
    client = Interop.Client(case.dialect.client_protocol(Pipe(reply)))
    if case.method == "echo":
        got = client.recv_echo()
        if got != sample_everything():
            raise AssertionError(f"{case.name}: echo reply differs from the request value")
    elif case.method == "fail":
        try:
            client.recv_fail()
        except ttypes.Oops as oops:
            assert oops.message == "failed: on purpose" and oops.code == 418, oops
        else:
            raise AssertionError(f"{case.name}: no Oops")
    elif case.method == "nosuch":
        proto = client._iprot
        name, mtype, seqid = proto.readMessageBegin()
        assert (name, mtype, seqid) == ("nosuch", TMessageType.EXCEPTION, case.seqid), (name, mtype, seqid)
        x = TApplicationException()
        x.read(proto)
        assert x.type == TApplicationException.UNKNOWN_METHOD, x.type


# --- facts for the README, read from the bytes with no Thrift library ---------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


MESSAGE_TYPES = {1: "CALL", 2: "REPLY", 3: "EXCEPTION", 4: "ONEWAY"}


def _message(payload: bytes, protocol: str) -> str:
    if protocol == "binary":
        version, = struct.unpack_from("!I", payload, 0)
        assert version & 0xFFFF0000 == 0x80010000, hex(version)
        n, = struct.unpack_from("!i", payload, 4)
        name = payload[8:8 + n].decode()
        seqid, = struct.unpack_from("!i", payload, 8 + n)
        mtype = version & 0xFF
    else:
        assert payload[0] == 0x82 and payload[1] & 0x1F == 1, payload[:2].hex()
        mtype = payload[1] >> 5
        seqid, pos = _varint(payload, 2)
        n, pos = _varint(payload, pos)
        name = payload[pos:pos + n].decode()
    return f"message {MESSAGE_TYPES[mtype]} `{name}` seqid {seqid}"


def facts(data: bytes, dialect: Dialect) -> list[str]:
    out = [f"{len(data)} bytes, sha256 `{hashlib.sha256(data).hexdigest()[:16]}…`"]
    if dialect.transport == "unframed":
        out.append(f"no frame; {_message(data, dialect.protocol)}")
        return out
    length, = struct.unpack_from("!I", data, 0)
    assert length + 4 == len(data), (length, len(data))
    if dialect.transport == "framed":
        out.append(f"LENGTH {length}; {_message(data[4:], dialect.protocol)}")
        return out
    magic, flags, seq, words = struct.unpack_from("!HHiH", data, 4)
    assert magic == 0x0FFF
    end = 14 + 4 * words
    proto_id, pos = _varint(data, 14)
    ntrans, pos = _varint(data, pos)
    transforms = []
    for _ in range(ntrans):
        t, pos = _varint(data, pos)
        transforms.append(t)
    keys = []
    while pos < end:
        info, after = _varint(data, pos)
        if info != 1:
            break  # 0 is padding: stop
        pos = after
        count, pos = _varint(data, pos)
        for _ in range(count):
            klen, pos = _varint(data, pos)
            keys.append(data[pos:pos + klen].decode())
            pos += klen
            vlen, pos = _varint(data, pos)
            pos += vlen
    padding = end - pos if pos <= end else 0
    payload = data[end:]
    out.append(
        f"LENGTH {length}, magic 0x0FFF, flags 0x{flags:04x}, header seq id {seq}, "
        f"header size {words} words ({4 * words} bytes, {padding} padding), protocol id {proto_id}, "
        f"transforms {transforms or '[]'}, info header keys {keys or '[]'}"
    )
    if 1 in transforms:
        inflated = zlib.decompress(payload)
        out.append(f"payload {len(payload)} bytes zlib (`{payload[:2].hex()}` header), {len(inflated)} inflated")
        payload = inflated
    out.append(_message(payload, "compact" if proto_id == 2 else "binary"))
    return out


def capture(out: Path) -> list[tuple[Case, bytes, bytes | None]]:
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for case in CASES:
        req = request_bytes(case)
        # The same request written twice must give the same bytes (no hidden state).
        assert request_bytes(case) == req, case.name
        rep = reply_bytes(case, req)
        if case.method == "fire":
            assert rep == b"", f"{case.name}: a oneway call got a reply"
            rep = None
        else:
            check_reply(case, rep)
            if case.dialect.transport != "header":
                # A THeader server answering a legacy client replies byte-identically.
                assert reply_bytes(case, req, legacy_via_header=True) == rep, case.name
        (out / f"{case.name}.req.bin").write_bytes(req)
        if rep is not None:
            (out / f"{case.name}.rep.bin").write_bytes(rep)
        results.append((case, req, rep))
    (out / "README.md").write_text(readme(results))
    return results


def readme(results) -> str:
    lines = [
        "# Thrift wire fixtures",
        "",
        "Golden bytes written and answered by the Python `thrift` "
        f"{getattr(thrift, '__version__', '0.25.0')} library (PyPI) with code generated from "
        "`thrift/interop.thrift` by the Thrift compiler (Debian `thrift-compiler` 0.17). "
        "Do not edit by hand: regenerate with",
        "",
        "```",
        COMMAND,
        f"{COMMAND} --check   # exit 1 if these files are not what the script produces",
        "```",
        "",
        "How they are made: for each case a generated `Interop.Client` writes the call into an",
        "in-memory transport (that is `<name>.req.bin`); the generated `Interop.Processor` of the",
        "Python server for that dialect (THeader: `THeaderProtocol`, one instance for input and",
        "output; framed: `TFramedTransport`; unframed: `TBufferedTransport`; with `TBinaryProtocol`",
        "or `TCompactProtocol`) reads exactly those bytes and writes its answer (`<name>.rep.bin`).",
        "The script checks that the server consumed the whole request, that the Python client",
        "accepts the reply (the `echo` reply equals the sent value), and that a THeader server",
        "allowing legacy client types answers framed/unframed requests with identical bytes.",
        "",
        "Values: `echo` sends `sample_everything()` from `interop/thrift_harness.py` (seed 0: every",
        "optional field set, i8/i16/i32/i64 extremes, non-UTF-8 binary, non-ASCII strings, empty and",
        "non-empty containers, field id 32000). Message seqids are fixed per file (Python clients",
        "normally always send 0); Apache writers copy the message seqid into the THeader SEQUENCE ID,",
        "and the Python server's reply carries the request's message seqid and echoes its flags.",
        "The `nosuch` requests carry an args struct with one i32 field (id 1, value 42).",
        "",
        "Determinism: everything is fixed except two things outside the script's control:",
        "",
        "- `set<string>` elements are written in Python set iteration order, which depends on the",
        "  string hash: the script re-executes itself with `PYTHONHASHSEED=0`, so the order is",
        "  stable for a given CPython (3.11 here); another CPython may order the `tags` set",
        "  differently (the set's bytes move; nothing else does).",
        "- zlib (`header_compact_zlib_echo.req.bin`) is `zlib.compress` at the default level;",
        f"  another zlib version may compress differently (made with zlib {zlib.ZLIB_RUNTIME_VERSION}).",
        "  Decode-then-compare, not the compressed bytes, is the portable check for that file.",
        "",
        f"Produced with CPython {platform.python_version()}, zlib {zlib.ZLIB_RUNTIME_VERSION}.",
        "",
        "| file | dialect | facts |",
        "|---|---|---|",
    ]
    for case, req, rep in results:
        what = case.dialect.describe() + (f"; {case.note}" if case.note else "")
        lines.append(f"| `{case.name}.req.bin` | {what} | {'<br>'.join(facts(req, case.dialect))} |")
        if rep is not None:
            lines.append(f"| `{case.name}.rep.bin` | {case.dialect.describe()}, reply | "
                         f"{'<br>'.join(facts(rep, case.dialect))} |")
    lines += [
        "",
        "Info header values in `header_binary_info_echo.req.bin`:",
        "",
        f"- `traceparent`: `{TRACEPARENT}`",
        f"- `tracestate`: `{TRACESTATE}`",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args()
    if not args.check:
        for case, req, rep in capture(args.out):
            print(f"{case.name}: request {len(req)} bytes" + (f", reply {len(rep)} bytes" if rep else ""))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        capture(Path(tmp))
        differ = []
        for produced in sorted(Path(tmp).iterdir()):
            existing = args.out / produced.name
            if not existing.exists() or existing.read_bytes() != produced.read_bytes():
                differ.append(produced.name)
        for name in differ:
            print(f"differs: {name}")
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
