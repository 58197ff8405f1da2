"""Enumerate a PostgreSQL server's TLS versions, cipher suites and groups with few connections.

Generic scanners try each suite on its own connection; every connection to PostgreSQL forks a backend,
so sslyze opens ~600 connections per server. Here each connection offers *every* remaining candidate and
the server names the one it likes best; that suite is removed and the rest offered again, until the
server refuses. ``n`` accepted suites cost ``n + 1`` connections, and the same answers also reveal the key
exchange groups and whether the server enforces its own order.

The pure plans live in :mod:`probe.enumeration_plan`; this module is the small I/O layer that opens
connections (through :mod:`probe.transport`), counts them and turns the bytes into outcomes, and the fold
of per-version results into a :class:`TlsEnumeration`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pgbatten.errors import ProbeError
from pgbatten.probe.cipher_suites import EC_GROUPS, candidates_for, group_name, suite_name
from pgbatten.probe.client_hello import build_client_hello, generate_key_shares
from pgbatten.probe.enumeration_plan import (
    ALL_GROUPS,
    KEY_SHARE_GROUPS,
    HelloJob,
    Outcome,
    Verdict,
    VersionResult,
    judge,
    run_enumeration,
)
from pgbatten.probe.tlsraw import ServerAnswer, TlsDecodeError, parse_server_response
from pgbatten.probe.transport import Deadline, NoAnswer, NotTls, Unreachable, open_channel, recv_some
from pgbatten.probe.versions import ALPN_POSTGRESQL, TlsVersion

# --------------------------------------------------------------------------------------------- I/O


class _Connector:
    """Opens and counts connections; turns bytes into outcomes. Never raises for what a peer does."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        deadline: Deadline,
        direct_ssl: bool,
        server_name: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.deadline = deadline
        self.direct_ssl = direct_ssl
        self.server_name = server_name if server_name is not None else host
        self.connections = 0
        self.key_shares = generate_key_shares(KEY_SHARE_GROUPS)
        self.aborted: ProbeError | None = None

    def _error(self, reason: str) -> ProbeError:
        return ProbeError(self.host, self.port, reason)

    def _connected(self) -> None:
        self.connections += 1

    def exchange(self, job: HelloJob) -> Outcome:
        """Run one job on a fresh connection. After any error, later jobs are not attempted."""
        if self.aborted is not None:
            return Outcome(Verdict.ERROR, error=self.aborted)
        hello = build_client_hello(
            version=job.version,
            cipher_suites=job.suites,
            groups=job.groups,
            server_name=self.server_name,
            alpn=(ALPN_POSTGRESQL.encode(),) if self.direct_ssl else (),
            key_shares={g: self.key_shares[g] for g in job.key_share_groups if g in self.key_shares},
        )
        conn_deadline = Deadline(self.timeout, within=self.deadline)
        try:
            answer, closed = self._converse(hello, conn_deadline)
        except TlsDecodeError as exc:
            return self._abort(exc.at(self.host, self.port))
        except NoAnswer:
            return self._abort(
                self._error(f"no answer within {self.timeout:g}s (connection {self.connections})")
            )
        except Unreachable as exc:
            return self._abort(self._error(f"connection failed: {exc.reason}"))
        except NotTls as exc:
            return self._abort(self._error(exc.reason))
        except ProbeError as exc:
            return self._abort(exc)
        except TimeoutError:
            return self._abort(
                self._error(f"no answer within {self.timeout:g}s (connection {self.connections})")
            )
        except OSError as exc:
            return self._abort(self._error(f"connection failed: {exc.strerror or exc}"))
        out = judge(job, answer, closed=closed)
        if out.verdict is Verdict.ERROR and out.error is not None:
            return self._abort(self._error(out.error.reason))
        return out

    def _abort(self, error: ProbeError) -> Outcome:
        self.aborted = error
        return Outcome(Verdict.ERROR, error=error)

    def _converse(self, hello: bytes, deadline: Deadline) -> tuple[ServerAnswer | None, bool]:
        # Bytes after 'S' were looked for by the target's first connection; here they end the enumeration.
        sock, _ = open_channel(
            self.host,
            self.port,
            deadline,
            direct=self.direct_ssl,
            refuse_extra=True,
            on_connected=self._connected,
        )
        with contextlib.closing(sock):
            try:
                sock.sendall(hello)
            except (BrokenPipeError, ConnectionResetError):
                return None, True
            data = b""
            while True:
                answer = parse_server_response(data)
                if answer.complete:
                    return answer, False
                chunk = recv_some(sock, deadline)
                if not chunk:
                    return (answer if data else None), True
                data += chunk


# --------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class TlsEnumeration:
    """What a server accepts, by protocol, as seen from the network."""

    host: str
    port: int
    direct_ssl: bool
    protocols: tuple[str, ...]
    """Accepted versions, oldest first: ``TLSv1.2``, ``TLSv1.3`` (PostgreSQL's spelling; ``TLSv1`` is 1.0)."""
    ciphers: Mapping[str, tuple[str, ...]]
    """Accepted IANA suite names per accepted protocol, in the server's order when it enforces one."""
    server_preference: Mapping[str, bool | None]
    """Per accepted protocol: True if the server enforces its order, None if it cannot be told (<2 suites)."""
    groups: tuple[str, ...]
    """Accepted key-exchange groups over all protocols (TLS 1.3 first, then TLS 1.2 ECDHE)."""
    groups_by_protocol: Mapping[str, tuple[str, ...]]
    connections: int
    """TCP connections opened, exactly."""
    certificate_chain_der: tuple[bytes, ...]
    """From the first TLS <= 1.2 handshake (TLS 1.3 encrypts it); empty if only TLS 1.3 is accepted."""
    dh_prime_bits: tuple[int, ...]
    refused: tuple[str, ...]
    """Versions the server refused, including those only inferred (see ``inferred_refused``)."""
    inferred_refused: tuple[str, ...]
    errors: tuple[ProbeError, ...]
    notes: tuple[str, ...]
    elapsed: float

    @property
    def complete(self) -> bool:
        """True when no error cut the enumeration short."""
        return not self.errors


def summarize(
    host: str,
    port: int,
    results: Sequence[VersionResult],
    *,
    direct_ssl: bool,
    connections: int,
    elapsed: float,
    errors: Sequence[ProbeError] = (),
) -> TlsEnumeration:
    """Fold per-version results into a :class:`TlsEnumeration`. Pure."""
    ordered = sorted(results, key=lambda r: r.version)
    accepted = [r for r in ordered if r.accepted]
    groups: list[str] = []
    for r in sorted(accepted, key=lambda r: -r.version):
        groups.extend(group_name(g) for g in r.groups if group_name(g) not in groups)
    chain: tuple[bytes, ...] = ()
    for r in sorted(accepted, key=lambda r: -r.version):
        if r.certificates:
            chain = r.certificates
            break
    all_errors = list(errors)
    all_errors.extend(r.error for r in ordered if r.error is not None and r.error not in all_errors)
    dh_bits = sorted({b for r in accepted for b in r.dh_prime_bits})
    return TlsEnumeration(
        host=host,
        port=port,
        direct_ssl=direct_ssl,
        protocols=tuple(r.version.label for r in accepted),
        ciphers=MappingProxyType({r.version.label: tuple(suite_name(s) for s in r.suites) for r in accepted}),
        server_preference=MappingProxyType({r.version.label: r.server_preference for r in accepted}),
        groups=tuple(groups),
        groups_by_protocol=MappingProxyType(
            {r.version.label: tuple(group_name(g) for g in r.groups) for r in accepted}
        ),
        connections=connections,
        certificate_chain_der=chain,
        dh_prime_bits=tuple(dh_bits),
        refused=tuple(r.version.label for r in ordered if r.accepted is False),
        inferred_refused=tuple(r.version.label for r in ordered if r.inferred),
        errors=tuple(all_errors),
        notes=tuple(f"{r.version.label}: {n}" for r in ordered for n in r.notes),
        elapsed=elapsed,
    )


def enumerate_tls(
    host: str,
    port: int,
    *,
    timeout: float,
    direct_ssl: bool = False,
    deadline: float | None = None,
    exhaustive: bool = False,
    server_name: str | None = None,
) -> TlsEnumeration:
    """Enumerate the TLS versions, cipher suites and groups ``host:port`` accepts.

    ``timeout`` bounds each connection (connect, SSLRequest, answer); ``deadline`` (seconds, default
    ``30 * timeout``) bounds the whole target. The first timeout or other error stops the enumeration: it is
    reported in ``errors`` together with whatever was learned before, never raised. ``direct_ssl`` skips
    the SSLRequest and sends ALPN ``postgresql`` (PostgreSQL 17+). ``exhaustive`` probes old versions even
    after a ``protocol_version`` alert made their refusal certain per RFC. ``server_name`` (default
    ``host``) is the SNI name when ``host`` is where to connect (libpq's ``hostaddr``).
    """
    start = time.monotonic()
    whole = Deadline(deadline if deadline is not None else 30 * timeout)
    connector = _Connector(
        host, port, timeout=timeout, deadline=whole, direct_ssl=direct_ssl, server_name=server_name
    )
    results = run_enumeration(connector.exchange, exhaustive=exhaustive)
    errors = [connector.aborted] if connector.aborted is not None else []
    return summarize(
        host,
        port,
        results,
        direct_ssl=direct_ssl,
        connections=connector.connections,
        elapsed=time.monotonic() - start,
        errors=errors,
    )


@dataclass(frozen=True)
class DirectSsl:
    """The answer to a PostgreSQL 17 "direct SSL" hello, and what it cost."""

    supported: bool | None
    """True: a TLS answer; False: anything else; None: the host could not be reached at all."""
    connections: int
    detail: str = ""


def direct_ssl_probe(
    host: str,
    port: int,
    *,
    timeout: float,
    version: TlsVersion | None = None,
    server_name: str | None = None,
) -> DirectSsl:
    """Does ``host:port`` accept direct SSL (a ClientHello with ALPN ``postgresql``, no SSLRequest first)?

    With ``version`` (the best version the caller already knows the server accepts) it costs exactly one
    connection; without, TLS 1.3 is tried and a ``protocol_version`` alert earns one retry at TLS 1.2.
    A server before 17 reads the hello as a startup packet of absurd length and hangs up: "no".
    """
    connector = _Connector(
        host, port, timeout=timeout, deadline=Deadline(2 * timeout), direct_ssl=True, server_name=server_name
    )

    def job(v: TlsVersion) -> HelloJob:
        if v == TlsVersion.TLSv1_3:
            return HelloJob(v, candidates_for(v), ALL_GROUPS, KEY_SHARE_GROUPS)
        return HelloJob(v, candidates_for(v), EC_GROUPS)

    out = connector.exchange(job(version or TlsVersion.TLSv1_3))
    if version is None and out.verdict is Verdict.REFUSED and out.detail == "alert protocol_version":
        out = connector.exchange(job(TlsVersion.TLSv1_2))
    if out.verdict in (Verdict.ACCEPTED, Verdict.CHOSE_THEN_FAILED):
        return DirectSsl(True, connector.connections, "TLS answer to a direct hello with ALPN postgresql")
    if out.verdict is Verdict.ERROR and connector.connections == 0:
        return DirectSsl(None, 0, out.error.reason if out.error else "unreachable")
    detail = out.detail or (out.error.reason if out.error else "no TLS answer")
    return DirectSsl(False, connector.connections, detail)


__all__ = ["DirectSsl", "TlsEnumeration", "direct_ssl_probe", "enumerate_tls", "summarize"]
