"""What an eavesdropper on a PostgreSQL connection sees: a recording relay and a pure decoder of its bytes.

The decoder is a total function over arbitrary bytes: the capture comes from the network, so anything it
cannot understand becomes a ``malformed`` or ``truncated`` event instead of an exception. It decodes the
two directions separately (frontend: client to server; backend: server to client) because that is how a
wire tap records them; :func:`decode_connection` links them where one side's meaning depends on the other
(a one-byte answer to SSLRequest, TLS from then on).

The relay is the eavesdropper: it listens on a free loopback port, forwards bytes to the real server, and
keeps a bounded copy of both directions per connection.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

from pgbatten.errors import ProbeError
from pgbatten.probe.wire import ERROR_FIELD_NAMES

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_LENGTH = 10_000
"""PostgreSQL refuses longer startup packets; a longer length means we are not looking at one."""

TLS_CONTENT_TYPES = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
}
TLS_HANDSHAKE_TYPES = {1: "ClientHello", 2: "ServerHello", 4: "NewSessionTicket", 11: "Certificate"}
HELLO_RETRY_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
"""RFC 8446 4.1.3: SHA-256 of "HelloRetryRequest", the random of a ServerHello that asks for another try."""
TLS_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}

AUTH_REQUESTS = {
    0: "AuthenticationOk",
    2: "AuthenticationKerberosV5",
    3: "AuthenticationCleartextPassword",
    5: "AuthenticationMD5Password",
    7: "AuthenticationGSS",
    8: "AuthenticationGSSContinue",
    9: "AuthenticationSSPI",
    10: "AuthenticationSASL",
    11: "AuthenticationSASLContinue",
    12: "AuthenticationSASLFinal",
}

FRONTEND_TYPES = {
    "Q": "Query",
    "P": "Parse",
    "B": "Bind",
    "p": "PasswordMessage",
    "E": "Execute",
    "D": "Describe",
    "S": "Sync",
    "H": "Flush",
    "C": "Close",
    "X": "Terminate",
    "F": "FunctionCall",
    "d": "CopyData",
    "c": "CopyDone",
    "f": "CopyFail",
}
BACKEND_TYPES = {
    "R": "Authentication",
    "S": "ParameterStatus",
    "K": "BackendKeyData",
    "Z": "ReadyForQuery",
    "T": "RowDescription",
    "D": "DataRow",
    "C": "CommandComplete",
    "E": "ErrorResponse",
    "N": "NoticeResponse",
    "1": "ParseComplete",
    "2": "BindComplete",
    "3": "CloseComplete",
    "n": "NoData",
    "t": "ParameterDescription",
    "s": "PortalSuspended",
    "I": "EmptyQueryResponse",
    "A": "NotificationResponse",
    "v": "NegotiateProtocolVersion",
}

SUMMARY_LIMIT = 160
"""Longest decoded value shown in a summary; captures can hold megabytes."""


class Direction(StrEnum):
    """Which way the bytes went."""

    FRONTEND = "client"  # client to server
    BACKEND = "server"  # server to client


@dataclass(frozen=True)
class WireEvent:
    """One decoded unit of a capture: a protocol message, a one-byte answer, a TLS record, or a problem.

    ``kind`` is the protocol's name for it (``StartupMessage``, ``DataRow``, ``TLSRecord``...) or
    ``truncated``/``malformed``; ``summary`` is one printable line; ``fields`` holds the decoded values
    by name, in wire order. ``offset`` and ``size`` locate it in its direction's byte stream.
    """

    direction: Direction
    kind: str
    summary: str
    fields: tuple[tuple[str, str], ...] = ()
    offset: int = 0
    size: int = 0

    def get(self, name: str) -> str | None:
        """The first field called ``name``, or None."""
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def values(self, name: str) -> list[str]:
        """Every field called ``name`` (a DataRow has one ``value`` per column)."""
        return [value for key, value in self.fields if key == name]


class _Short(Exception):
    """Internal: a message body ended before a field it announces. Never leaves this module."""


def printable(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` with control characters escaped and cut to ``limit`` characters, safe for any terminal."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return out[:limit] + "..." if len(out) > limit else out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


class _Body:
    """Bounds-checked reads over one message body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Short
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return self.take(1)[0]

    def int16(self) -> int:
        value: int = struct.unpack("!h", self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = struct.unpack("!i", self.take(4))[0]
        return value

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end == -1:
            raise _Short
        raw = self.data[self.pos : end]
        self.pos = end + 1
        return _text(raw)


# ------------------------------------------------------------------------------------------------ TLS


def _client_hello_sni(fragment: bytes) -> str | None:
    """The server name a ClientHello asks for: TLS hides the conversation, not this."""
    try:
        b = _Body(fragment)
        if b.int8() != 1:
            return None
        b.take(3)  # handshake length
        b.take(2 + 32)  # legacy version, random
        b.take(b.int8())  # session id
        b.take(struct.unpack("!H", b.take(2))[0])  # cipher suites
        b.take(b.int8())  # compression methods
        ext = _Body(b.take(struct.unpack("!H", b.take(2))[0]))
        while ext.remaining:
            ext_type, ext_len = struct.unpack("!HH", ext.take(4))
            data = ext.take(ext_len)
            if ext_type == 0:  # server_name
                names = _Body(data)
                names.take(2)
                if names.int8() == 0:  # host_name
                    return printable(_text(names.take(struct.unpack("!H", names.take(2))[0])))
                return None
    except _Short:
        return None
    return None


def _server_hello(fragment: bytes) -> tuple[str, str] | None:
    """(message name, TLS version) of a ServerHello: in TLS 1.3 the version hides in the
    supported_versions extension, and a HelloRetryRequest is a ServerHello with a fixed random."""
    try:
        b = _Body(fragment)
        if b.int8() != 2:
            return None
        b.take(3)
        (legacy,) = struct.unpack("!H", b.take(2))
        name = "HelloRetryRequest" if b.take(32) == HELLO_RETRY_RANDOM else "ServerHello"
        b.take(b.int8())  # session id
        b.take(2 + 1)  # cipher suite, compression method
        chosen = legacy
        if b.remaining:
            ext = _Body(b.take(struct.unpack("!H", b.take(2))[0]))
            while ext.remaining:
                ext_type, ext_len = struct.unpack("!HH", ext.take(4))
                data = ext.take(ext_len)
                if ext_type == 43 and ext_len == 2:  # supported_versions
                    (chosen,) = struct.unpack("!H", data)
    except _Short:
        return None
    return name, TLS_VERSIONS.get(chosen, f"0x{chosen:04x}")


def decode_tls(data: bytes, direction: Direction, offset: int = 0) -> list[WireEvent]:
    """TLS records: content type, legacy version and length of each; their content stays opaque."""
    events: list[WireEvent] = []
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 5]
        where = offset + pos
        if len(header) < 5:
            events.append(
                WireEvent(direction, "truncated", f"{len(header)} bytes of a TLS record header", (), where)
            )
            break
        ctype, version, length = struct.unpack("!BHH", header)
        if ctype not in TLS_CONTENT_TYPES or version >> 8 != 3:
            events.append(
                WireEvent(
                    direction,
                    "malformed",
                    f"not a TLS record ({len(data) - pos} bytes follow)",
                    (("bytes", str(len(data) - pos)),),
                    where,
                    len(data) - pos,
                )
            )
            break
        fragment = data[pos + 5 : pos + 5 + length]
        name = TLS_CONTENT_TYPES[ctype]
        vname = TLS_VERSIONS.get(version, f"0x{version:04x}")
        fields = [("content_type", name), ("version", vname), ("length", str(length))]
        summary = f"TLS {name}, {length} bytes"
        if ctype == 22 and fragment:
            # Only the first handshake messages travel in the clear; later ones look like this too but
            # are application_data records in TLS 1.3, so a readable type here is meaningful.
            hs = TLS_HANDSHAKE_TYPES.get(fragment[0])
            if hs is not None:
                fields.append(("handshake", hs))
                summary = f"TLS {name} ({hs}), {length} bytes"
            sni = _client_hello_sni(fragment)
            if sni is not None:
                fields.append(("server_name", sni))
                summary += f", server name {sni!r}"
            server_hello = _server_hello(fragment)
            if server_hello is not None:
                hs, chosen = server_hello
                fields[-1] = ("handshake", hs)
                fields.append(("negotiated", chosen))
                summary = f"TLS {name} ({hs}, {chosen}), {length} bytes"
        if len(fragment) < length:
            fields.append(("captured", str(len(fragment))))
            summary += f" (only {len(fragment)} captured)"
        events.append(WireEvent(direction, "TLSRecord", summary, tuple(fields), where, 5 + len(fragment)))
        pos += 5 + length
    return events


# ------------------------------------------------------------------------------------------ frontend


def _startup(code: int, body: _Body) -> tuple[str, str, list[tuple[str, str]]]:
    """(kind, summary, fields) of an untyped first message, from its code and the rest of its body."""
    if code == SSL_REQUEST_CODE:
        return "SSLRequest", "SSLRequest: may we switch to TLS?", []
    if code == GSSENC_REQUEST_CODE:
        return "GSSENCRequest", "GSSENCRequest: may we switch to GSSAPI encryption?", []
    if code == CANCEL_REQUEST_CODE:
        pid = body.int32()
        return "CancelRequest", f"CancelRequest for backend {pid}", [("pid", str(pid))]
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        return (
            "StartupMessage",
            f"startup with unknown protocol {major}.{minor}",
            [("protocol", f"{major}.{minor}")],
        )
    fields = [("protocol", f"{major}.{minor}")]
    while body.remaining:
        key = body.cstring()
        if not key:
            break
        fields.append((printable(key, 64), printable(body.cstring())))
    shown = ", ".join(f"{k}={v}" for k, v in fields[1:] if k in ("user", "database", "application_name"))
    return "StartupMessage", f"StartupMessage {shown}".rstrip(), fields


def _password(body: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """The 'p' message's meaning depends on what the server asked for; its shape tells which."""
    text = body[:-1] if body.endswith(b"\0") else body
    if len(text) == 35 and text.startswith(b"md5") and all(c in b"0123456789abcdef" for c in text[3:]):
        digest = text.decode()
        return "PasswordMessage", f"md5 password hash {digest}", [("method", "md5"), ("hash", digest)]
    b = _Body(body)
    try:
        mechanism = b.cstring()
        if mechanism.startswith("SCRAM-") and b.remaining >= 4:
            length = b.int32()
            initial = _text(b.take(length)) if length >= 0 else ""
            return (
                "SASLInitialResponse",
                f"SASLInitialResponse {mechanism}: {printable(initial, 60)}",
                [("mechanism", mechanism), ("data", printable(initial))],
            )
    except _Short:
        pass
    if body.endswith(b"\0") and b"\0" not in text:
        shown = printable(_text(text))
        if text.isascii() and all(32 <= c < 127 for c in text):
            return (
                "PasswordMessage",
                f"cleartext password {shown!r}",
                [("method", "cleartext"), ("password", shown)],
            )
    shown = printable(_text(body), 60)
    return "SASLResponse", f"SASLResponse: {shown}", [("data", printable(_text(body)))]


def _frontend_typed(mtype: str, body: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    name = FRONTEND_TYPES.get(mtype, f"message {mtype!r}")
    b = _Body(body)
    if mtype == "Q":
        query = b.cstring()
        return name, f"Query: {printable(query)}", [("query", printable(query, 4000))]
    if mtype == "P":
        stmt = b.cstring()
        query = b.cstring()
        return (
            name,
            f"Parse: {printable(query)}",
            [("statement", printable(stmt)), ("query", printable(query, 4000))],
        )
    if mtype == "B":
        portal, stmt = b.cstring(), b.cstring()
        b.take(2 * b.int16())  # parameter format codes
        values: list[tuple[str, str]] = []
        for _ in range(b.int16()):
            length = b.int32()
            values.append(("value", "NULL" if length < 0 else printable(_text(b.take(length)))))
        shown = ", ".join(v for _, v in values)
        return (
            name,
            f"Bind {len(values)} parameters: {printable(shown)}",
            [
                ("portal", printable(portal)),
                ("statement", printable(stmt)),
                *values,
            ],
        )
    if mtype == "p":
        return _password(body)
    return name, name, []


def _typed(
    data: bytes,
    pos: int,
    direction: Direction,
    decode: Callable[[str, bytes], tuple[str, str, list[tuple[str, str]]]],
) -> Iterator[WireEvent]:
    while pos < len(data):
        header = data[pos : pos + 5]
        if len(header) < 5:
            yield WireEvent(
                direction, "truncated", f"{len(header)} bytes of a message header", (), pos, len(header)
            )
            return
        mtype = chr(header[0])
        (length,) = struct.unpack("!i", header[1:5])
        if length < 4:
            yield WireEvent(
                direction,
                "malformed",
                f"message {mtype!r} with impossible length {length}",
                (),
                pos,
                len(data) - pos,
            )
            return
        body = data[pos + 5 : pos + 1 + length]
        if len(body) < length - 4:
            yield WireEvent(
                direction,
                "truncated",
                f"{printable(mtype)} message: {len(body)} of {length - 4} body bytes captured",
                (("type", printable(mtype)),),
                pos,
                len(data) - pos,
            )
            return
        try:
            kind, summary, fields = decode(mtype, body)
        except _Short:
            kind, summary, fields = "malformed", f"{printable(mtype)} message with a malformed body", []
        yield WireEvent(direction, kind, summary, tuple(fields), pos, 1 + length)
        pos += 1 + length


def decode_frontend(data: bytes) -> list[WireEvent]:
    """Decode what a client sent: untyped requests and startup, then typed messages, or TLS records.

    A frontend stream alone tells whether TLS followed an SSLRequest: a TLS record starts with byte 22, a
    startup packet's length with byte 0.
    """
    events: list[WireEvent] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 22:  # TLS after SSLRequest, or direct TLS (PostgreSQL 17+ sslnegotiation=direct)
            events += decode_tls(data[pos:], Direction.FRONTEND, pos)
            return events
        header = data[pos : pos + 8]
        if len(header) < 8:
            events.append(
                WireEvent(
                    Direction.FRONTEND,
                    "truncated",
                    f"{len(header)} bytes of a startup packet",
                    (),
                    pos,
                    len(header),
                )
            )
            return events
        length, code = struct.unpack("!ii", header)
        if not 8 <= length <= MAX_STARTUP_LENGTH:
            events.append(
                WireEvent(
                    Direction.FRONTEND,
                    "malformed",
                    f"startup packet with impossible length {length}",
                    (),
                    pos,
                    len(data) - pos,
                )
            )
            return events
        raw = data[pos + 8 : pos + length]
        if len(raw) < length - 8:
            events.append(
                WireEvent(
                    Direction.FRONTEND,
                    "truncated",
                    f"startup packet: {len(raw)} of {length - 8} body bytes captured",
                    (),
                    pos,
                    len(data) - pos,
                )
            )
            return events
        try:
            kind, summary, fields = _startup(code, _Body(raw))
        except _Short:
            kind, summary, fields = "malformed", "startup packet with a malformed body", []
        events.append(WireEvent(Direction.FRONTEND, kind, summary, tuple(fields), pos, length))
        pos += length
        if kind == "GSSENCRequest" and pos < len(data) and data[pos] != 0:
            # Accepted: from here on GSSAPI-wrapped tokens, which we do not unwrap.
            events.append(
                WireEvent(
                    Direction.FRONTEND,
                    "GSSWrapped",
                    f"{len(data) - pos} GSSAPI-encrypted bytes",
                    (),
                    pos,
                    len(data) - pos,
                )
            )
            return events
        if kind in ("StartupMessage", "CancelRequest"):
            break
    events += _typed(data, pos, Direction.FRONTEND, _frontend_typed)
    return events


# ------------------------------------------------------------------------------------------- backend


def _error_fields(b: _Body) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    while True:
        ftype = b.int8()
        if ftype == 0:
            return fields
        value = b.cstring()
        name = ERROR_FIELD_NAMES.get(chr(ftype))
        if name is not None:
            fields.append((name, printable(value, 400)))


def _auth(b: _Body) -> tuple[str, str, list[tuple[str, str]]]:
    code = b.int32()
    kind = AUTH_REQUESTS.get(code, f"Authentication({code})")
    fields = [("code", str(code))]
    if code == 5:
        salt = b.take(4).hex()
        return kind, f"{kind}, salt {salt}", [*fields, ("salt", salt)]
    if code == 10:
        mechanisms = []
        while b.remaining:
            mechanism = b.cstring()
            if not mechanism:
                break
            mechanisms.append(printable(mechanism, 40))
        return kind, f"{kind}: {', '.join(mechanisms)}", [*fields, *(("mechanism", m) for m in mechanisms)]
    if code in (11, 12):
        data = printable(_text(b.data[b.pos :]))
        return kind, f"{kind}: {printable(data, 60)}", [*fields, ("data", data)]
    return kind, kind, fields


def _backend_typed(mtype: str, body: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    name = BACKEND_TYPES.get(mtype, f"message {mtype!r}")
    b = _Body(body)
    if mtype == "R":
        return _auth(b)
    if mtype == "S":
        key, value = printable(b.cstring(), 64), printable(b.cstring())
        return name, f"{key} = {value}", [("name", key), ("value", value)]
    if mtype == "K":
        pid = b.int32()
        return name, f"backend pid {pid}, cancel key of {b.remaining} bytes", [("pid", str(pid))]
    if mtype == "Z":
        status = chr(b.int8())
        return name, f"ReadyForQuery ({printable(status)})", [("status", printable(status))]
    if mtype == "T":
        columns = []
        for _ in range(b.int16()):
            columns.append(printable(b.cstring(), 64))
            b.take(18)  # table oid, column number, type oid, type size, type modifier, format
        return name, f"columns: {', '.join(columns)}", [("column", c) for c in columns]
    if mtype == "D":
        values = []
        for _ in range(b.int16()):
            length = b.int32()
            values.append("NULL" if length < 0 else printable(_text(b.take(length))))
        return name, f"row: {printable(' | '.join(values))}", [("value", v) for v in values]
    if mtype == "C":
        tag = printable(b.cstring())
        return name, tag, [("tag", tag)]
    if mtype in ("E", "N"):
        fields = _error_fields(b)
        found = dict(fields)
        severity = found.get("severity_nonlocalized", found.get("severity", ""))
        return name, f"{severity} {found.get('code', '')}: {found.get('message', '')}".strip(), fields
    return name, name, []


def decode_backend(data: bytes, *, requests: int = 0) -> list[WireEvent]:
    """Decode what a server sent. ``requests`` is how many SSLRequest/GSSENCRequest the client sent first:
    each gets a one-byte answer (``S``/``G`` accept and switch to encryption, ``N`` refuses)."""
    events: list[WireEvent] = []
    pos = 0
    for _ in range(max(requests, 0)):
        if pos >= len(data):
            return events
        answer = chr(data[pos])
        if answer == "E":
            break  # a server too old for SSLRequest answers with an ErrorResponse
        meaning = {"S": "yes, TLS", "G": "yes, GSSAPI", "N": "no, go on unencrypted"}.get(answer)
        events.append(
            WireEvent(
                Direction.BACKEND,
                "SSLAnswer" if meaning else "malformed",
                f"{printable(answer)!r}: {meaning}"
                if meaning
                else f"unexpected answer byte {printable(answer)!r}",
                (("answer", printable(answer)),),
                pos,
                1,
            )
        )
        pos += 1
        if meaning is None:
            return events
        if answer == "S":
            events += decode_tls(data[pos:], Direction.BACKEND, pos)
            return events
        if answer == "G":
            if pos < len(data):
                events.append(
                    WireEvent(
                        Direction.BACKEND,
                        "GSSWrapped",
                        f"{len(data) - pos} GSSAPI-encrypted bytes",
                        (),
                        pos,
                        len(data) - pos,
                    )
                )
            return events
    if requests == 0 and data[:1] == b"\x16":
        return decode_tls(data, Direction.BACKEND)
    events += _typed(data, pos, Direction.BACKEND, _backend_typed)
    return events


@dataclass(frozen=True)
class Conversation:
    """Both directions of one connection, decoded."""

    frontend: tuple[WireEvent, ...]
    backend: tuple[WireEvent, ...]

    @property
    def events(self) -> tuple[WireEvent, ...]:
        return self.frontend + self.backend

    def of_kind(self, kind: str) -> list[WireEvent]:
        return [e for e in self.events if e.kind == kind]


def decode_connection(client_bytes: bytes, server_bytes: bytes) -> Conversation:
    """Decode a connection's two recorded directions, answering each client request from the server side."""
    frontend = decode_frontend(client_bytes)
    requests = sum(1 for e in frontend if e.kind in ("SSLRequest", "GSSENCRequest"))
    return Conversation(tuple(frontend), tuple(decode_backend(server_bytes, requests=requests)))


def interleave(
    events: Iterable[WireEvent], transcript: Iterable[tuple[Direction, int, int]]
) -> list[WireEvent]:
    """Order events of both directions as they crossed the wire, from the relay's ``(direction, start, end)``
    record of each chunk it forwarded."""
    order: dict[tuple[Direction, int], int] = {}
    spans = list(transcript)

    def rank(event: WireEvent) -> int:
        key = (event.direction, event.offset)
        if key not in order:
            order[key] = next(
                (
                    i
                    for i, (d, start, end) in enumerate(spans)
                    if d == event.direction and start <= event.offset < end
                ),
                len(spans),
            )
        return order[key]

    return sorted(events, key=lambda e: (rank(e), e.direction == Direction.BACKEND, e.offset))


# --------------------------------------------------------------------------------------------- relay


@dataclass(frozen=True)
class Capture:
    """A snapshot of one relayed connection: the bytes of each direction, and the order chunks crossed."""

    client_bytes: bytes
    server_bytes: bytes
    transcript: tuple[tuple[Direction, int, int], ...]
    truncated: bool = False

    def decode(self) -> Conversation:
        return decode_connection(self.client_bytes, self.server_bytes)

    def timeline(self) -> list[WireEvent]:
        """Both directions' events in the order they crossed the relay."""
        return interleave(self.decode().events, self.transcript)

    def contains(self, needle: bytes) -> bool:
        """Whether ``needle`` appears in either direction's raw bytes."""
        return needle in self.client_bytes or needle in self.server_bytes


@dataclass
class _Recording:
    client: bytearray = field(default_factory=bytearray)
    server: bytearray = field(default_factory=bytearray)
    transcript: list[tuple[Direction, int, int]] = field(default_factory=list)
    truncated: bool = False


class Relay:
    """A recording TCP relay on a free 127.0.0.1 port, forwarding to ``target_host:target_port``.

    Use as a context manager; leaving it stops accepting, ends every connection and joins every thread.
    Bounded: at most ``max_connections`` connections over its life, at most ``max_bytes`` recorded per
    direction and connection (the rest is forwarded but not kept), and a connection idle for
    ``idle_timeout`` seconds is closed.
    """

    # The accept and copy loops check for close() this often, so closing never waits long.
    _POLL = 0.05

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 32,
        max_bytes: int = 1 << 20,
        idle_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._recordings: list[_Recording] = []
        self._threads: list[threading.Thread] = []
        self._connection_threads: list[threading.Thread] = []
        self.port = 0

    def start(self) -> None:
        """Bind a free loopback port, listen, and start accepting in a background thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.settimeout(self._POLL)
        except OSError:
            _close(listener)
            raise
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "relay-accept", listener)

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket) -> None:
        # Only this thread touches the listener, so closing it cannot race with accept().
        accepted = 0
        try:
            while not self._stop.is_set() and accepted < self.max_connections:
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                accepted += 1
                recording = _Recording()
                with self._lock:
                    self._recordings.append(recording)
                thread = self._spawn(self._serve, f"relay-conn-{accepted}", client, recording)
                with self._lock:
                    self._connection_threads.append(thread)
        finally:
            _close(listener)

    def _serve(self, client: socket.socket, recording: _Recording) -> None:
        try:
            server = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            _close(client)
            return
        try:
            self._pump(client, server, recording)
        finally:
            _close(client)
            _close(server)

    def _pump(self, client: socket.socket, server: socket.socket, recording: _Recording) -> None:
        """Copy both ways until both sides are done, the relay closes, or the connection idles out."""
        open_ends = 2
        idle = 0.0
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, (client, server, Direction.FRONTEND))
            sel.register(server, selectors.EVENT_READ, (server, client, Direction.BACKEND))
            for sock in (client, server):
                # Reads happen only when the selector says so; a blocking send with a timeout keeps the
                # copy simple and still bounded.
                sock.settimeout(self.idle_timeout)
            while open_ends and not self._stop.is_set() and idle < self.idle_timeout:
                ready = sel.select(self._POLL)
                if not ready:
                    idle += self._POLL
                    continue
                idle = 0.0
                for key, _ in ready:
                    src, dst, direction = key.data
                    try:
                        chunk = src.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(src)
                        open_ends -= 1
                        with contextlib.suppress(OSError):
                            dst.shutdown(socket.SHUT_WR)
                        continue
                    self._record(recording, direction, chunk)
                    try:
                        dst.sendall(chunk)
                    except OSError:
                        return

    def _record(self, recording: _Recording, direction: Direction, chunk: bytes) -> None:
        with self._lock:
            buf = recording.client if direction == Direction.FRONTEND else recording.server
            kept = chunk[: max(self.max_bytes - len(buf), 0)]
            if len(kept) < len(chunk):
                recording.truncated = True
            if kept:
                recording.transcript.append((direction, len(buf), len(buf) + len(kept)))
                buf += kept

    def wait_connections(self, timeout: float) -> bool:
        """Wait until every connection accepted so far has ended on both sides; False on timeout.

        A client returning from ``close()`` does not mean the relay has read its last bytes yet; waiting
        here makes the next :meth:`captures` complete.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._connection_threads)
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)

    def captures(self) -> list[Capture]:
        """A snapshot of every connection so far, in the order they were accepted."""
        with self._lock:
            return [
                Capture(bytes(r.client), bytes(r.server), tuple(r.transcript), r.truncated)
                for r in self._recordings
            ]

    def close(self) -> None:
        """Stop accepting, end every connection, and wait for every thread."""
        self._stop.set()
        # Every loop checks the stop flag each _POLL; a send can block at most idle_timeout.
        limit = self.idle_timeout + self.connect_timeout + 1.0
        while True:
            with self._lock:
                pending = [t for t in self._threads if t.is_alive()]
            if not pending:
                return
            for thread in pending:
                thread.join(timeout=limit)
            if any(t.is_alive() for t in pending):
                return  # daemon threads; never hang the caller on a stuck peer

    def __enter__(self) -> Relay:
        try:
            self.start()
        except OSError as exc:
            raise ProbeError("127.0.0.1", 0, f"cannot start the relay: {exc.strerror or exc}") from exc
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
