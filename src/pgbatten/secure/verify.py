"""Proving the result from outside: what a client on the network sees after ``secure``.

Each proof costs the server a forked backend, so we ask only what the answer needs: one ``check`` per
address the server listens on (TLS versions, the served certificate, plaintext refused) and two real
libpq logins with ``sslmode=verify-full``, one by name and one by address, that read ``pg_stat_ssl``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography import x509

from pgbatten import faults, libpq
from pgbatten.certfacts import fingerprint_sha256
from pgbatten.cluster.discover import Cluster
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.fsutil import atomic_write
from pgbatten.netutil import is_ip_address
from pgbatten.pki import CACertificate, CertificateAuthority
from pgbatten.probe.check import check_target
from pgbatten.probe.wire import Target
from pgbatten.secure.request import ClientAuth


@dataclass(frozen=True)
class Proof:
    """One outside check and its outcome."""

    what: str
    ok: bool
    detail: str = ""


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 secret as PostgreSQL stores it, so the password itself never reaches the server log."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def prove_outside(
    port: int,
    addresses: Sequence[str],
    installed: x509.Certificate,
    ca_cert: x509.Certificate,
    timeout: float,
) -> list[Proof]:
    """``check`` each address: TLS works, plaintext is refused, the served certificate is ours."""
    proofs: list[Proof] = []
    expected = fingerprint_sha256(installed)
    for address in addresses:
        result = check_target(Target(address, port), ca=[ca_cert], timeout=timeout)
        where = f"{Target(address, port)}"
        if not result.reachable:
            proofs.append(Proof(f"reach {where}", False, result.error or "unreachable"))
            continue
        proofs.append(
            Proof(
                f"plaintext refused at {where}",
                result.plaintext_accepted is False,
                "refused" if result.plaintext_accepted is False else "a plaintext login was accepted",
            )
        )
        served = result.certificate.sha256 if result.certificate else None
        proofs.append(
            Proof(
                f"installed certificate served at {where}",
                served == expected,
                f"{', '.join(result.protocols)}; {result.cipher}"
                if served == expected
                else f"server presents {served or 'no certificate'}, expected {expected}",
            )
        )
        verdict = result.verify_full[0] if result.verify_full else None
        proofs.append(
            Proof(
                f"verify-full by address {address}",
                bool(verdict and verdict.ok),
                verdict.why if verdict else "no certificate",
            )
        )
    return proofs


@contextlib.contextmanager
def probe_role(
    sql: OwnerSQL, ca: CertificateAuthority | CACertificate, client_auth: ClientAuth
) -> Iterator[tuple[str, str, Path | None]]:
    """A short-lived login role (and, under client-certificate auth, its certificate), dropped afterwards.

    Without the CA's key (a fleet's server) there is no certificate for the role: its login is refused after
    the handshake, which libpq has then verified, and that is what the login proof accepts.
    """
    role = f"pgbatten_verify_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    sql.query(
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L VALID UNTIL %L', :'role', :'secret',"
        " now() + interval '10 minutes') \\gexec",
        {"role": role, "secret": scram_verifier(password)},
    )
    with tempfile.TemporaryDirectory(prefix="pgbatten-verify-") as tmp:
        cert_dir: Path | None = None
        try:
            faults.point("proving")
            if client_auth != "none" and isinstance(ca, CertificateAuthority):
                issued = ca.issue_client(role, days=1)
                cert_dir = Path(tmp)
                atomic_write(cert_dir / "client.crt", issued.cert_pem(), mode=0o644)
                atomic_write(cert_dir / "client.key", issued.key_pem(), mode=0o600)
            yield role, password, cert_dir
        finally:
            with contextlib.suppress(Exception):
                sql.query("SELECT format('DROP ROLE IF EXISTS %I', :'role') \\gexec", {"role": role})


def prove_login(
    *,
    host: str,
    hostaddr: str,
    port: int,
    ca_path: Path,
    role: str,
    password: str,
    cert_dir: Path | None,
    timeout: float,
    direct: bool = False,
) -> Proof:
    """A real libpq login with sslmode=verify-full that reads its own row of pg_stat_ssl.

    ``direct``: with ``sslnegotiation=direct`` (libpq 17+, PostgreSQL 17+): TLS from the first byte, ALPN
    ``postgresql``, no SSLRequest.
    """
    what = f"verify-full login by {'address' if is_ip_address(host) else 'name'} {host}"
    if direct:
        what += " with sslnegotiation=direct"
    # Built by pgbatten.libpq: no client certificate from the operator's ~/.postgresql, no PG* variable, can
    # change what this login proves.
    params = libpq.params(
        host=host,
        hostaddr=hostaddr,
        port=port,
        user=role,
        password=password,
        sslmode="verify-full",
        sslrootcert=ca_path,
        client_certificate=(
            libpq.ClientCertificate(cert_dir / "client.crt", cert_dir / "client.key")
            if cert_dir is not None
            else None
        ),
        connect_timeout=timeout,
        application_name="pgbatten-verify",
        extra={"sslnegotiation": "direct"} if direct else None,
    )
    try:
        with libpq.connect(params) as conn:
            row = conn.execute(
                "SELECT ssl, version, cipher, bits FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        refused = "pg_hba.conf" in text or "authentication failed" in text
        if cert_dir is None and "requires a valid client certificate" in text:
            refused = True  # no certificate to present (the CA's key is elsewhere): the server asked for one
        if "FATAL:" in text and refused:
            # The server spoke after the handshake, so libpq had already verified its certificate; only
            # the probe role's login was not allowed by rules we do not own.
            return Proof(what, True, f"TLS verified by libpq; login refused for the probe role: {text}")
        return Proof(what, False, text or type(exc).__name__)
    if row is None or not row[0]:
        return Proof(what, False, "pg_stat_ssl says this session is not encrypted")
    return Proof(what, True, f"pg_stat_ssl: {row[1]}, {row[2]}, {row[3]} bits")


def prove_all(
    cluster: Cluster,
    *,
    addresses: Sequence[str],
    hosts: Sequence[str],
    installed: x509.Certificate,
    ca: CertificateAuthority | CACertificate,
    ca_path: Path,
    client_auth: ClientAuth,
    timeout: float = 5.0,
) -> list[Proof]:
    """Every outside proof ``secure`` ends with."""
    port = cluster.require_running().port
    if not addresses:
        return [Proof("reach the server over TCP", False, "listen_addresses has no address to test")]
    proofs = prove_outside(port, addresses, installed, ca.certificate, timeout)
    names = [h for h in hosts if not is_ip_address(h)]
    address = addresses[0]
    # PostgreSQL 17 also takes TLS from the first byte; prove that door too when our libpq can knock. The
    # login by address uses it (``check`` has already proved the usual negotiation at every address), so it
    # costs no extra backend unless there is no name to log in by.
    direct = supports_direct_ssl(cluster.major)
    logins = [(names[0] if names else address, address, False)]
    if names or direct:
        logins.append((address, address, direct))
    with probe_role(cluster.sql(), ca, client_auth) as (role, password, cert_dir):
        for host, hostaddr, direct_login in logins:
            proofs.append(
                prove_login(
                    host=host,
                    hostaddr=hostaddr,
                    port=port,
                    ca_path=ca_path,
                    role=role,
                    password=password,
                    cert_dir=cert_dir,
                    timeout=timeout,
                    direct=direct_login,
                )
            )
    return proofs


def supports_direct_ssl(server_major: int) -> bool:
    """Whether a ``sslnegotiation=direct`` login can be proved: PostgreSQL 17+ and a libpq that has it."""
    return server_major >= 17 and libpq.libpq_knows("sslnegotiation")
