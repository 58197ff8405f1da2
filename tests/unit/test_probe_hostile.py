"""Hostile and broken servers: every case ends in a finding or an "unreachable / not PostgreSQL" result.

Each fake server is a loopback thread with socket timeouts that stops itself. The probes run the full audit
with a short timeout; what is asserted is the outcome and the connection count, never the elapsed time.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import pytest

from pgbatten.probe import check_target, exit_status, result_to_json
from pgbatten.probe.check import CheckResult
from tests.unit.test_probe_fakeservers import (
    NO_ENCRYPTION,
    FakeServer,
    Handler,
    Pki,
    error_response,
    make_pki,
    pki,  # noqa: F401  # fixture
    recv_exact,
    server_context,
    wait_for_close,
)

TIMEOUT = 0.5


def audit(handler: Handler, max_connections: int = 8) -> tuple[CheckResult, int]:
    with FakeServer(handler, max_connections) as server:
        result = check_target(server.target, timeout=TIMEOUT, full=True)
        # The server thread counts accepted connections; let it see the last close.
        time.sleep(0.05)
        seen = server.connections
    result_to_json(result)  # every result renders
    return result, seen


def ids(result: CheckResult) -> set[str]:
    return {f.id for f in result.findings}


def stall(conn: socket.socket, seconds: float = 2.0) -> None:
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def startup_or_ssl(conn: socket.socket) -> tuple[int, int] | None:
    header = recv_exact(conn, 8)
    if len(header) < 8:
        return None
    length, code = struct.unpack("!II", header)
    return length, code


def test_bytes_after_s_is_a_finding_and_stops_the_enumeration() -> None:
    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed and parsed[1] == 80877103:
            conn.sendall(b"S" + b"Z" + struct.pack("!I", 5) + b"I")
            wait_for_close(conn)
        elif parsed:
            conn.sendall(NO_ENCRYPTION)
            wait_for_close(conn)

    result, seen = audit(handler)
    assert "bytes-after-ssl-response" in ids(result)
    assert result.connections_by_step.get("enumeration", 0) == 0
    assert result.connections_used == seen == 2
    assert exit_status([result]) == 1


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"E" + struct.pack("!I", 50_000_000), "oversized"),
        (b"E" + struct.pack("!I", 2), "malformed"),
        (b"E\x00", "truncated"),
    ],
)
def test_malformed_error_answer_is_not_postgresql(answer: bytes, why: str) -> None:
    def handler(conn: socket.socket) -> None:
        startup_or_ssl(conn)
        conn.sendall(answer)
        if why == "truncated":
            return  # then hang up: a stall here would be "no answer before the timeout" (unreachable)
        stall(conn, 1.0)

    result, seen = audit(handler)
    assert "not-postgresql" in ids(result), result
    assert result.error is not None and why in result.error
    assert result.grade == "-"
    assert result.connections_used == seen == 1


def test_stall_in_the_middle_of_the_handshake() -> None:
    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed and parsed[1] == 80877103:
            conn.sendall(b"S")
            conn.recv(4096)  # the ClientHello
            conn.sendall(b"\x16\x03\x03\x00\x7a\x02\x00\x00")  # the start of a ServerHello, then nothing
            stall(conn)
        elif parsed:
            conn.sendall(NO_ENCRYPTION)
            wait_for_close(conn)

    result, seen = audit(handler)
    assert result.reachable
    assert "tls-handshake-failed" in ids(result)
    assert result.grade == "F"
    # The stall stops the TLS probing at once: one handshake, one plaintext probe, no enumeration.
    assert result.connections_by_step == {"tls_handshakes": 1, "plaintext": 1}
    assert result.connections_used == seen


def test_trickling_server_is_bounded_by_the_connection_deadline() -> None:
    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed and parsed[1] == 80877103:
            conn.sendall(b"S")
            conn.recv(4096)
            for _ in range(100):
                conn.sendall(b"\x16")
                time.sleep(0.05)
        elif parsed:
            conn.sendall(NO_ENCRYPTION)

    result, _ = audit(handler)
    assert "tls-handshake-failed" in ids(result)


def test_good_first_handshake_then_stalls() -> None:
    """A server that completes the first handshake and then stalls every later connection."""
    tmp = Path(__import__("tempfile").mkdtemp())
    pki_: Pki = make_pki(tmp, sans=[])
    ctx = server_context(pki_)
    count = {"n": 0}
    lock = threading.Lock()

    def handler(conn: socket.socket) -> None:
        with lock:
            count["n"] += 1
            n = count["n"]
        parsed = startup_or_ssl(conn)
        if not parsed or parsed[1] != 80877103:
            if parsed:
                conn.sendall(NO_ENCRYPTION)
            return
        drain_buffered(
            conn
        )  # as PostgreSQL up to 16, which buffers (then refuses) bytes sent with SSLRequest
        conn.sendall(b"S")
        if n == 1:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                wait_for_close(tls)
        else:
            stall(conn)

    result, seen = audit(handler, max_connections=8)
    assert result.reachable
    assert result.certificate is not None
    assert "enumeration-incomplete" in ids(result)
    assert result.connections_used == seen


def drain_buffered(conn: socket.socket) -> bytes:
    """Whatever the client sent in the SSLRequest's packet beyond the 8 bytes already read."""
    conn.setblocking(False)
    try:
        return conn.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        conn.setblocking(True)
        conn.settimeout(5)


def _pg16(ctx: ssl.SSLContext, after_handshake: bytes) -> Handler:
    """A TLS PostgreSQL that buffers what came with the SSLRequest and, after the handshake, sends
    ``after_handshake``: its refusal when fixed, or its answer to the buffered startup when vulnerable."""

    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed is None:
            return
        length, code = parsed
        if code == 80877103:
            buffered = drain_buffered(conn)
            conn.sendall(b"S")
            with ctx.wrap_socket(conn, server_side=True) as tls:
                if buffered:
                    tls.sendall(after_handshake)
                wait_for_close(tls)
        elif length < 10_000:
            recv_exact(conn, length - 8)
            conn.sendall(NO_ENCRYPTION)

    return handler


MD5_REQUEST = b"R" + struct.pack("!II", 12, 5) + b"salt"


def test_a_server_processing_plaintext_buffered_before_tls_is_a_high_finding(pki: Pki) -> None:  # noqa: F811
    result, seen = audit(_pg16(server_context(pki), MD5_REQUEST), max_connections=100)
    assert result.buffered_plaintext_processed is True
    found = next(f for f in result.findings if f.id == "buffered-plaintext-processed")
    assert found.severity == "high" and "CVE-2021-23214" in found.title
    assert result.connections_by_step["tls_handshakes"] == 1  # folded into the first handshake
    assert result.connections_used == seen
    assert result_to_json(result)["buffered_plaintext_processed"] is True


def test_a_fixed_server_refusing_buffered_plaintext_costs_no_connection(pki: Pki) -> None:  # noqa: F811
    refusal = error_response("08P01", "received unencrypted data after SSL request")
    result, seen = audit(_pg16(server_context(pki), refusal), max_connections=100)
    assert result.buffered_plaintext_processed is False
    assert "buffered-plaintext-processed" not in ids(result)
    assert result.connections_by_step["tls_handshakes"] == 1
    assert result.connections_used == seen


def test_a_server_refusing_the_handshake_after_buffered_bytes_gets_one_more(pki: Pki) -> None:  # noqa: F811
    # Python's ssl server, like PostgreSQL 17, reads the buffered startup as the start of TLS and fails.
    ctx = server_context(pki)

    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed is not None and parsed[1] == 80877103:
            conn.sendall(b"S")
            with ctx.wrap_socket(conn, server_side=True) as tls:
                wait_for_close(tls)
        elif parsed is not None and parsed[0] < 10_000:
            recv_exact(conn, parsed[0] - 8)
            conn.sendall(NO_ENCRYPTION)

    result, seen = audit(handler, max_connections=100)
    assert result.buffered_plaintext_processed is False
    assert result.certificate is not None and result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.connections_by_step["tls_handshakes"] == 2
    assert result.connections_used == seen


def _banner(data: bytes, *, wait_first: bool) -> Handler:
    def handler(conn: socket.socket) -> None:
        if wait_first:
            conn.recv(4096)
        conn.sendall(data)
        stall(conn, 1.0)

    return handler


@pytest.mark.parametrize(
    ("handler", "shown"),
    [
        (_banner(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", wait_first=True), "HTTP/1.1"),
        (_banner(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", wait_first=False), "SSH-2.0"),
        (_banner(b"220 mail.example.com ESMTP\r\n", wait_first=False), "220 mail"),
        (_banner(bytes([0x7F]) + random.Random(4).randbytes(200), wait_first=True), "."),
    ],
    ids=["http", "ssh", "smtp", "random"],
)
def test_other_services_are_not_postgresql(handler: Handler, shown: str) -> None:
    result, seen = audit(handler)
    assert result.reachable
    assert ids(result) == {"not-postgresql"}
    assert result.error is not None and shown in result.error
    assert result.grade == "-"
    assert result.connections_used == seen == 1


def test_immediate_close_is_unreachable() -> None:
    def handler(conn: socket.socket) -> None:
        conn.close()

    result, seen = audit(handler)
    assert not result.reachable
    # Closed before or after our SSLRequest arrived: a clean EOF or a reset, depending on the race.
    assert result.error is not None and ("closed" in result.error or "reset" in result.error)
    assert result.grade == "-"
    assert result.connections_used == seen == 1
    assert exit_status([result]) == 3


def test_tls_garbage_after_s() -> None:
    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed and parsed[1] == 80877103:
            conn.sendall(b"S")
            conn.recv(4096)
            conn.sendall(random.Random(7).randbytes(300))
            stall(conn, 1.0)
        elif parsed:
            conn.sendall(NO_ENCRYPTION)

    result, _ = audit(handler)
    assert result.reachable
    assert "tls-handshake-failed" in ids(result)


def test_real_tls_server_audit_connections(pki: Pki) -> None:  # noqa: F811
    ctx: ssl.SSLContext = server_context(pki)

    def handler(conn: socket.socket) -> None:
        parsed = startup_or_ssl(conn)
        if parsed is None:
            return
        length, code = parsed
        if code == 80877103:
            conn.sendall(b"S")
            with ctx.wrap_socket(conn, server_side=True) as tls:
                wait_for_close(tls)
        elif length > 10_000:
            return  # a direct ClientHello read as a startup packet: PostgreSQL before 17 hangs up
        else:
            recv_exact(conn, length - 8)
            conn.sendall(NO_ENCRYPTION)

    result, seen = audit(handler, max_connections=100)
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.direct_ssl is False
    assert result.connections_used == seen
    assert set(result.connections_by_step) == {"tls_handshakes", "enumeration", "plaintext", "direct_ssl"}
