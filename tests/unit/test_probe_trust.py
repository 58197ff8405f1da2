"""Chain trust as OpenSSL decides it for libpq: certificates built here, OpenSSL's ``verify`` as the judge.

Each case is one PostgreSQL's src/test/ssl exercises against real libpq: X.509 v1 certificates accepted,
no intermediate as trust anchor, the server purpose enforced, expiry, revocation with CRL checks over the
whole chain.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten.probe import trust
from pgbatten.probe.trust import TrustStore, verify_chain

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)

pytestmark = pytest.mark.skipif(trust.openssl_command() is None, reason="openssl command not installed")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_ca(cn: str, parent: Issuer | None = None) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent.cert.subject if parent else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=400))
        .not_valid_after(NOW + dt.timedelta(days=4000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    )
    return Issuer(builder.sign(parent.key if parent else key, hashes.SHA256()), key)


def make_leaf(
    issuer: Issuer,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
    days: int = 200,
    serial: int | None = None,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("db.test"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=300))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("db.test")]), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(issuer.key, hashes.SHA256())


def make_crl(issuer: Issuer, revoked: list[int]) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(NOW - dt.timedelta(days=1))
        .next_update(NOW + dt.timedelta(days=30))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> tuple[Issuer, Issuer]:
    root = make_ca("root ca")
    return root, make_ca("server ca", root)


def test_full_chain_to_the_root_verifies(pki: tuple[Issuer, Issuer]) -> None:
    root, server_ca = pki
    leaf = make_leaf(server_ca)
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW)
    assert verdict.trusted is True, verdict.reason
    # The root may also hold the intermediate, as root+server_ca.crt does in PostgreSQL's suite.
    assert verify_chain([leaf], TrustStore((root.cert, server_ca.cert)), NOW).trusted is True


def test_an_intermediate_alone_is_no_trust_anchor(pki: tuple[Issuer, Issuer]) -> None:
    _root, server_ca = pki
    leaf = make_leaf(server_ca)
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((server_ca.cert,)), NOW)
    assert verdict.trusted is False
    assert verdict.code == 2 and verdict.message == "unable to get issuer certificate"


def test_missing_intermediate_is_an_incomplete_chain(pki: tuple[Issuer, Issuer]) -> None:
    root, server_ca = pki
    verdict = verify_chain([make_leaf(server_ca)], TrustStore((root.cert,)), NOW)
    assert verdict.trusted is False
    assert verdict.code == 20 and "unable to get local issuer certificate" in verdict.reason


def test_unknown_ca(pki: tuple[Issuer, Issuer]) -> None:
    _root, server_ca = pki
    other = make_ca("other ca")
    verdict = verify_chain([make_leaf(server_ca), server_ca.cert], TrustStore((other.cert,)), NOW)
    assert verdict.trusted is False and "unknown CA" in verdict.reason


@pytest.mark.parametrize(
    ("eku", "key_usage"),
    [
        ([ExtendedKeyUsageOID.CLIENT_AUTH], None),
        (None, x509.KeyUsage(False, False, False, False, False, True, False, False, False)),
    ],
    ids=["eku-client-only", "ku-keycertsign-only"],
)
def test_server_purpose_is_enforced(
    pki: tuple[Issuer, Issuer], eku: list[x509.ObjectIdentifier] | None, key_usage: x509.KeyUsage | None
) -> None:
    root, server_ca = pki
    leaf = make_leaf(server_ca, eku=eku, key_usage=key_usage)
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW)
    assert verdict.trusted is False
    assert verdict.code == trust.INVALID_PURPOSE
    assert "unsuitable certificate purpose" in verdict.reason


def test_server_auth_eku_is_fine(pki: tuple[Issuer, Issuer]) -> None:
    root, server_ca = pki
    leaf = make_leaf(server_ca, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW).trusted is True


def test_expired(pki: tuple[Issuer, Issuer]) -> None:
    root, server_ca = pki
    leaf = make_leaf(server_ca, days=10)
    assert verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW).trusted is True
    later = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW + dt.timedelta(days=11))
    assert later.trusted is False and "certificate has expired" in later.reason


def test_revoked_and_crl_checks_cover_the_whole_chain(pki: tuple[Issuer, Issuer]) -> None:
    root, server_ca = pki
    leaf = make_leaf(server_ca, serial=4242)
    good = make_leaf(server_ca)
    crls = (make_crl(server_ca, [4242]), make_crl(root, []))
    store = TrustStore((root.cert,), crls=crls)
    revoked = verify_chain([leaf, server_ca.cert], store, NOW)
    assert revoked.trusted is False and revoked.revoked and "certificate revoked" in revoked.reason
    assert verify_chain([good, server_ca.cert], store, NOW).trusted is True
    # libpq sets CRL_CHECK_ALL: the intermediate needs its issuer's CRL too.
    partial = verify_chain([good, server_ca.cert], TrustStore((root.cert,), crls=crls[:1]), NOW)
    assert partial.trusted is False and partial.code == 3


def test_v1_certificates_are_accepted(tmp_path: Path) -> None:
    """`openssl x509 -req` without an extension file makes X.509 v1, as many how-tos do; libpq accepts it."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "ca.key", "-out", "ca.pem", "-subj", "/CN=v1 root", "-days", "30")  # fmt: skip
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "s.key", "-out", "s.csr", "-subj", "/CN=db.test")  # fmt: skip
    run("x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "s.pem", "-days", "5")
    leaf = x509.load_pem_x509_certificate((tmp_path / "s.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert leaf.version is x509.Version.v1
    verdict = verify_chain([leaf], TrustStore((ca,)), dt.datetime.now(dt.UTC))
    assert verdict.trusted is True, verdict.reason


def test_judging_openssl_output_is_total() -> None:
    store = TrustStore()
    assert trust.judge_openssl_output(0, "leaf.pem: OK\n", store).trusted is True
    odd = trust.judge_openssl_output(2, "something unexpected", store)
    assert odd.trusted is False and "something unexpected" in odd.reason
    assert verify_chain([], store, NOW).trusted is False


def test_without_the_openssl_command_cryptography_judges_and_says_so(
    pki: tuple[Issuer, Issuer], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, server_ca = pki
    monkeypatch.setattr(trust, "openssl_command", lambda: None)
    leaf = make_leaf(server_ca)
    ok = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW)
    assert ok.trusted is True and "openssl command is not installed" in ok.reason
    other = verify_chain([leaf, server_ca.cert], TrustStore((make_ca("other").cert,)), NOW)
    assert other.trusted is False
    # Revocation is OpenSSL's to judge: no verdict rather than a wrong one.
    assert verify_chain([leaf], TrustStore((root.cert,), crls=(make_crl(root, []),)), NOW).trusted is None


def test_a_crl_directory_works_like_sslcrldir(pki: tuple[Issuer, Issuer], tmp_path: Path) -> None:
    """sslcrldir is an OpenSSL hash directory (``openssl rehash`` names: HASH.r0)."""
    root, server_ca = pki
    leaf = make_leaf(server_ca, serial=777)
    for issuer, revoked in ((root, []), (server_ca, [777])):
        pem = make_crl(issuer, revoked).public_bytes(serialization.Encoding.PEM)
        (tmp_path / "x.crl").write_bytes(pem)
        name = subprocess.run(
            ["openssl", "crl", "-hash", "-noout", "-in", str(tmp_path / "x.crl")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (tmp_path / f"{name}.r0").write_bytes(pem)
    (tmp_path / "x.crl").unlink()
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,), crl_dir=tmp_path), NOW)
    assert verdict.trusted is False and verdict.revoked
