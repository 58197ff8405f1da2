"""Which sessions a revoked certificate authenticated: serial and issuer, in PostgreSQL's spellings."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from pgbatten.lifecycle.sessions import CertificateSession, dn_forms, matching


def test_session_matching_by_serial_and_issuer_in_both_spellings() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "CA"),
        ]
    )
    assert dn_forms(name) == {"/O=Example/CN=CA", "CN=CA,O=Example"}
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])
    sessions = [
        CertificateSession(1, "alice", "127.0.0.1", 42, "/O=Example/CN=CA"),  # PostgreSQL 15 spelling
        CertificateSession(2, "alice", "::1", 42, "CN=CA,O=Example"),  # 16 and later
        CertificateSession(3, "bob", "127.0.0.1", 43, "/O=Example/CN=CA"),  # not revoked
        CertificateSession(4, "eve", "127.0.0.1", 42, "/CN=other CA"),  # same serial, another issuer
    ]
    assert [s.pid for s in matching(sessions, [(42, name)])] == [1, 2]
    assert [s.pid for s in matching(sessions, [(42, other)])] == [4]
