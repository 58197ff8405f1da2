"""The one way the outside check opens a PostgreSQL connection and asks for TLS.

Every probe (the stdlib handshakes of :mod:`probe.tls`, the raw hellos of :mod:`probe.enumerate`, the
plaintext and buffered-bytes probes) connects through :func:`connect`, asks for TLS with
:func:`request_tls` (an SSLRequest whose answer :func:`wire.classify_ssl_response` judges, in one place) or
skips it for PostgreSQL 17's direct SSL, and is bounded by one :class:`Deadline` type. What a peer does is
reported through the typed errors below, never as a bare ``OSError``.

``extra_wait`` is how long to wait after the answer byte for bytes that must not follow it (the
CVE-2021-23222 pattern). Only the first connection to a target needs it (:data:`EXTRA_BYTES_WAIT`); later
ones take what has already arrived, so a target's dozens of enumeration connections do not each pay it.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable

from pgbatten.errors import ProbeError
from pgbatten.probe import pacing, wire
from pgbatten.probe.resolve import connect_tcp

EXTRA_BYTES_WAIT = 0.05
"""How long the first connection of a target waits, after the answer byte, for bytes that should not be
there (seconds)."""


# --------------------------------------------------------------------------------------------- deadline


class Deadline:
    """A point in monotonic time that every socket operation bounded by it must finish by.

    ``within`` nests it in a longer one (a connection inside a target's whole audit): it ends at whichever
    comes first.
    """

    def __init__(
        self,
        seconds: float,
        *,
        within: Deadline | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        end = clock() + seconds
        self._end: float = min(end, within._end) if within is not None else end

    def left(self) -> float:
        """Seconds left (zero or negative once passed); never raises."""
        return self._end - self._clock()

    def remaining(self) -> float:
        """Seconds left; raises ``TimeoutError`` once there are none."""
        left = self.left()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def arm(self, sock: socket.socket) -> None:
        """Set ``sock``'s timeout to what is left of the deadline."""
        sock.settimeout(self.remaining())


# --------------------------------------------------------------------------------------------- errors


class Unreachable(ProbeError):
    """TCP connection impossible (DNS failure, refused, unroutable, timed out) or no answer in time."""


class NoAnswer(Unreachable):
    """The TCP connection exists, but the peer said nothing before the deadline."""


class NotTls(ProbeError):
    """The answer to SSLRequest rules out TLS on this connection (``N``, ``E``, not PostgreSQL, or bytes
    after ``S`` where the caller refuses them)."""

    def __init__(self, host: str, port: int, response: wire.SslResponse, reason: str | None = None) -> None:
        self.response = response
        super().__init__(host, port, reason or response.detail)


class HandshakeFailed(ProbeError):
    """The server said ``S`` but no TLS session came of it."""

    def __init__(
        self, host: str, port: int, reason: str, *, timed_out: bool = False, local: bool = False
    ) -> None:
        self.timed_out = timed_out
        self.local = local
        super().__init__(host, port, reason)


def describe_os_error(exc: OSError) -> str:
    """A socket error as a reader's phrase: ``connection refused``, ``timed out``…"""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------- plumbing


def connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    """Open a TCP connection within ``deadline``, or raise :class:`Unreachable`.

    A host that has not answered the SYN within :data:`pacing.GRACE` (a firewall that drops it) is waited
    for outside the fleet's concurrency bound, like a silent peer.
    """
    try:
        try:
            sock = connect_tcp(host, port, min(pacing.GRACE, deadline.remaining()))
        except TimeoutError:
            if deadline.left() <= 0:
                raise
            with pacing.waiting():
                sock = connect_tcp(host, port, deadline.remaining())
    except OSError as exc:
        raise Unreachable(host, port, describe_os_error(exc)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int, deadline: Deadline) -> bytes:
    """Read ``size`` bytes, or fewer if the peer closes; raises ``TimeoutError`` at the deadline."""
    chunks = bytearray()
    while len(chunks) < size:
        deadline.arm(sock)
        try:
            chunk = sock.recv(size - len(chunks))
        except (ConnectionResetError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def recv_some(sock: socket.socket, deadline: Deadline, limit: int = 65536) -> bytes:
    """Whatever the peer sends next (empty when it closes); raises ``TimeoutError`` at the deadline."""
    deadline.arm(sock)
    try:
        return sock.recv(limit)
    except (ConnectionResetError, ConnectionAbortedError):
        return b""


def read_message(sock: socket.socket, deadline: Deadline) -> wire.BackendMessage:
    """Read one backend message, refusing lengths beyond :data:`wire.MAX_MESSAGE_LENGTH`."""
    header = recv_exact(sock, wire.HEADER_LENGTH, deadline)
    mtype, body_length, problem = wire.parse_header(header)
    if problem is not None:
        if len(header) < wire.HEADER_LENGTH:
            problem = f"{problem}: {wire.printable_preview(header)!r}" if header else "connection closed"
        return wire.BackendMessage(mtype, b"", problem)
    body = recv_exact(sock, body_length, deadline)
    if len(body) < body_length:
        return wire.BackendMessage(mtype, body, f"connection closed after {len(body)} of {body_length} bytes")
    return wire.BackendMessage(mtype, body)


def _pending(sock: socket.socket, deadline: Deadline, wait: float) -> bytes:
    """Whatever arrived beyond the answer byte, waiting at most ``wait`` for it (0: only what is here)."""
    readable, _, _ = select.select([sock], [], [], max(0.0, min(wait, deadline.left())))
    if not readable:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(wire.MAX_MESSAGE_LENGTH)
    except (BlockingIOError, InterruptedError, ConnectionResetError):
        return b""
    finally:
        sock.setblocking(True)


def request_tls(
    sock: socket.socket, deadline: Deadline, *, extra_wait: float = 0.0, trailing: bytes = b""
) -> wire.SslResponse:
    """Send SSLRequest (with ``trailing`` bytes in the same packet, if any) and classify the answer.

    Raises ``TimeoutError`` or ``OSError`` for the caller to word. ``trailing`` is for the probe of
    CVE-2021-23214 (plaintext bytes buffered before the handshake); normal callers send nothing more.
    """
    deadline.arm(sock)
    sock.sendall(wire.SSL_REQUEST + trailing)
    readable, _, _ = select.select([sock], [], [], max(0.0, min(pacing.GRACE, deadline.left())))
    if readable:
        first = recv_exact(sock, 1, deadline)
    else:
        # Silent so far: a blackhole or a stuck server costs nothing while it is silent, so wait for it
        # without holding a fleet slot that a responsive target could use.
        with pacing.waiting():
            first = recv_exact(sock, 1, deadline)
    if first == b"E":
        rest = recv_exact(sock, 4, deadline)
        _, body_length, problem = wire.parse_header(first + rest)
        if problem is not None:
            # An oversized or truncated "ErrorResponse" is no PostgreSQL answer: never read a body of it.
            return wire.SslResponse(
                wire.SslAnswer.UNEXPECTED,
                detail=f"malformed answer to SSLRequest: {problem}: {wire.printable_preview(first + rest)!r}",
            )
        return wire.classify_ssl_response(first + rest + recv_exact(sock, body_length, deadline))
    if first in (b"S", b"N"):
        return wire.classify_ssl_response(first + _pending(sock, deadline, extra_wait))
    if first:
        # Not PostgreSQL; read a little more so the report can show what it is.
        return wire.classify_ssl_response(first + _pending(sock, deadline, EXTRA_BYTES_WAIT))
    return wire.classify_ssl_response(b"")


def open_channel(
    host: str,
    port: int,
    deadline: Deadline,
    *,
    direct: bool = False,
    extra_wait: float = 0.0,
    refuse_extra: bool = False,
    trailing: bytes = b"",
    on_connected: Callable[[], None] | None = None,
    on_response: Callable[[wire.SslResponse], None] | None = None,
) -> tuple[socket.socket, wire.SslResponse | None]:
    """Connect and get to the point where the next bytes sent are a ClientHello.

    ``direct`` skips the SSLRequest (PostgreSQL 17 direct SSL) and returns no response. Otherwise the
    answer must be ``S``; anything else raises :class:`NotTls` (after ``on_response`` saw it), as do bytes
    after the ``S`` when ``refuse_extra``. Raises :class:`Unreachable` when no connection or no answer
    comes in time. ``on_connected`` runs once the TCP connection exists: it is a backend forked.
    ``trailing`` goes out in the SSLRequest's packet (see :func:`request_tls`).
    """
    sock = connect(host, port, deadline)
    if on_connected is not None:
        on_connected()
    if direct:
        return sock, None
    try:
        try:
            response = request_tls(sock, deadline, extra_wait=extra_wait, trailing=trailing)
        except TimeoutError as exc:
            raise NoAnswer(host, port, "no answer to SSLRequest before the timeout") from exc
        except OSError as exc:
            raise Unreachable(host, port, f"SSLRequest failed: {describe_os_error(exc)}") from exc
        if on_response is not None:
            on_response(response)
        if response.answer is not wire.SslAnswer.ACCEPTED:
            raise NotTls(host, port, response)
        if refuse_extra and response.extra:
            raise NotTls(
                host,
                port,
                response,
                "server sent unencrypted data after accepting SSLRequest "
                f"({len(response.extra)} bytes: {wire.printable_preview(response.extra)!r})",
            )
    except BaseException:
        sock.close()
        raise
    return sock, response


__all__ = [
    "EXTRA_BYTES_WAIT",
    "Deadline",
    "HandshakeFailed",
    "NoAnswer",
    "NotTls",
    "Unreachable",
    "connect",
    "describe_os_error",
    "open_channel",
    "read_message",
    "recv_exact",
    "recv_some",
    "request_tls",
]
