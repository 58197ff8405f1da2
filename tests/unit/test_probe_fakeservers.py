"""The outside check against small fake servers on 127.0.0.1.

Each server serves a bounded number of connections in one thread, with socket timeouts everywhere, and stops
itself; none of these tests asserts on elapsed time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pgbatten.probe import check_target, exit_status, result_to_json
from pgbatten.probe.plaintext import probe_plaintext
from pgbatten.probe.tls import locally_testable, make_context, open_pg_tls
from pgbatten.probe.versions import TlsVersion
from pgbatten.probe.wire import SSL_REQUEST_CODE, Target

SERVER_IO_TIMEOUT = 5.0
PROBE_TIMEOUT = 2.0

Handler = Callable[[socket.socket], None]


class FakeServer:
    """A loopback TCP server that hands each of at most ``max_connections`` connections to ``handler``."""

    def __init__(self, handler: Handler, max_connections: int = 8) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(SERVER_IO_TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        with self.listener:
            while not self.stop.is_set() and self.connections < self.max_connections:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    return
                self.connections += 1
                with conn:
                    conn.settimeout(SERVER_IO_TIMEOUT)
                    with contextlib.suppress(Exception):
                        self.handler(conn)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            # Wake accept() so the thread sees the stop flag.
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self.thread.join(timeout=SERVER_IO_TIMEOUT + 1)

    @property
    def target(self) -> Target:
        return Target("127.0.0.1", self.port)


def recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def wait_for_close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass


def error_response(code: str, message: str) -> bytes:
    fields = {"S": "FATAL", "V": "FATAL", "C": code, "M": message}
    body = b"".join(k.encode() + v.encode() + b"\0" for k, v in fields.items()) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


MD5_REQUEST = b"R" + struct.pack("!II", 12, 5) + b"salt"
NO_ENCRYPTION = error_response(
    "28000",
    'no pg_hba.conf entry for host "127.0.0.1", user "pgbatten_probe", database "postgres", no encryption',
)


@dataclass
class PgBehaviour:
    """How a fake PostgreSQL answers SSLRequest and a plaintext StartupMessage."""

    ssl_answer: bytes = b"N"
    plaintext_answer: bytes = NO_ENCRYPTION
    tls: ssl.SSLContext | None = None
    stall_after_s: bool = False

    def __call__(self, conn: socket.socket) -> None:
        header = recv_exact(conn, 8)
        length, code = struct.unpack("!II", header)
        if code == SSL_REQUEST_CODE:
            conn.sendall(self.ssl_answer)
            if self.stall_after_s or self.tls is None or not self.ssl_answer.startswith(b"S"):
                wait_for_close(conn)
                return
            with self.tls.wrap_socket(conn, server_side=True) as tls:
                wait_for_close(tls)
            return
        recv_exact(conn, length - 8)
        conn.sendall(self.plaintext_answer)
        wait_for_close(conn)


# --------------------------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    cert_file: Path
    key_file: Path
    leaf: x509.Certificate


def make_pki(tmp_path: Path, *, sans: list[x509.GeneralName], days: int = 365) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgbatten test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = tmp_path / "server.crt"
    key_file = tmp_path / "server.key"
    cert_file.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(ca, cert_file, key_file, leaf)


def server_context(
    pki: Pki,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if minimum < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = minimum
        ctx.maximum_version = maximum
    ctx.load_cert_chain(pki.cert_file, pki.key_file)
    return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(
        tmp_path, sans=[x509.DNSName("db.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )


@contextlib.contextmanager
def serving(behaviour: Handler, max_connections: int = 8) -> Iterator[FakeServer]:
    with FakeServer(behaviour, max_connections) as server:
        yield server


def ids(result: object) -> set[str]:
    findings = getattr(result, "findings", ())
    return {f.id for f in findings}


# --------------------------------------------------------------------------------------------- tests


def test_server_answering_n_has_no_tls() -> None:
    with serving(PgBehaviour(ssl_answer=b"N", plaintext_answer=MD5_REQUEST)) as server:
        result = check_target(server.target, timeout=PROBE_TIMEOUT)
    assert result.reachable
    assert not result.tls_supported
    assert result.plaintext_accepted is True
    assert {"tls-not-supported", "plaintext-accepted"} <= ids(result)
    assert result.grade == "F"
    assert result.connections_used == 2
    assert exit_status([result]) == 1


def test_plaintext_md5_means_accepted() -> None:
    with serving(PgBehaviour(plaintext_answer=MD5_REQUEST)) as server:
        result = probe_plaintext("127.0.0.1", server.port, PROBE_TIMEOUT)
    assert result.verdict is not None
    assert result.verdict.accepted is True
    assert result.verdict.auth_method == "md5-password"


def test_plaintext_no_encryption_means_refused() -> None:
    with serving(PgBehaviour(plaintext_answer=NO_ENCRYPTION)) as server:
        result = probe_plaintext("127.0.0.1", server.port, PROBE_TIMEOUT)
    assert result.verdict is not None
    assert result.verdict.accepted is False


def test_oversized_plaintext_answer_is_not_read() -> None:
    huge = b"E" + struct.pack("!I", 10_000_000)
    with serving(PgBehaviour(plaintext_answer=huge)) as server:
        result = probe_plaintext("127.0.0.1", server.port, PROBE_TIMEOUT)
    assert result.verdict is not None
    assert result.verdict.accepted is None
    assert "oversized" in result.verdict.reason


def test_real_tls_server(pki: Pki) -> None:
    behaviour = PgBehaviour(ssl_answer=b"S", tls=server_context(pki))
    with serving(behaviour) as server:
        result = check_target(server.target, ca=[pki.ca], timeout=PROBE_TIMEOUT)
    assert result.reachable
    assert result.tls_supported
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.cipher is not None
    assert result.cipher.startswith("TLS_")  # a TLS 1.3 suite from the first handshake
    cert = result.certificate
    assert cert is not None
    assert cert.key_type == "EC"
    assert cert.key_size == 256
    assert cert.sans == ("DNS:db.test", "IP:127.0.0.1")
    assert cert.subject == "CN=db.test"
    assert cert.issuer == "CN=pgbatten test CA"
    assert not cert.self_signed
    assert cert.not_after.tzinfo is not None
    assert cert.signature_algorithm == "ecdsa-with-SHA256"
    assert result.verify_full[0].ok is True
    assert result.plaintext_accepted is False
    assert result.grade == "A+", result.findings
    # Wide handshake, TLS 1.2, 1.1, 1.0 (each may be "not testable"), plaintext.
    assert result.connections_used <= 5
    doc = result_to_json(result)
    assert doc["protocols"] == ["TLSv1.2", "TLSv1.3"]
    assert doc["certificate"]["not_after"] == cert.not_after.isoformat().replace("+00:00", "Z")
    assert doc["grade"] == "A+"
    assert exit_status([result]) == 0


def test_tls_server_wrong_ca_and_name(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other", sans=[x509.DNSName("elsewhere.test")])
    with serving(PgBehaviour(ssl_answer=b"S", tls=server_context(pki))) as server:
        result = check_target(Target("localhost", server.port), ca=[other.ca], timeout=PROBE_TIMEOUT)
    assert {"hostname-mismatch", "untrusted-issuer"} <= ids(result)
    assert result.grade == "B"
    # As libpq reports it: OpenSSL refuses the chain in the handshake, before any name is compared.
    [verdict] = result.verify_full
    assert verdict.ok is False and verdict.why.startswith("certificate verify failed: ")


def test_an_expired_certificate_fails_verify_full_whatever_the_ca(pki: Pki) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    with serving(PgBehaviour(ssl_answer=b"S", tls=server_context(pki))) as server:
        result = check_target(
            Target("db.test", server.port, hostaddr="127.0.0.1"), timeout=PROBE_TIMEOUT, now=later
        )
    [verdict] = result.verify_full
    assert verdict.ok is False and "certificate has expired" in verdict.why
    assert "cert-expired" in ids(result)


def test_old_tls_versions_are_findings(pki: Pki) -> None:
    if locally_testable(make_context(TlsVersion.TLSv1)) is not None:
        pytest.skip("local OpenSSL cannot offer TLS 1.0")
    behaviour = PgBehaviour(ssl_answer=b"S", tls=server_context(pki, minimum=ssl.TLSVersion.TLSv1))
    with serving(behaviour) as server:
        result = check_target(server.target, ca=[pki.ca], timeout=PROBE_TIMEOUT)
    assert "TLSv1" in result.protocols
    assert "tls10-accepted" in ids(result)
    assert result.grade == "C"


def test_only_tls12_server(pki: Pki) -> None:
    behaviour = PgBehaviour(ssl_answer=b"S", tls=server_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    with serving(behaviour) as server:
        result = check_target(server.target, ca=[pki.ca], timeout=PROBE_TIMEOUT)
    assert result.protocols == ("TLSv1.2",)
    assert result.version_attempts[0].version == "TLSv1.3"
    assert str(result.version_attempts[0].status) == "refused"
    assert "tls13-not-supported" in ids(result)


def test_bytes_after_s_are_a_finding(pki: Pki) -> None:
    behaviour = PgBehaviour(ssl_answer=b"Sinjected", tls=server_context(pki))
    with serving(behaviour) as server:
        tls, extra = open_pg_tls("127.0.0.1", server.port, timeout=PROBE_TIMEOUT, ssl_context=make_context())
        tls.close()
    assert extra == b"injected"
    with serving(behaviour) as server:
        result = check_target(server.target, timeout=PROBE_TIMEOUT)
    assert "bytes-after-ssl-response" in ids(result)
    assert exit_status([result]) == 1


def test_stall_after_s_times_out() -> None:
    with serving(PgBehaviour(ssl_answer=b"S", stall_after_s=True)) as server:
        result = check_target(server.target, timeout=0.3)
    assert result.reachable
    assert not result.tls_supported
    assert "tls-handshake-failed" in ids(result)
    assert result.grade == "F"


def test_not_postgresql() -> None:
    def http(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with serving(http) as server:
        result = check_target(server.target, timeout=PROBE_TIMEOUT)
    assert result.reachable
    assert "not-postgresql" in ids(result)
    assert result.grade == "-"
    assert result.connections_used == 1
    assert result.error is not None
    assert "HTTP/1.1 400" in result.error


def test_unreachable_is_a_result() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    result = check_target(Target("127.0.0.1", port), timeout=PROBE_TIMEOUT)
    assert not result.reachable
    assert result.error == "connection refused"
    assert result.grade == "-"
    assert exit_status([result]) == 3
    assert result_to_json(result)["reachable"] is False


def test_hostaddr_connects_to_the_address_and_verifies_the_name(pki: Pki) -> None:
    with serving(PgBehaviour(ssl_answer=b"S", tls=server_context(pki))) as server:
        target = Target("db.test", server.port, hostaddr="127.0.0.1")
        result = check_target(target, ca=[pki.ca], timeout=PROBE_TIMEOUT)
    assert result.reachable
    [verdict] = result.verify_full
    assert verdict.host == "db.test" and verdict.ok is True, verdict.why
    assert result_to_json(result)["target"] == f"db.test:{server.port} (hostaddr 127.0.0.1)"


def test_an_ip_only_ip_sans_cover_fails_older_libpq(tmp_path: Path) -> None:
    only_ip = make_pki(tmp_path, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    with serving(PgBehaviour(ssl_answer=b"S", tls=server_context(only_ip))) as server:
        result = check_target(server.target, ca=[only_ip.ca], timeout=PROBE_TIMEOUT)
    [verdict] = result.verify_full
    assert verdict.ok is True and verdict.old_client_ok is False
    found = next(f for f in result.findings if f.id == "ip-san-needs-libpq-15")
    assert found.fix is not None and "--legacy-ip-sans" in found.fix
    assert result_to_json(result)["verify_full"]["127.0.0.1"]["libpq_before_15"]["ok"] is False
    assert result.grade == "A+"  # a low finding: libpq 15+ clients are fine
