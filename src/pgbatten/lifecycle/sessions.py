"""Revocation that reaches live sessions: find the sessions a certificate authenticated, and end them.

A CRL only stops new handshakes; a session opened with a certificate before it was revoked goes on. The
server knows which certificate each TLS session presented (``pg_stat_ssl.client_serial`` and
``issuer_dn``), so after the CRL is in force we end exactly those sessions (``pg_terminate_backend``, as
the cluster's owner over the socket) — a client that reconnects is then refused by the CRL. A serial is
unique only per issuer, so both must match.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from pgbatten.cluster.sql import OwnerSQL

_SHORT = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "DC",
}
WAIT_SECONDS = 5.0


def dn_forms(name: x509.Name) -> frozenset[str]:
    """The spellings PostgreSQL uses for ``issuer_dn``: OpenSSL's one-line form (``/O=x/CN=y``, up to 15)
    and RFC 2253 (``CN=y,O=x``, from 16)."""
    oneline = "".join(
        f"/{_SHORT.get(attr.oid, attr.oid.dotted_string)}={attr.value!s}" for rdn in name.rdns for attr in rdn
    )
    return frozenset({oneline, name.rfc4514_string()})


@dataclass(frozen=True)
class CertificateSession:
    """A session that authenticated with a client certificate."""

    pid: int
    user: str
    client_addr: str
    serial: int
    issuer_dn: str


@dataclass(frozen=True)
class SessionsEnded:
    """The sessions found for the revoked certificates, and which were ended."""

    found: tuple[CertificateSession, ...]
    ended: tuple[int, ...]
    kept: bool

    @property
    def count(self) -> int:
        return len(self.ended)

    def to_json(self) -> dict[str, Any]:
        return {
            "found": [
                {"pid": x.pid, "user": x.user, "client": x.client_addr, "serial": f"{x.serial:#x}"}
                for x in self.found
            ],
            "ended": list(self.ended),
            "kept": self.kept,
        }


def report_line(result: SessionsEnded) -> str:
    """One line for people: how many sessions of the revoked certificates were ended (or kept)."""
    if not result.found:
        return "No open session had authenticated with the revoked certificate(s)."
    if result.kept:
        return (
            f"{len(result.found)} session(s) that authenticated with the revoked certificate(s) stay open"
            " (--keep-sessions); they end when their clients disconnect"
        )
    users = ", ".join(sorted({s.user for s in result.found}))
    return f"Ended {result.count} session(s) that authenticated with the revoked certificate(s) ({users})."


def certificate_sessions(sql: OwnerSQL) -> list[CertificateSession]:
    """Every session that presented a client certificate (one query, as the owner)."""
    rows = sql.query(
        "SELECT s.pid, coalesce(a.usename, ''), coalesce(host(a.client_addr), 'local'), s.client_serial,"
        " coalesce(s.issuer_dn, '') FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE s.client_serial IS NOT NULL"
    )
    out = []
    for pid, user, addr, serial, issuer in rows:
        if pid is None or serial is None:
            continue
        out.append(CertificateSession(int(pid), user or "", addr or "", int(serial), issuer or ""))
    return out


def matching(
    sessions: Iterable[CertificateSession], revoked: Sequence[tuple[int, x509.Name]]
) -> list[CertificateSession]:
    """The sessions whose certificate is one of ``revoked`` (serial, issuer). Pure."""
    wanted = {(serial, form) for serial, issuer in revoked for form in dn_forms(issuer)}
    return [s for s in sessions if (s.serial, s.issuer_dn) in wanted]


def end_sessions(
    sql: OwnerSQL, revoked: Sequence[tuple[int, x509.Name]], *, keep: bool = False
) -> SessionsEnded:
    """End the sessions authenticated with a revoked certificate (unless ``keep``), and wait until they are
    gone. Call it once the CRL is in force, so the clients cannot come straight back."""
    found = matching(certificate_sessions(sql), revoked)
    if keep or not found:
        return SessionsEnded(tuple(found), (), keep)
    pids = ",".join(str(s.pid) for s in found)
    rows = sql.query(
        "SELECT pid FROM unnest(string_to_array(:'pids', ',')::int[]) AS pid WHERE pg_terminate_backend(pid)",
        {"pids": pids},
    )
    ended = tuple(int(r[0]) for r in rows if r[0] is not None)
    deadline = time.monotonic() + WAIT_SECONDS
    while ended and time.monotonic() < deadline:
        alive = sql.value(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY (string_to_array(:'pids', ',')::int[])",
            {"pids": ",".join(map(str, ended))},
        )
        if alive == "0":
            break
        time.sleep(0.05)
    return SessionsEnded(tuple(found), ended, keep)
