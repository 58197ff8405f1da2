"""The man in the middle's own behaviour on loopback, without a server: closing is immediate, bad input is
reported as the client's doing."""

from __future__ import annotations

import contextlib
import socket
import time

from pgbatten.attack.forge import Attack
from pgbatten.attack.mitm import Mitm
from pgbatten.attack.mitm_connection import MitmOptions, Verdict
from pgbatten.probe.wire import SSL_REQUEST, Target

CLOSED_PORT = 1  # nothing listens there; the tests never get as far as the server


def _mitm(attack: Attack) -> Mitm:
    options = MitmOptions(
        listen=Target("127.0.0.1", 0),
        upstream=Target("127.0.0.1", CLOSED_PORT),
        attack=attack,
        names=("localhost",),
        timeout=10,
    )
    return Mitm(options)


def test_close_wakes_a_connection_waiting_in_the_handshake() -> None:
    mitm = _mitm(Attack.SELF_SIGNED)
    mitm.start()
    with socket.create_connection(("127.0.0.1", mitm.port)) as client:
        client.sendall(SSL_REQUEST)  # and then no ClientHello: the man in the middle waits for one
        assert client.recv(1) == b"S"
        # Closed at once: whether its thread is already in the handshake or still wrapping the socket (it
        # used to need a head start, and under load a close in between waited for the read timeout).
        started = time.monotonic()
        mitm.close()
        assert time.monotonic() - started < 5  # not the 10 s read timeout
    (conn,) = mitm.connections
    assert conn.error == "the man in the middle stopped during the handshake"
    assert conn.verdict == Verdict.REFUSED


def test_strip_answers_n_and_a_client_that_leaves_is_refused() -> None:
    with _mitm(Attack.STRIP) as mitm, socket.create_connection(("127.0.0.1", mitm.port)) as client:
        client.sendall(SSL_REQUEST)
        assert client.recv(1) == b"N"
        client.close()
        assert mitm.wait_connections(10)
        (conn,) = mitm.connections
    assert conn.stripped and conn.asked == "SSLRequest" and not conn.startup, conn.error
    assert conn.refusal is not None and conn.refusal.startswith(
        "the client closed the connection instead of going on"
    )
    assert conn.verdict == Verdict.REFUSED


def test_garbage_is_not_a_startup() -> None:
    with _mitm(Attack.SELF_SIGNED) as mitm, socket.create_connection(("127.0.0.1", mitm.port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        # Closed without an answer (a reset, as the unread rest of the request is dropped).
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""
        assert mitm.wait_connections(10)
        (conn,) = mitm.connections
    assert conn.verdict == Verdict.REFUSED and not conn.startup
    assert conn.refusal is not None and "not a PostgreSQL startup packet" in conn.refusal
