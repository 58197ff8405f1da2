"""The eavesdropper's decoder on hand-built and arbitrary bytes, and the relay on a loopback echo server."""

from __future__ import annotations

import itertools
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.attack.decode import decode_backend, decode_connection, decode_frontend, interleave
from pgbatten.attack.events import Direction, printable
from pgbatten.attack.relay import Relay
from pgbatten.attack.tlsview import decode_tls
from pgbatten.probe.tlsraw import HRR_RANDOM as HELLO_RETRY_RANDOM
from pgbatten.probe.wire import GSSENC_REQUEST_CODE, SSL_REQUEST_CODE

SSL_REQUEST = struct.pack("!ii", 8, SSL_REQUEST_CODE)


def msg(mtype: bytes, body: bytes) -> bytes:
    return mtype + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def startup(**params: str) -> bytes:
    body = struct.pack("!i", 3 << 16) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def data_row(*values: str | None) -> bytes:
    body = struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v.encode())) + v.encode()
    return msg(b"D", body)


def row_description(*names: str) -> bytes:
    body = struct.pack("!h", len(names))
    for name in names:
        body += cstr(name) + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
    return msg(b"T", body)


def tls_record(ctype: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(payload)) + payload


def client_hello(server_name: str) -> bytes:
    name = server_name.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack("!HH", 0, len(sni)) + sni
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + struct.pack("!H", 2)
        + b"\x13\x01"
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def server_hello(random: bytes, version: int | None = 0x0304) -> bytes:
    extensions = b"" if version is None else struct.pack("!HHH", 43, 2, version)
    body = (
        b"\x03\x03"
        + random
        + b"\x00"
        + b"\x13\x01"
        + b"\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    return b"\x02" + len(body).to_bytes(3, "big") + body


CARD = "4111 1111 1111 1111"
PLAIN_CLIENT = (
    SSL_REQUEST
    + startup(user="app", database="shop", application_name="psql")
    + msg(b"p", cstr("md5" + "0123456789abcdef" * 2))
    + msg(b"Q", cstr("SELECT holder, card_number FROM payments"))
    + msg(b"X", b"")
)
PLAIN_SERVER = (
    b"N"
    + msg(b"R", struct.pack("!i", 5) + b"\xde\xad\xbe\xef")
    + msg(b"R", struct.pack("!i", 0))
    + msg(b"S", cstr("server_version") + cstr("15.8"))
    + msg(b"K", struct.pack("!ii", 4242, 7))
    + msg(b"Z", b"I")
    + row_description("holder", "card_number")
    + data_row("Alice Example", CARD)
    + data_row("Bob", None)
    + msg(b"C", cstr("SELECT 2"))
    + msg(b"Z", b"I")
)


def test_plaintext_conversation_reveals_everything() -> None:
    conv = decode_connection(PLAIN_CLIENT, PLAIN_SERVER)
    kinds = [e.kind for e in conv.frontend]
    assert kinds == ["SSLRequest", "StartupMessage", "PasswordMessage", "Query", "Terminate"]
    start = conv.frontend[1]
    assert (start.get("user"), start.get("database"), start.get("protocol")) == ("app", "shop", "3.0")
    assert conv.frontend[2].get("hash") == "md5" + "0123456789abcdef" * 2
    assert conv.frontend[3].get("query") == "SELECT holder, card_number FROM payments"

    backend = [e.kind for e in conv.backend]
    assert backend[:3] == ["SSLAnswer", "AuthenticationMD5Password", "AuthenticationOk"]
    assert conv.backend[0].get("answer") == "N"
    assert conv.backend[1].get("salt") == "deadbeef"
    assert conv.backend[3].fields == (("name", "server_version"), ("value", "15.8"))
    assert conv.backend[4].get("pid") == "4242"
    assert conv.of_kind("RowDescription")[0].values("column") == ["holder", "card_number"]
    rows = conv.of_kind("DataRow")
    assert rows[0].values("value") == ["Alice Example", CARD]
    assert rows[1].values("value") == ["Bob", "NULL"]
    assert conv.of_kind("CommandComplete")[0].get("tag") == "SELECT 2"
    # Offsets and sizes tile each stream exactly.
    for events, data in ((conv.frontend, PLAIN_CLIENT), (conv.backend, PLAIN_SERVER)):
        assert sum(e.size for e in events) == len(data)
        assert all(a.offset + a.size == b.offset for a, b in itertools.pairwise(events))


def test_extended_protocol_and_scram() -> None:
    sasl = cstr("SCRAM-SHA-256") + struct.pack("!i", 9) + b"n,,n=,r=x"
    client = startup(user="u", database="d") + msg(b"p", sasl)
    client += msg(b"P", cstr("") + cstr("SELECT $1") + struct.pack("!h", 0))
    client += msg(b"B", cstr("") + cstr("") + struct.pack("!hhih", 0, 1, 4, 0)[:-2] + b"abcd" + b"\x00\x00")
    client += msg(b"E", cstr("") + struct.pack("!i", 0)) + msg(b"S", b"")
    events = decode_frontend(client)
    assert [e.kind for e in events] == [
        "StartupMessage",
        "SASLInitialResponse",
        "Parse",
        "Bind",
        "Execute",
        "Sync",
    ]
    assert events[1].get("mechanism") == "SCRAM-SHA-256"
    assert events[2].get("query") == "SELECT $1"
    assert events[3].values("value") == ["abcd"]

    server = msg(b"R", struct.pack("!i", 10) + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0")
    server += msg(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed\0\0")
    events = decode_backend(server)
    assert events[0].values("mechanism") == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    assert events[1].kind == "ErrorResponse"
    assert events[1].summary == "FATAL 28P01: password authentication failed"


def test_cleartext_password_is_recognised() -> None:
    events = decode_frontend(startup(user="u") + msg(b"p", cstr("hunter2")))
    assert events[1].get("method") == "cleartext"
    assert events[1].get("password") == "hunter2"


def test_tls_after_ssl_request_hides_content() -> None:
    client = SSL_REQUEST + tls_record(22, client_hello("localhost"), 0x0301) + tls_record(23, b"\x99" * 50)
    server = b"S" + tls_record(22, b"\x02" + bytes(60)) + tls_record(20, b"\x01") + tls_record(23, bytes(300))
    conv = decode_connection(client, server)
    assert [e.kind for e in conv.frontend] == ["SSLRequest", "TLSRecord", "TLSRecord"]
    hello = conv.frontend[1]
    assert hello.get("handshake") == "ClientHello"
    assert hello.get("server_name") == "localhost"
    assert hello.get("version") == "TLS 1.0"
    assert conv.frontend[2].get("content_type") == "application_data"
    assert [e.kind for e in conv.backend] == ["SSLAnswer", "TLSRecord", "TLSRecord", "TLSRecord"]
    assert [e.get("content_type") for e in conv.backend[1:]] == [
        "handshake",
        "change_cipher_spec",
        "application_data",
    ]
    assert conv.backend[1].get("handshake") == "ServerHello"
    assert [e.get("length") for e in conv.backend[1:]] == ["61", "1", "300"]


def test_server_hello_version_and_hello_retry_request() -> None:
    events = decode_tls(
        tls_record(22, server_hello(HELLO_RETRY_RANDOM))
        + tls_record(22, server_hello(bytes(32)))
        + tls_record(22, server_hello(bytes(32), None)),
        Direction.BACKEND,
    )
    assert [(e.get("handshake"), e.get("negotiated")) for e in events] == [
        ("HelloRetryRequest", "TLS 1.3"),
        ("ServerHello", "TLS 1.3"),
        ("ServerHello", "TLS 1.2"),
    ]
    assert events[1].summary == "TLS handshake (ServerHello, TLS 1.3), 50 bytes"


def test_gssenc_refused_then_ssl() -> None:
    client = struct.pack("!ii", 8, GSSENC_REQUEST_CODE) + SSL_REQUEST + startup(user="u")
    conv = decode_connection(client, b"NN" + msg(b"R", struct.pack("!i", 0)))
    assert [e.kind for e in conv.frontend] == ["GSSENCRequest", "SSLRequest", "StartupMessage"]
    assert [e.kind for e in conv.backend] == ["SSLAnswer", "SSLAnswer", "AuthenticationOk"]


def test_direct_tls_without_request() -> None:
    assert decode_frontend(tls_record(22, client_hello("db")))[0].get("server_name") == "db"
    assert decode_backend(tls_record(22, b"\x02"))[0].kind == "TLSRecord"


@pytest.mark.parametrize("cut", range(1, len(PLAIN_SERVER)))
def test_truncated_backend_is_reported_not_raised(cut: int) -> None:
    events = decode_backend(PLAIN_SERVER[:cut], requests=1)
    assert events
    assert all(e.direction == Direction.BACKEND for e in events)
    # Whatever was complete decodes as before; only the last event may be a truncation.
    assert all(e.kind != "truncated" for e in events[:-1])


@pytest.mark.parametrize("cut", range(1, len(PLAIN_CLIENT)))
def test_truncated_frontend_is_reported_not_raised(cut: int) -> None:
    events = decode_frontend(PLAIN_CLIENT[:cut])
    assert all(e.kind != "truncated" for e in events[:-1])


def test_truncated_tls_record() -> None:
    events = decode_tls(tls_record(23, bytes(100))[:40], Direction.BACKEND)
    assert events[0].get("captured") == "35"
    assert decode_tls(b"\x17\x03", Direction.BACKEND)[0].kind == "truncated"
    assert decode_tls(b"GET / HTTP/1.1", Direction.FRONTEND)[0].kind == "malformed"


def test_malformed_lengths() -> None:
    assert decode_backend(b"D\x00\x00\x00\x01")[0].kind == "malformed"
    assert decode_frontend(struct.pack("!ii", 4, 0))[0].kind == "malformed"
    # A DataRow announcing more columns than its body holds.
    bad = decode_backend(msg(b"D", struct.pack("!hi", 3, 2) + b"ab"))
    assert bad[0].kind == "malformed"


def test_printable_escapes_control_characters_and_limits() -> None:
    assert printable("a\x1b[31mb\n") == "a\\x1b[31mb\\n"
    assert printable("x" * 500, 10) == "x" * 10 + "..."


def test_interleave_orders_by_transcript() -> None:
    conv = decode_connection(PLAIN_CLIENT[:8], b"N")
    transcript = [(Direction.FRONTEND, 0, 8), (Direction.BACKEND, 0, 1)]
    assert [e.kind for e in interleave(reversed(conv.events), transcript)] == ["SSLRequest", "SSLAnswer"]


@given(st.binary(max_size=600))
def test_frontend_decoder_is_total(data: bytes) -> None:
    for event in decode_frontend(data):
        assert event.direction == Direction.FRONTEND
        assert 0 <= event.offset <= len(data)


@given(st.binary(max_size=600), st.integers(min_value=0, max_value=3))
def test_backend_decoder_is_total(data: bytes, requests: int) -> None:
    for event in decode_backend(data, requests=requests):
        assert event.direction == Direction.BACKEND


@given(
    st.lists(st.sampled_from([PLAIN_CLIENT, PLAIN_SERVER, SSL_REQUEST, b"S", b"\x16\x03\x03"])), st.binary()
)
def test_decoders_total_on_plausible_prefixes(parts: list[bytes], tail: bytes) -> None:
    data = b"".join(parts) + tail
    decode_connection(data, data)
    decode_connection(data, b"S" + data)


# ---------------------------------------------------------------------------------------------- relay


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A one-connection-at-a-time echo server on loopback that stops when the test ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while chunk := conn.recv(4096):
                    conn.sendall(chunk.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    # Wake accept() with a last connection rather than closing the socket under it.
    with socket.create_connection(("127.0.0.1", port)):
        pass
    thread.join()
    listener.close()


def _exchange(port: int, payloads: list[bytes]) -> bytes:
    received = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for payload in payloads:
            sock.sendall(payload)
            want = len(received) + len(payload)
            while len(received) < want:
                chunk = sock.recv(4096)
                assert chunk
                received += chunk
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
    return received


def test_relay_forwards_and_records_both_directions(echo_server: int) -> None:
    with Relay("127.0.0.1", echo_server) as relay:
        assert relay.port != echo_server
        assert _exchange(relay.port, [b"hello ", b"world"]) == b"HELLO WORLD"
        assert _exchange(relay.port, [b"again"]) == b"AGAIN"
        captures = relay.captures()
    assert [c.client_bytes for c in captures] == [b"hello world", b"again"]
    assert [c.server_bytes for c in captures] == [b"HELLO WORLD", b"AGAIN"]
    first = captures[0]
    assert first.contains(b"WORLD") and not first.contains(b"again")
    # Each request chunk was recorded before its echo.
    assert first.transcript[0] == (Direction.FRONTEND, 0, 6)
    assert first.transcript[-1][0] == Direction.BACKEND
    assert not first.truncated
    assert not [t for t in threading.enumerate() if t.name.startswith("relay-")]


def test_relay_bounds_what_it_records(echo_server: int) -> None:
    with Relay("127.0.0.1", echo_server, max_bytes=4) as relay:
        assert _exchange(relay.port, [b"abcdefgh"]) == b"ABCDEFGH"
        (capture,) = relay.captures()
    assert capture.client_bytes == b"abcd"
    assert capture.truncated


def test_relay_closes_client_when_target_is_down() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]
    with Relay("127.0.0.1", dead_port) as relay, socket.create_connection(("127.0.0.1", relay.port)) as sock:
        assert sock.recv(1) == b""
