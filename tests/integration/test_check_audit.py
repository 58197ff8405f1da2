"""The full remote audit against real clusters in different configurations.

Each test starts a cluster with certificates from a throwaway pgbatten CA, runs ``check_target(full=True)``
and compares what it found with what the configuration determines: the accepted protocol and cipher-suite
lists, the certificate, the findings and the grade. The number of connections the audit reports is compared
with the server's own count (``connection received`` log lines; log_connections is on in TempCluster).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.cluster.temp import TempCluster
from pgbatten.fsutil import atomic_write
from pgbatten.pki import CertificateAuthority
from pgbatten.pki.keys import KeyType
from pgbatten.probe import check_target
from pgbatten.probe.check import CheckResult
from pgbatten.probe.wire import Target

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
TLS_HBA = """\
local   all  all                  peer
hostssl all  all  127.0.0.1/32    scram-sha-256
hostssl all  all  ::1/128         scram-sha-256
"""
CERT_HBA = """\
local   all  all                  peer
hostssl all  all  127.0.0.1/32    cert
hostssl all  all  ::1/128         cert
"""
OPENSSL_TLS13_DEFAULT = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}
PG_DEFAULT_CIPHERS = "HIGH:MEDIUM:+3DES:!aNULL"


@dataclass
class Pki:
    ca: CertificateAuthority
    files: dict[str, str]

    @property
    def roots(self) -> list[x509.Certificate]:
        return [self.ca.certificate]


@pytest.fixture
def cert_dir() -> Iterator[Path]:
    """A directory the cluster's OS user owns (pytest's tmp_path is not reachable for it when run as root)."""
    from pgbatten.cluster.osuser import server_user

    path = Path(tempfile.mkdtemp(prefix="pgbatten-audit-"))
    owner = server_user()
    if os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_pki(
    cert_dir: Path,
    hosts: list[str],
    *,
    key_type: KeyType = KeyType.ECDSA_P256,
    days: int = 365,
    now: dt.datetime | None = None,
) -> Pki:
    from pgbatten.cluster.osuser import server_user

    owner = server_user().ids if os.geteuid() == 0 else None
    ca = CertificateAuthority.create(now=now)
    issued = ca.issue_server(hosts, key_type=key_type, days=days, now=now)
    atomic_write(cert_dir / "server.crt", issued.cert_pem(), mode=0o644, owner=owner)
    atomic_write(cert_dir / "server.key", issued.key_pem(), mode=0o600, owner=owner)
    atomic_write(cert_dir / "root.crt", ca.cert_pem(), mode=0o644, owner=owner)
    return Pki(
        ca,
        {
            "ssl": "on",
            "ssl_cert_file": f"'{cert_dir / 'server.crt'}'",
            "ssl_key_file": f"'{cert_dir / 'server.key'}'",
        },
    )


def connections_logged(cluster: TempCluster) -> int:
    return len(re.findall(r"connection received", cluster.log_text()))


def audit(cluster: TempCluster, pki: Pki | None = None, host: str = "127.0.0.1") -> tuple[CheckResult, int]:
    """Run the full audit; return it with the number of connections the server logged meanwhile."""
    before = connections_logged(cluster)
    result = check_target(
        Target(host, cluster.port), ca=pki.roots if pki else None, timeout=TIMEOUT, full=True
    )
    # Backends log "connection received" right after the fork; give the last ones a moment to be written.
    seen = connections_logged(cluster) - before
    for _ in range(50):
        if seen >= result.connections_used:
            break
        time.sleep(0.1)
        seen = connections_logged(cluster) - before
    return result, seen


def ids(result: CheckResult) -> set[str]:
    return {f.id for f in result.findings}


# Asked of the server's own OpenSSL (the one ``postgres`` is linked with; a wheel's is not the system's):
# expand a cipher list the way SSL_CTX_set_cipher_list does for the server, and describe each suite.
_SUITES_SCRIPT = """
import ctypes, sys
crypto = ctypes.CDLL(sys.argv[2])  # first: libssl's own libcrypto.so.3 is then this one
ssl = ctypes.CDLL(sys.argv[1])
ssl.TLS_server_method.restype = ctypes.c_void_p
ssl.SSL_CTX_new.restype = ctypes.c_void_p
ssl.SSL_CTX_new.argtypes = [ctypes.c_void_p]
ssl.SSL_CTX_set_cipher_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
crypto.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
crypto.OPENSSL_sk_value.restype = ctypes.c_void_p
crypto.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
for name in ("SSL_CIPHER_standard_name", "SSL_CIPHER_get_version"):
    getattr(ssl, name).restype = ctypes.c_char_p
    getattr(ssl, name).argtypes = [ctypes.c_void_p]
for name in ("SSL_CIPHER_get_auth_nid", "SSL_CIPHER_get_kx_nid"):
    getattr(ssl, name).argtypes = [ctypes.c_void_p]
ssl.SSL_new.restype = ctypes.c_void_p
ssl.SSL_new.argtypes = [ctypes.c_void_p]
ssl.SSL_get1_supported_ciphers.restype = ctypes.c_void_p
ssl.SSL_get1_supported_ciphers.argtypes = [ctypes.c_void_p]
ctx = ssl.SSL_CTX_new(ssl.TLS_server_method())
assert ssl.SSL_CTX_set_cipher_list(ctx, sys.argv[3].encode()) == 1
# What the security level lets through (OpenSSL 3.5 puts the CCM_8 suites below the default level 2).
suites = ssl.SSL_get1_supported_ciphers(ssl.SSL_new(ctx))
for i in range(crypto.OPENSSL_sk_num(suites)):
    c = crypto.OPENSSL_sk_value(suites, i)
    print(ssl.SSL_CIPHER_standard_name(c).decode(), ssl.SSL_CIPHER_get_version(c).decode(),
          ssl.SSL_CIPHER_get_auth_nid(c), ssl.SSL_CIPHER_get_kx_nid(c))
"""
_AUTH_NID = {"RSA": 1046, "ECDSA": 1047}  # NID_auth_rsa, NID_auth_ecdsa
_KX_NIDS = {1037, 1038, 1039}  # NID_kx_rsa, NID_kx_ecdhe, NID_kx_dhe: no PSK, no SRP


def server_libraries(cluster: TempCluster) -> tuple[str, str]:
    """The libssl and libcrypto the cluster's ``postgres`` is linked with (from ldd)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd not installed")
    out = subprocess.run([ldd, str(cluster.bin.path("postgres"))], capture_output=True, text=True, check=True)
    found = dict(re.findall(r"^\s*(libssl|libcrypto)\.so\S* => (\S+)", out.stdout, re.MULTILINE))
    if set(found) != {"libssl", "libcrypto"}:
        pytest.skip(f"cannot tell which OpenSSL {cluster.bin.path('postgres')} uses")
    return found["libssl"], found["libcrypto"]


def openssl_suites(cluster: TempCluster, spec: str, *, auth: str) -> set[str]:
    """IANA names of the TLS <= 1.2 suites the server's OpenSSL expands ``spec`` to that a server with an
    ``auth`` key (``RSA`` or ``ECDSA``) can use without PSK/SRP: what PostgreSQL's ssl_ciphers gives it."""
    libssl, libcrypto = server_libraries(cluster)
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _SUITES_SCRIPT, libssl, libcrypto, spec],
        capture_output=True,
        text=True,
        check=True,
    )
    names: set[str] = set()
    for line in out.stdout.splitlines():
        iana, version, au, kx = line.split()
        if version != "TLSv1.3" and int(au) == _AUTH_NID[auth] and int(kx) in _KX_NIDS:
            names.add(iana)
    return names


@pytest.fixture
def tls_cluster(
    make_cluster: Callable[..., TempCluster], cert_dir: Path
) -> Callable[..., tuple[TempCluster, Pki]]:
    def factory(
        *,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = 365,
        now: dt.datetime | None = None,
        hba: str = TLS_HBA,
        settings: dict[str, str] | None = None,
    ) -> tuple[TempCluster, Pki]:
        pki = make_pki(cert_dir, list(hosts), key_type=key_type, days=days, now=now)
        cluster = make_cluster(hba=hba, settings={**pki.files, **(settings or {})})
        return cluster, pki

    return factory


# --------------------------------------------------------------------------------------------- tests


def test_ssl_off(make_cluster: Callable[..., TempCluster]) -> None:
    cluster = make_cluster(hba="local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n")
    result, seen = audit(cluster)
    assert result.reachable
    assert result.protocols == ()
    assert result.plaintext_accepted is True
    assert {"tls-not-supported", "plaintext-accepted"} <= ids(result)
    assert result.grade == "F"
    assert result.direct_ssl is None  # not probed: there is no TLS to speak directly
    assert result.connections_by_step == {"tls_handshakes": 1, "plaintext": 1}
    assert result.connections_used == seen == 2


def test_postgres_default_ciphers_ecdsa(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    cluster, pki = tls_cluster()
    result, seen = audit(cluster, pki)
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert set(result.ciphers["TLSv1.3"]) == OPENSSL_TLS13_DEFAULT
    assert set(result.ciphers["TLSv1.2"]) == openssl_suites(cluster, PG_DEFAULT_CIPHERS, auth="ECDSA")
    assert result.server_preference["TLSv1.2"] is True  # ssl_prefer_server_ciphers = on by default
    # ssl_ecdh_curve defaults to prime256v1 through 17; 18's ssl_groups default adds X25519.
    expected_groups = {"secp256r1"} if cluster.bin.major < 18 else {"x25519", "secp256r1"}
    assert set(result.groups) == expected_groups
    assert result.certificate is not None and result.certificate.key_type == "EC"
    assert result.verify_full[0].ok is True
    assert result.chain_complete is None or result.chain_complete is True
    assert result.plaintext_accepted is False
    assert "cipher-non-aead" in ids(result)  # the default list keeps ECDHE-ECDSA-AES*-SHA* CBC suites
    assert result.grade == "B"
    assert result.connections_used == seen


def test_exact_list_rsa_without_forward_secrecy(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    cluster, pki = tls_cluster(
        key_type=KeyType.RSA_2048,
        settings={"ssl_ciphers": "'ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA'"},
    )
    result, seen = audit(cluster, pki)
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    # Server order, as configured.
    assert result.ciphers["TLSv1.2"] == (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_RSA_WITH_AES_256_CBC_SHA",
    )
    assert result.certificate is not None
    assert (result.certificate.key_type, result.certificate.key_size) == ("RSA", 2048)
    assert {"cipher-no-forward-secrecy", "cipher-non-aead"} <= ids(result)
    fs = next(f for f in result.findings if f.id == "cipher-no-forward-secrecy")
    assert fs.fix == "pgbatten secure --pgdata <data_directory>"
    assert fs.cis is not None and "6.10" in fs.cis
    assert result.grade == "B"
    assert result.connections_used == seen


def test_mozilla_intermediate_ecdsa_is_a_plus(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    cluster, pki = tls_cluster(
        settings={"ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384'"},
    )
    result, seen = audit(cluster, pki)
    assert result.ciphers["TLSv1.2"] == (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    )
    assert result.grade == "A+", result.findings
    assert result.connections_used == seen
    # An order of magnitude below sslyze's 591 connections for one server.
    assert result.connections_used < 60


def test_tls13_only(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    cluster, pki = tls_cluster(settings={"ssl_min_protocol_version": "'TLSv1.3'"})
    result, seen = audit(cluster, pki)
    assert result.protocols == ("TLSv1.3",)
    assert set(result.ciphers) == {"TLSv1.3"}
    assert set(result.ciphers["TLSv1.3"]) == OPENSSL_TLS13_DEFAULT
    # TLS 1.3 encrypts the certificate: it comes from the one completed handshake.
    assert result.certificate is not None
    assert result.verify_full[0].ok is True
    assert not ids(result) & {"tls13-not-supported", "cipher-non-aead", "cipher-no-forward-secrecy"}
    # CVE-2021-23214: every supported PostgreSQL refuses plaintext buffered before the handshake.
    assert result.buffered_plaintext_processed is False
    assert result.grade == "A+", result.findings
    assert result.connections_used == seen


def test_expired_certificate(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    cluster, pki = tls_cluster(
        now=long_ago, days=30, settings={"ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256'"}
    )
    result, seen = audit(cluster, pki)
    assert "cert-expired" in ids(result)
    assert result.grade == "C"
    assert result.connections_used == seen


def test_wrong_host_name(tls_cluster: Callable[..., tuple[TempCluster, Pki]]) -> None:
    cluster, pki = tls_cluster(
        hosts=("db.example.com",), settings={"ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256'"}
    )
    result, seen = audit(cluster, pki)
    assert "hostname-mismatch" in ids(result)
    mismatch = next(f for f in result.findings if f.id == "hostname-mismatch")
    assert mismatch.fix == "pgbatten secure --pgdata <data_directory> --host 127.0.0.1"
    assert result.verify_full[0].ok is False
    assert result.grade == "B"
    assert result.connections_used == seen


def test_client_certificates_required(
    tls_cluster: Callable[..., tuple[TempCluster, Pki]], cert_dir: Path
) -> None:
    """With ``cert`` rules and ssl_ca_file, PostgreSQL asks for a client certificate during the handshake
    but does not fail it without one (no SSL_VERIFY_FAIL_IF_NO_PEER_CERT): authentication fails later.
    So the audit completes without a client certificate."""
    cluster, pki = tls_cluster(
        hba=CERT_HBA,
        settings={
            "ssl_ca_file": f"'{cert_dir / 'root.crt'}'",
            "ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256'",
        },
    )
    result, seen = audit(cluster, pki)
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.ciphers["TLSv1.2"] == ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)
    assert result.certificate is not None
    assert result.plaintext_accepted is False
    assert result.grade == "A+", result.findings
    assert result.connections_used == seen


@pytest.mark.pg_matrix
def test_direct_ssl_matches_server_version(
    tls_cluster: Callable[..., tuple[TempCluster, Pki]], pg_binaries: object
) -> None:
    cluster, pki = tls_cluster(settings={"ssl_ciphers": "'ECDHE-ECDSA-AES128-GCM-SHA256'"})
    result, seen = audit(cluster, pki)
    major = cluster.bin.major
    assert result.direct_ssl is (major >= 17)
    assert ("direct-ssl-supported" in ids(result)) is (major >= 17)
    assert result.connections_by_step["direct_ssl"] == 1
    assert result.connections_used == seen
