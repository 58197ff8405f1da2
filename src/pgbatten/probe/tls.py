"""The network side of the outside check: SSLRequest, TLS handshakes, the plaintext login probe.

Every connection forks a PostgreSQL backend, so the plan is frugal: one handshake offering TLS 1.2-1.3 (which
also yields the certificate chain and the cipher), one connection per older version the server has not
already ruled out, and one plaintext StartupMessage that never carries a credential.

``timeout`` bounds each connection as a whole (connect, every read, the handshake), not each read: a server
that trickles one byte at a time cannot stretch a connection past it. A connection that times out after the
server said ``S`` stops the remaining TLS attempts, so a stalled server costs at most two timeouts per target.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pgbatten.errors import ProbeError
from pgbatten.probe import wire
from pgbatten.probe.resolve import connect_tcp

TLS_VERSIONS: tuple[ssl.TLSVersion, ...] = (
    ssl.TLSVersion.TLSv1_3,
    ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_1,
    ssl.TLSVersion.TLSv1,
)
"""Versions tried, best first. SSLv3 and older are not testable with any OpenSSL still in use."""

VERSION_NAMES: dict[ssl.TLSVersion, str] = {
    ssl.TLSVersion.TLSv1_3: "TLSv1.3",
    ssl.TLSVersion.TLSv1_2: "TLSv1.2",
    ssl.TLSVersion.TLSv1_1: "TLSv1.1",
    ssl.TLSVersion.TLSv1: "TLSv1",
}

EXTRA_BYTES_WAIT = 0.05
"""How long to wait, after the answer byte, for bytes that should not be there (seconds)."""

PG_ALPN = "postgresql"

_BANNERS = (b"SSH-",)
"""Greetings of other services whose first byte happens to be a valid SSLRequest answer."""


# --------------------------------------------------------------------------------------------- errors


class Unreachable(ProbeError):
    """TCP connection impossible: DNS failure, refused, unroutable or timed out."""


class NotTls(ProbeError):
    """The server answered SSLRequest with something other than ``S``."""

    def __init__(self, host: str, port: int, response: wire.SslResponse) -> None:
        self.response = response
        super().__init__(host, port, response.detail)


class HandshakeFailed(ProbeError):
    """The server said ``S`` but no TLS session came of it."""

    def __init__(self, host: str, port: int, reason: str, *, timed_out: bool = False, local: bool = False):
        self.timed_out = timed_out
        self.local = local
        super().__init__(host, port, reason)


# --------------------------------------------------------------------------------------------- plumbing


class Deadline:
    """A point in monotonic time that every socket operation of one connection must finish by."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left; raises ``TimeoutError`` once there are none."""
        left = self._end - self._clock()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left

    def arm(self, sock: socket.socket) -> None:
        """Set ``sock``'s timeout to what is left of the deadline."""
        sock.settimeout(self.remaining())


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


def connect(host: str, port: int, deadline: Deadline) -> socket.socket:
    """Open a TCP connection within ``deadline``, or raise :class:`Unreachable`."""
    try:
        sock = connect_tcp(host, port, deadline.remaining())
    except OSError as exc:
        raise Unreachable(host, port, _describe_os_error(exc)) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int, deadline: Deadline) -> bytes:
    """Read ``size`` bytes, or fewer if the peer closes; raises ``TimeoutError`` at the deadline."""
    chunks = bytearray()
    while len(chunks) < size:
        deadline.arm(sock)
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


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


def _drain_pending(sock: socket.socket, deadline: Deadline) -> bytes:
    """Whatever arrived beyond the answer byte, waiting only a moment for it."""
    wait = min(EXTRA_BYTES_WAIT, deadline.remaining())
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(wire.MAX_MESSAGE_LENGTH)
    except (BlockingIOError, InterruptedError):
        return b""
    finally:
        sock.setblocking(True)


def ssl_request(sock: socket.socket, deadline: Deadline) -> wire.SslResponse:
    """Send SSLRequest and classify the answer, including any bytes that should not follow it."""
    deadline.arm(sock)
    sock.sendall(wire.SSL_REQUEST)
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
        data = first + _drain_pending(sock, deadline)
        if data.startswith(_BANNERS):
            # An SSH server greets every client with "SSH-2.0-...": its first byte is not an 'S' answer.
            return wire.SslResponse(
                wire.SslAnswer.UNEXPECTED,
                detail=f"not a PostgreSQL answer to SSLRequest: {wire.printable_preview(data)!r}",
            )
        return wire.classify_ssl_response(data)
    if first:
        # Not PostgreSQL; read a little more so the report can show what it is.
        return wire.classify_ssl_response(first + _drain_pending(sock, deadline))
    return wire.classify_ssl_response(b"")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def make_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A probing client context: no verification (a bad certificate is a finding, not an exception).

    ``version`` pins the context to exactly one protocol version; None offers TLS 1.2 and 1.3 with the
    default cipher list, as a modern libpq client would.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    else:
        with warnings.catch_warnings():
            # Offering a deprecated version is the whole point of this context.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            # OpenSSL 3 refuses TLS < 1.2 at security level 1 and above.
            ctx.set_ciphers("ALL:@SECLEVEL=0")
    with contextlib.suppress(NotImplementedError):
        ctx.set_alpn_protocols([PG_ALPN])
    return ctx


def locally_testable(ctx: ssl.SSLContext) -> str | None:
    """None if this OpenSSL can produce a ClientHello with ``ctx``, else why not. No network involved."""
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return None
    except ssl.SSLError as exc:
        return f"local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer it: {exc.reason or exc}"
    return None


def open_pg_tls(
    host: str,
    port: int,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext,
    on_response: Callable[[wire.SslResponse], None] | None = None,
    on_connected: Callable[[], None] | None = None,
) -> tuple[ssl.SSLSocket, bytes]:
    """Connect, send SSLRequest, and complete a TLS handshake over PostgreSQL's in-band upgrade.

    Returns the TLS socket (caller closes it) and the bytes that arrived after ``S`` before our ClientHello
    (normally empty; anything else is the CVE-2021-23222 pattern). Raises :class:`Unreachable`,
    :class:`NotTls` (``N``, ``E``, or not PostgreSQL) or :class:`HandshakeFailed`. ``on_response`` sees the
    SSLRequest answer before the handshake, so a caller learns it even when the handshake then fails.
    """
    deadline = Deadline(timeout)
    sock = connect(host, port, deadline)
    if on_connected is not None:
        on_connected()
    try:
        try:
            response = ssl_request(sock, deadline)
        except TimeoutError as exc:
            raise Unreachable(host, port, "no answer to SSLRequest before the timeout") from exc
        except OSError as exc:
            raise Unreachable(host, port, f"SSLRequest failed: {_describe_os_error(exc)}") from exc
        if on_response is not None:
            on_response(response)
        if response.answer is not wire.SslAnswer.ACCEPTED:
            raise NotTls(host, port, response)
        tls = ssl_context.wrap_socket(
            sock, server_hostname=None if _is_ip(host) else host, do_handshake_on_connect=False
        )
        try:
            deadline.arm(tls)
            tls.do_handshake()
        except TimeoutError as exc:
            tls.close()
            raise HandshakeFailed(host, port, "TLS handshake timed out", timed_out=True) from exc
        except ssl.SSLError as exc:
            tls.close()
            local = exc.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE")
            raise HandshakeFailed(
                host, port, f"TLS handshake failed: {exc.reason or exc}", local=local
            ) from exc
        except OSError as exc:
            tls.close()
            raise HandshakeFailed(host, port, f"TLS handshake failed: {_describe_os_error(exc)}") from exc
        return tls, response.extra
    except BaseException:
        sock.close()
        raise


# --------------------------------------------------------------------------------------------- results


class VersionStatus(StrEnum):
    """Outcome of trying one protocol version."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    NOT_TESTABLE = "not-testable-locally"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class VersionAttempt:
    """One protocol version and what became of offering it."""

    version: str
    status: VersionStatus
    detail: str = ""
    connected: bool = False


@dataclass(frozen=True)
class HandshakeInfo:
    """What one successful handshake tells: version, cipher and the chain as sent (DER, leaf first)."""

    version: str
    cipher: str
    cipher_bits: int | None
    chain: tuple[bytes, ...]
    full_chain: bool
    alpn: str | None = None


@dataclass(frozen=True)
class TlsScan:
    """Everything the TLS connections found for one target."""

    ssl_response: wire.SslResponse | None
    attempts: tuple[VersionAttempt, ...] = ()
    best: HandshakeInfo | None = None
    extra_after_s: bytes = b""
    connections: int = 0
    unreachable: str | None = None
    stalled: str | None = None

    @property
    def accepted_versions(self) -> tuple[str, ...]:
        """Accepted protocol names, oldest first (``["TLSv1.2", "TLSv1.3"]``)."""
        return tuple(a.version for a in reversed(self.attempts) if a.status is VersionStatus.ACCEPTED)


def _capture(tls: ssl.SSLSocket) -> HandshakeInfo:
    cipher = tls.cipher()
    leaf = tls.getpeercert(binary_form=True)
    chain: tuple[bytes, ...] = (leaf,) if leaf else ()
    full = False
    # The chain the server sent is only reachable through the private _sslobj before Python 3.13.
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is not None:
        with contextlib.suppress(Exception):
            certs = getter() or []
            ders = tuple(c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs)  # type: ignore[attr-defined]
            if ders:
                chain, full = ders, True
    return HandshakeInfo(
        version=tls.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        cipher_bits=cipher[2] if cipher else None,
        chain=chain,
        full_chain=full,
        alpn=tls.selected_alpn_protocol(),
    )


@dataclass
class _Scan:
    host: str
    port: int
    timeout: float
    connections: int = 0
    first_response: wire.SslResponse | None = None
    extra: bytes = b""
    attempts: dict[ssl.TLSVersion, VersionAttempt] = field(default_factory=dict)

    def connected(self) -> None:
        # Only connections the server accepted count: each one is a backend forked (or a slot taken).
        self.connections += 1

    def note(self, response: wire.SslResponse) -> None:
        if self.first_response is None:
            self.first_response = response
        if response.extra and not self.extra:
            self.extra = response.extra

    @contextlib.contextmanager
    def handshake(self, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
        tls, _ = open_pg_tls(
            self.host,
            self.port,
            timeout=self.timeout,
            ssl_context=ctx,
            on_response=self.note,
            on_connected=self.connected,
        )
        try:
            yield tls
        finally:
            # close_notify lets the backend see a clean EOF before its startup packet, which it does not
            # log; a bare TCP close would be logged as an SSL error on every probe connection.
            with contextlib.suppress(OSError, ValueError):
                tls.settimeout(min(1.0, self.timeout))
                tls.unwrap()
            with contextlib.suppress(OSError):
                tls.close()


def tls_versions_accepted(
    host: str, port: int, *, timeout: float, versions: Sequence[ssl.TLSVersion] = TLS_VERSIONS
) -> TlsScan:
    """Find which protocol versions the server accepts, with as few connections as that takes.

    The first connection offers TLS 1.2-1.3; the server's choice settles every version above it. Each
    remaining version then costs one connection. Never raises for network trouble: it is in the result.
    """
    scan = _Scan(host, port, timeout)
    best, early = _first(scan, versions)
    if early is not None:
        return early

    for v in versions:
        if v in scan.attempts:
            continue
        name = VERSION_NAMES[v]
        ctx = make_context(v)
        why_not = locally_testable(ctx)
        if why_not is not None:
            scan.attempts[v] = VersionAttempt(name, VersionStatus.NOT_TESTABLE, why_not)
            continue
        try:
            with scan.handshake(ctx) as tls:
                info = _capture(tls)
            scan.attempts[v] = VersionAttempt(name, VersionStatus.ACCEPTED, f"cipher {info.cipher}", True)
            if best is None:
                best = info
        except HandshakeFailed as exc:
            if exc.timed_out:
                scan.attempts[v] = VersionAttempt(name, VersionStatus.ERROR, exc.reason, True)
                return _finish(scan, best, stalled=exc.reason)
            status = VersionStatus.NOT_TESTABLE if exc.local else VersionStatus.REFUSED
            scan.attempts[v] = VersionAttempt(name, status, exc.reason, True)
        except (Unreachable, NotTls) as exc:
            # The server changed its mind between connections (restart, connection limit).
            scan.attempts[v] = VersionAttempt(name, VersionStatus.ERROR, exc.reason)
    return _finish(scan, best)


def _first(scan: _Scan, versions: Sequence[ssl.TLSVersion]) -> tuple[HandshakeInfo | None, TlsScan | None]:
    """The wide TLS 1.2-1.3 handshake: (what it captured, the final scan if nothing more can be tried)."""
    best: HandshakeInfo | None = None
    try:
        with scan.handshake(make_context()) as tls:
            best = _capture(tls)
        chosen = _version_of(best.version)
        for v in versions:
            if v == chosen:
                scan.attempts[v] = VersionAttempt(
                    best.version, VersionStatus.ACCEPTED, f"cipher {best.cipher}", True
                )
            elif v > chosen and v >= ssl.TLSVersion.TLSv1_2:
                detail = f"server chose {best.version} when this was offered"
                scan.attempts[v] = VersionAttempt(VERSION_NAMES[v], VersionStatus.REFUSED, detail, True)
    except Unreachable as exc:
        return None, TlsScan(scan.first_response, connections=scan.connections, unreachable=exc.reason)
    except NotTls:
        return None, TlsScan(scan.first_response, connections=scan.connections, extra_after_s=scan.extra)
    except HandshakeFailed as exc:
        if exc.timed_out:
            return None, _finish(scan, best, stalled=exc.reason)
        # Neither 1.2 nor 1.3 came of it; the server may still speak an older version.
        status = VersionStatus.NOT_TESTABLE if exc.local else VersionStatus.REFUSED
        for v in versions:
            if v >= ssl.TLSVersion.TLSv1_2:
                scan.attempts[v] = VersionAttempt(VERSION_NAMES[v], status, exc.reason, True)
    return best, None


def first_handshake(host: str, port: int, *, timeout: float) -> TlsScan:
    """One connection: SSLRequest, then a libpq-like TLS 1.2-1.3 handshake taken to completion.

    The full audit's anchor: it classifies the SSLRequest answer (bytes after ``S`` included), proves a
    real client completes a handshake, and yields the chain as sent, which TLS 1.3 hides from the raw
    enumeration. Versions below the one chosen are left to the enumeration (not in ``attempts``).
    """
    scan = _Scan(host, port, timeout)
    best, early = _first(scan, TLS_VERSIONS)
    return early if early is not None else _finish(scan, best)


def _version_of(name: str) -> ssl.TLSVersion:
    for v, n in VERSION_NAMES.items():
        if n == name:
            return v
    return ssl.TLSVersion.MINIMUM_SUPPORTED


def _finish(scan: _Scan, best: HandshakeInfo | None, stalled: str | None = None) -> TlsScan:
    ordered = tuple(scan.attempts[v] for v in TLS_VERSIONS if v in scan.attempts)
    return TlsScan(
        scan.first_response,
        attempts=ordered,
        best=best,
        extra_after_s=scan.extra,
        connections=scan.connections,
        stalled=stalled,
    )


# --------------------------------------------------------------------------------------------- plaintext


@dataclass(frozen=True)
class PlaintextResult:
    """The answer to an unencrypted StartupMessage (user ``pgbatten_probe``, no credentials ever sent)."""

    verdict: wire.PlaintextVerdict | None
    connected: bool
    error: str | None = None


def probe_plaintext(host: str, port: int, timeout: float) -> PlaintextResult:
    """Ask for an unencrypted login and classify the first answer, then hang up.

    No Terminate is sent: a backend waiting for a password logs nothing when the client just disconnects
    (as psql does at a password prompt), but logs a protocol violation for any other message.
    """
    deadline = Deadline(timeout)
    try:
        sock = connect(host, port, deadline)
    except Unreachable as exc:
        return PlaintextResult(None, False, exc.reason)
    try:
        deadline.arm(sock)
        sock.sendall(
            wire.startup_message(wire.PROBE_USER, wire.PROBE_DATABASE, {"application_name": "pgbatten check"})
        )
        msg = read_message(sock, deadline)
        if msg.type == "v" and msg.problem is None:
            # NegotiateProtocolVersion precedes the real answer.
            msg = read_message(sock, deadline)
        return PlaintextResult(wire.classify_startup_response(msg), True)
    except TimeoutError:
        return PlaintextResult(None, True, "no answer to the startup message before the timeout")
    except OSError as exc:
        return PlaintextResult(None, True, f"startup message failed: {_describe_os_error(exc)}")
    finally:
        sock.close()
