"""The stdlib TLS handshakes of the outside check: a libpq-like client, one protocol version at a time.

Every connection forks a PostgreSQL backend, so the plan is frugal: one handshake offering TLS 1.2-1.3 (which
also yields the certificate chain and the cipher), and in the quick check one connection per older version
the server has not already ruled out. Connections are opened by :mod:`probe.transport`.

``timeout`` bounds each connection as a whole (connect, every read, the handshake), not each read: a server
that trickles one byte at a time cannot stretch a connection past it. A connection that times out after the
server said ``S`` stops the remaining TLS attempts, so a stalled server costs at most two timeouts per target.
Only the first connection waits for bytes after the ``S`` (:data:`transport.EXTRA_BYTES_WAIT`).
"""

from __future__ import annotations

import contextlib
import ssl
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pgbatten.probe import wire
from pgbatten.probe.plaintext import probe_startup
from pgbatten.probe.transport import (
    EXTRA_BYTES_WAIT,
    Deadline,
    HandshakeFailed,
    NotTls,
    Unreachable,
    describe_os_error,
    open_channel,
    read_message,
)
from pgbatten.probe.versions import ALPN_POSTGRESQL, TlsVersion

TLS_VERSIONS: tuple[TlsVersion, ...] = (
    TlsVersion.TLSv1_3,
    TlsVersion.TLSv1_2,
    TlsVersion.TLSv1_1,
    TlsVersion.TLSv1,
)
"""Versions the stdlib client tries, best first. SSLv3 is left to the raw enumeration: no OpenSSL still in
use can offer it."""


def make_context(version: TlsVersion | None = None) -> ssl.SSLContext:
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
            ctx.minimum_version = version.ssl_version
            ctx.maximum_version = version.ssl_version
        if version < TlsVersion.TLSv1_2:
            # OpenSSL 3 refuses TLS < 1.2 at security level 1 and above.
            ctx.set_ciphers("ALL:@SECLEVEL=0")
    with contextlib.suppress(NotImplementedError):
        ctx.set_alpn_protocols([ALPN_POSTGRESQL])
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
    server_name: str | None = None,
    extra_wait: float = EXTRA_BYTES_WAIT,
    trailing: bytes = b"",
    on_response: Callable[[wire.SslResponse], None] | None = None,
    on_connected: Callable[[], None] | None = None,
) -> tuple[ssl.SSLSocket, bytes]:
    """Connect to ``host``, send SSLRequest, and complete a TLS handshake over PostgreSQL's in-band upgrade.

    ``server_name`` (default ``host``) is the name sent as SNI, unless it is an IP address (libpq's
    ``host`` when ``hostaddr`` says where to connect). Returns the TLS socket (caller closes it) and the
    bytes that arrived after ``S`` before our ClientHello (normally empty; anything else is the
    CVE-2021-23222 pattern). Raises :class:`Unreachable`, :class:`NotTls` (``N``, ``E``, or not
    PostgreSQL) or :class:`HandshakeFailed`. ``on_response`` sees the SSLRequest answer before the
    handshake, so a caller learns it even when the handshake then fails. ``trailing`` is sent in the
    SSLRequest's packet (the buffered-plaintext probe of :func:`first_handshake`).
    """
    deadline = Deadline(timeout)
    sock, response = open_channel(
        host,
        port,
        deadline,
        extra_wait=extra_wait,
        trailing=trailing,
        on_connected=on_connected,
        on_response=on_response,
    )
    assert response is not None
    name = server_name if server_name is not None else host
    try:
        tls = ssl_context.wrap_socket(
            sock, server_hostname=None if wire.is_ip_literal(name) else name, do_handshake_on_connect=False
        )
    except OSError as exc:
        # wrap_socket reads from a socket the peer has already reset (ECONNRESET): a refusal too.
        sock.close()
        raise HandshakeFailed(host, port, f"TLS handshake failed: {describe_os_error(exc)}") from exc
    except BaseException:
        sock.close()
        raise
    try:
        deadline.arm(tls)
        tls.do_handshake()
    except TimeoutError as exc:
        tls.close()
        raise HandshakeFailed(host, port, "TLS handshake timed out", timed_out=True) from exc
    except ssl.SSLError as exc:
        tls.close()
        local = exc.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE")
        raise HandshakeFailed(host, port, f"TLS handshake failed: {exc.reason or exc}", local=local) from exc
    except OSError as exc:
        tls.close()
        raise HandshakeFailed(host, port, f"TLS handshake failed: {describe_os_error(exc)}") from exc
    except BaseException:
        tls.close()
        raise
    return tls, response.extra


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
class BufferedVerdict:
    """CVE-2021-23214: did the server process plaintext that came with the SSLRequest, before the handshake?

    ``processed`` is True for a vulnerable server, False for one that refused the bytes, None when it
    could not be told.
    """

    processed: bool | None
    detail: str


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
    buffered: BufferedVerdict | None = None
    """Full audit: what the first connection learned from plaintext sent with its SSLRequest."""

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
    server_name: str | None = None
    connections: int = 0
    first_response: wire.SslResponse | None = None
    extra: bytes = b""
    extra_checked: bool = False
    attempts: dict[TlsVersion, VersionAttempt] = field(default_factory=dict)

    def connected(self) -> None:
        # Only connections the server accepted count: each one is a backend forked (or a slot taken).
        self.connections += 1
        self.extra_checked = True

    def note(self, response: wire.SslResponse) -> None:
        if self.first_response is None:
            self.first_response = response
        if response.extra and not self.extra:
            self.extra = response.extra

    @contextlib.contextmanager
    def handshake(self, ctx: ssl.SSLContext, trailing: bytes = b"") -> Iterator[ssl.SSLSocket]:
        tls, _ = open_pg_tls(
            self.host,
            self.port,
            timeout=self.timeout,
            ssl_context=ctx,
            server_name=self.server_name,
            # Bytes after 'S' are a property of the path, not of the version offered: look once.
            extra_wait=0.0 if self.extra_checked else EXTRA_BYTES_WAIT,
            trailing=trailing,
            on_response=self.note,
            on_connected=self.connected,
        )
        try:
            yield tls
        finally:
            close_gently(tls, self.timeout)


def close_gently(tls: ssl.SSLSocket, timeout: float) -> None:
    """close_notify, then close: the backend sees a clean EOF before its startup packet, which it does not
    log; a bare TCP close would be logged as an SSL error on every probe connection."""
    with contextlib.suppress(OSError, ValueError):
        tls.settimeout(min(1.0, timeout))
        tls.unwrap()
    with contextlib.suppress(OSError):
        tls.close()


def tls_versions_accepted(
    host: str,
    port: int,
    *,
    timeout: float,
    versions: Sequence[TlsVersion] = TLS_VERSIONS,
    server_name: str | None = None,
) -> TlsScan:
    """Find which protocol versions the server accepts, with as few connections as that takes.

    The first connection offers TLS 1.2-1.3; the server's choice settles every version above it. Each
    remaining version then costs one connection. Never raises for network trouble: it is in the result.
    """
    scan = _Scan(host, port, timeout, server_name)
    best, early = _first(scan, versions)
    if early is not None:
        return early

    for v in versions:
        if v in scan.attempts:
            continue
        ctx = make_context(v)
        why_not = locally_testable(ctx)
        if why_not is not None:
            scan.attempts[v] = VersionAttempt(v.label, VersionStatus.NOT_TESTABLE, why_not)
            continue
        try:
            with scan.handshake(ctx) as tls:
                info = _capture(tls)
            scan.attempts[v] = VersionAttempt(v.label, VersionStatus.ACCEPTED, f"cipher {info.cipher}", True)
            if best is None:
                best = info
        except HandshakeFailed as exc:
            if exc.timed_out:
                scan.attempts[v] = VersionAttempt(v.label, VersionStatus.ERROR, exc.reason, True)
                return _finish(scan, best, stalled=exc.reason)
            status = VersionStatus.NOT_TESTABLE if exc.local else VersionStatus.REFUSED
            scan.attempts[v] = VersionAttempt(v.label, status, exc.reason, True)
        except (Unreachable, NotTls) as exc:
            # The server changed its mind between connections (restart, connection limit).
            scan.attempts[v] = VersionAttempt(v.label, VersionStatus.ERROR, exc.reason)
    return _finish(scan, best)


def _first(
    scan: _Scan, versions: Sequence[TlsVersion], buffered: list[BufferedVerdict] | None = None
) -> tuple[HandshakeInfo | None, TlsScan | None]:
    """The wide TLS 1.2-1.3 handshake: (what it captured, the final scan if nothing more can be tried).

    With ``buffered``, the SSLRequest carries a startup message in the same packet, and what the server
    then says over TLS (to which we send nothing) is judged and appended there.
    """
    best: HandshakeInfo | None = None
    try:
        with scan.handshake(make_context(), probe_startup() if buffered is not None else b"") as tls:
            best = _capture(tls)
            if buffered is not None:
                buffered.append(_buffered_verdict(tls, scan.timeout))
        chosen = TlsVersion.from_label(best.version)
        for v in versions:
            if v == chosen:
                scan.attempts[v] = VersionAttempt(
                    best.version, VersionStatus.ACCEPTED, f"cipher {best.cipher}", True
                )
            elif chosen is not None and v > chosen and v >= TlsVersion.TLSv1_2:
                detail = f"server chose {best.version} when this was offered"
                scan.attempts[v] = VersionAttempt(v.label, VersionStatus.REFUSED, detail, True)
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
            if v >= TlsVersion.TLSv1_2:
                scan.attempts[v] = VersionAttempt(v.label, status, exc.reason, True)
    return best, None


_BUFFERED_ANSWER_WAIT = 1.0
"""A server answers the buffered startup message (or refuses it) right after the handshake."""


def _buffered_verdict(tls: ssl.SSLSocket, timeout: float) -> BufferedVerdict:
    try:
        msg = read_message(tls, Deadline(min(timeout, _BUFFERED_ANSWER_WAIT)))
    except TimeoutError:
        return BufferedVerdict(None, "no answer over TLS: the server may still hold the buffered bytes")
    except (OSError, ssl.SSLError) as exc:
        return BufferedVerdict(False, f"the server ended the session after the handshake ({exc})")
    if msg.problem == "connection closed":
        return BufferedVerdict(False, "the server hung up after the handshake without processing them")
    return BufferedVerdict(*wire.classify_buffered_answer(msg))


def first_handshake(
    host: str,
    port: int,
    *,
    timeout: float,
    server_name: str | None = None,
    buffered_probe: bool = False,
) -> TlsScan:
    """One connection: SSLRequest, then a libpq-like TLS 1.2-1.3 handshake taken to completion.

    The full audit's anchor: it classifies the SSLRequest answer (bytes after ``S`` included), proves a
    real client completes a handshake, and yields the chain as sent, which TLS 1.3 hides from the raw
    enumeration. Versions below the one chosen are left to the enumeration (not in ``attempts``).

    ``buffered_probe`` folds the CVE-2021-23214 probe into the same connection: a startup message rides in
    the SSLRequest's packet. PostgreSQL up to 16 completes the handshake and then refuses it (or, unfixed,
    answers it: :attr:`TlsScan.buffered`). PostgreSQL 17+ hands such bytes to TLS, whose handshake then
    fails: one more connection, without them, does what the first could not.
    """
    scan = _Scan(host, port, timeout, server_name)
    if not buffered_probe:
        best, early = _first(scan, TLS_VERSIONS)
        return early if early is not None else _finish(scan, best)
    seen: list[BufferedVerdict] = []
    best, early = _first(scan, TLS_VERSIONS, buffered=seen)
    if seen:
        return replace(early if early is not None else _finish(scan, best), buffered=seen[0])
    if early is None and best is None:
        refused = next((a.detail for a in scan.attempts.values()), "handshake failed")
        scan.attempts.clear()
        # What followed 'S' on that connection was the server's TLS answer to our own buffered bytes (a
        # real PostgreSQL 17 sends a 7-byte alert), not an injection: the clean connection looks again.
        scan.first_response, scan.extra, scan.extra_checked = None, b"", False
        best, early = _first(scan, TLS_VERSIONS)
        verdict = None
        if best is not None:
            verdict = BufferedVerdict(
                False, f"the server refused the TLS handshake that followed the buffered bytes ({refused})"
            )
        return replace(early if early is not None else _finish(scan, best), buffered=verdict)
    return early if early is not None else _finish(scan, best)


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


__all__ = [
    "TLS_VERSIONS",
    "BufferedVerdict",
    "HandshakeInfo",
    "TlsScan",
    "VersionAttempt",
    "VersionStatus",
    "close_gently",
    "first_handshake",
    "locally_testable",
    "make_context",
    "open_pg_tls",
    "tls_versions_accepted",
]
