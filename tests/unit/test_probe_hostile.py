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
