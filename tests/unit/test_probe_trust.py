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


def _rsa_leaf(issuer: Issuer, bits: int) -> x509.Certificate:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return (
        x509.CertificateBuilder()
        .subject_name(_name("db.test"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(issuer.key, hashes.SHA256())
    )


def test_the_client_security_level_refuses_small_keys(pki: tuple[Issuer, Issuer]) -> None:
    """libssl checks the chain at its context's security level; `openssl verify` only when told. Level 2
    (Debian's, Ubuntu's and RHEL's default) refuses RSA keys under 2048 bits, level 1 accepts them."""
    root, server_ca = pki
    leaf = _rsa_leaf(server_ca, 1024)
    store = TrustStore((root.cert,))
    refused = verify_chain([leaf, server_ca.cert], store, NOW, auth_level=2)
    assert refused.trusted is False and refused.code == trust.EE_KEY_TOO_SMALL
    assert "security level" in refused.reason
    assert verify_chain([leaf, server_ca.cert], store, NOW, auth_level=1).trusted is True


def test_the_client_security_level_refuses_sha1_signatures(tmp_path: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "ca.key", "-out", "ca.pem", "-subj", "/CN=sha1 root", "-days", "30")  # fmt: skip
    run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "s.key", "-out", "s.csr", "-subj", "/CN=db.test")  # fmt: skip
    run("x509", "-req", "-sha1", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "s.pem")
    leaf = x509.load_pem_x509_certificate((tmp_path / "s.pem").read_bytes())
    store = TrustStore((x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes()),))
    now = dt.datetime.now(dt.UTC)
    refused = verify_chain([leaf], store, now, auth_level=2)
    assert refused.trusted is False and refused.code == trust.CA_MD_TOO_WEAK
    assert verify_chain([leaf], store, now, auth_level=0).trusted is True


def test_the_default_level_is_the_one_this_machines_libssl_gives_a_client(
    pki: tuple[Issuer, Issuer], monkeypatch: pytest.MonkeyPatch
) -> None:
    level = trust.client_security_level()
    assert level is None or 0 <= level <= 5
    root, server_ca = pki
    leaf = _rsa_leaf(server_ca, 1024)
    monkeypatch.setattr(trust, "client_security_level", lambda: 2)
    assert verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW).trusted is False
    monkeypatch.setattr(trust, "client_security_level", lambda: None)  # libssl not found: no level check
    assert verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW).trusted is True


# ----------------------------------------------------------------- sslcrl / sslcrldir as libpq loads them


@pytest.fixture
def files(pki: tuple[Issuer, Issuer], tmp_path: Path) -> Path:
    root, server_ca = pki
    (tmp_path / "root+server_ca.crt").write_bytes(
        b"".join(c.cert.public_bytes(serialization.Encoding.PEM) for c in (root, server_ca))
    )
    (tmp_path / "root+server.crl").write_bytes(
        b"".join(make_crl(i, []).public_bytes(serialization.Encoding.PEM) for i in (root, server_ca))
    )
    (tmp_path / "server.der").write_bytes(make_crl(server_ca, []).public_bytes(serialization.Encoding.DER))
    return tmp_path


def test_a_sslcrl_that_does_not_load_turns_crl_checks_off_as_in_libpq(
    pki: tuple[Issuer, Issuer], files: Path
) -> None:
    """libpq gives sslcrl to X509_STORE_load_locations, as PEM; when that fails it checks no CRL, silently
    (PostgreSQL's suite: "sslcrl option with invalid file name" connects). check agrees, and says so."""
    _root, server_ca = pki
    leaf = make_leaf(server_ca)
    ca = files / "root+server_ca.crt"
    for crl in (files / "missing.crl", files / "server.der"):
        store = trust.load_trust_store(ca, crl, as_libpq=True)
        assert store is not None and not store.checks_crls
        assert len(store.notes) == 1 and str(crl) in store.notes[0]
        assert verify_chain([leaf, server_ca.cert], store, NOW).trusted is True
    # The file failing, the directory beside it is not loaded either.
    skipped = trust.load_trust_store(ca, files / "missing.crl", files, as_libpq=True)
    assert skipped is not None and not skipped.checks_crls and "sslcrldir" in skipped.notes[0]


def test_a_sslcrldir_turns_crl_checks_on_even_when_missing(pki: tuple[Issuer, Issuer], files: Path) -> None:
    """libpq's X509_STORE_load_locations accepts any directory name: CRL checks on, no CRL found."""
    _root, server_ca = pki
    store = trust.load_trust_store(files / "root+server_ca.crt", None, files / "nowhere", as_libpq=True)
    assert store is not None and store.checks_crls and store.notes
    verdict = verify_chain([make_leaf(server_ca), server_ca.cert], store, NOW)
    assert verdict.trusted is False and verdict.code == trust.UNABLE_TO_GET_CRL


def test_a_sslcrl_holding_certificates_only_turns_checks_on(pki: tuple[Issuer, Issuer], files: Path) -> None:
    _root, server_ca = pki
    store = trust.load_trust_store(files / "root+server_ca.crt", files / "root+server_ca.crt", as_libpq=True)
    assert store is not None and store.checks_crls and not store.notes
    verdict = verify_chain([make_leaf(server_ca), server_ca.cert], store, NOW)
    assert verdict.trusted is False and verdict.code == trust.UNABLE_TO_GET_CRL


def test_check_crl_is_strict_and_takes_a_directory(pki: tuple[Issuer, Issuer], files: Path) -> None:
    from pgbatten.errors import FileProblem

    ca = files / "root+server_ca.crt"
    with pytest.raises(FileProblem, match="No such file"):
        trust.load_trust_store(ca, files / "missing.crl")
    with pytest.raises(FileProblem, match="openssl crl -inform DER"):
        trust.load_trust_store(ca, files / "server.der")
    as_dir = trust.load_trust_store(ca, files)
    assert as_dir is not None and as_dir.crl_dir == files and as_dir.checks_crls
    loaded = trust.load_trust_store(ca, files / "root+server.crl")
    assert loaded is not None and len(loaded.crls) == 2 and not loaded.notes


# ------------------------------------------------ OpenSSL's order, purposes and bundles, as libpq sees them


def _expired_leaf(
    issuer: Issuer, *, serial: int, eku: list[x509.ObjectIdentifier] | None = None
) -> x509.Certificate:
    # make_leaf's validity starts 300 days before NOW: 10 days left, judged 11 days after NOW.
    return make_leaf(issuer, days=10, serial=serial, eku=eku)


LATER = NOW + dt.timedelta(days=11)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        # Chain building first: an unknown CA hides the expiry.
        ("unknown-ca", trust.UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
        # Then the purpose, CRL checks or not.
        ("purpose", trust.INVALID_PURPOSE),
        ("purpose+crl", trust.INVALID_PURPOSE),
        # Then revocation: a CRL missing from the chain, or a revoked certificate, before validity.
        ("missing-crl", trust.UNABLE_TO_GET_CRL),
        ("revoked", trust.CERT_REVOKED),
        # Validity last.
        ("expired", trust.CERT_HAS_EXPIRED),
        ("expired+crl", trust.CERT_HAS_EXPIRED),
    ],
)
def test_the_first_error_is_the_one_openssl_reports_first(
    pki: tuple[Issuer, Issuer], case: str, code: int
) -> None:
    """Every certificate here has expired too; OpenSSL (``openssl verify`` with the same inputs, and libssl
    inside libpq) stops at its first error, so the reason must be that one, as PostgreSQL's suite sees with
    server-rsapss and an absent CRL."""
    root, server_ca = pki
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] if case.startswith("purpose") else None
    leaf = _expired_leaf(server_ca, serial=9000 + len(case), eku=eku)
    both = (make_crl(root, []), make_crl(server_ca, [9000 + len(case)] if case == "revoked" else []))
    store = {
        "unknown-ca": TrustStore((make_ca("other").cert,)),
        "purpose": TrustStore((root.cert,)),
        "purpose+crl": TrustStore((root.cert,), crls=both),
        "missing-crl": TrustStore((root.cert,), crls=both[1:]),
        "revoked": TrustStore((root.cert,), crls=both),
        "expired": TrustStore((root.cert,)),
        "expired+crl": TrustStore((root.cert,), crls=both),
    }[case]
    verdict = verify_chain([leaf, server_ca.cert], store, LATER)
    assert verdict.trusted is False
    assert verdict.code == code, verdict.reason


def test_netscape_cert_type_client_only_is_no_server(pki: tuple[Issuer, Issuer]) -> None:
    """nsCertType (old how-tos still set it): OpenSSL's sslserver purpose honours it."""
    root, server_ca = pki
    key = ec.generate_private_key(ec.SECP256R1())
    ns_client = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("2.16.840.1.113730.1.1"), b"\x03\x02\x07\x80"
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("db.test"))
        .issuer_name(server_ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(ns_client, critical=False)
        .sign(server_ca.key, hashes.SHA256())
    )
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((root.cert,)), NOW)
    assert verdict.trusted is False and verdict.code == trust.INVALID_PURPOSE


def test_an_intermediate_for_client_auth_only_cannot_issue_server_certificates(
    pki: tuple[Issuer, Issuer],
) -> None:
    """The purpose covers the CAs too: an extendedKeyUsage on the intermediate without serverAuth refuses."""
    root, _server_ca = pki
    key = ec.generate_private_key(ec.SECP256R1())
    client_only = Issuer(
        x509.CertificateBuilder()
        .subject_name(_name("client-only ca"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=400))
        .not_valid_after(NOW + dt.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(root.key, hashes.SHA256()),
        key,
    )
    verdict = verify_chain([make_leaf(client_only), client_only.cert], TrustStore((root.cert,)), NOW)
    assert verdict.trusted is False and verdict.code == trust.INVALID_PURPOSE and verdict.depth == 1


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_bundles_of_several_cas_in_any_order(pki: tuple[Issuer, Issuer], order: tuple[int, int, int]) -> None:
    """PostgreSQL's both-cas-1.crt and both-cas-2.crt: root, server CA and client CA in one file."""
    root, server_ca = pki
    client_ca = make_ca("client ca", root)
    cas = [root.cert, server_ca.cert, client_ca.cert]
    leaf = make_leaf(server_ca)
    assert verify_chain([leaf], TrustStore(tuple(cas[i] for i in order)), NOW).trusted is True
    # The two CAs without the root: a partial chain, which OpenSSL (and so libpq) refuses.
    partial = verify_chain([leaf], TrustStore((client_ca.cert, server_ca.cert)), NOW)
    assert partial.trusted is False and partial.code == trust.UNABLE_TO_GET_ISSUER_CERT


def test_a_leaf_given_as_sslrootcert_is_no_anchor(pki: tuple[Issuer, Issuer]) -> None:
    _root, server_ca = pki
    leaf = make_leaf(server_ca)
    verdict = verify_chain([leaf, server_ca.cert], TrustStore((leaf,)), NOW)
    assert verdict.trusted is False


def _hash_dir(directory: Path, crls: list[x509.CertificateRevocationList]) -> Path:
    directory.mkdir()
    for crl in crls:
        pem = crl.public_bytes(serialization.Encoding.PEM)
        name = subprocess.run(
            ["openssl", "crl", "-hash", "-noout"], input=pem, check=True, capture_output=True
        ).stdout.decode()
        (directory / f"{name.strip()}.r0").write_bytes(pem)
    return directory


def test_a_crl_file_and_a_crl_directory_count_together(pki: tuple[Issuer, Issuer], tmp_path: Path) -> None:
    """libpq loads sslcrl and sslcrldir into one store: the root's CRL from the file and the server CA's from
    the directory cover the whole chain; either alone does not (CRL checks over the whole chain)."""
    root, server_ca = pki
    leaf, good = make_leaf(server_ca, serial=5151), make_leaf(server_ca)
    root_crl, server_crl = make_crl(root, []), make_crl(server_ca, [5151])
    directory = _hash_dir(tmp_path / "crldir", [server_crl])
    (tmp_path / "root.crl").write_bytes(root_crl.public_bytes(serialization.Encoding.PEM))
    ca = tmp_path / "ca.crt"
    ca.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    for as_libpq in (True, False):
        together = trust.load_trust_store(ca, tmp_path / "root.crl", directory, as_libpq=as_libpq)
        assert together is not None
        verdict = verify_chain([leaf, server_ca.cert], together, NOW)
        assert verdict.revoked, verdict.reason
        assert verify_chain([good, server_ca.cert], together, NOW).trusted is True
        alone = trust.load_trust_store(ca, None, directory, as_libpq=as_libpq)
        assert alone is not None
        assert verify_chain([good, server_ca.cert], alone, NOW).code == trust.UNABLE_TO_GET_CRL


def test_rsa_pss_keys(tmp_path: Path) -> None:
    """PostgreSQL's server-rsapss: an RSA-PSS key (``-newkey rsa-pss``), self-signed. OpenSSL trusts it when
    it is the sslrootcert; everything else check reports about it must cope with the key type."""
    from pgbatten.certfacts import CertificateInfo
    from pgbatten.probe.hostname import hostname_matches

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048", "-nodes",
         "-keyout", "k.pem", "-out", "c.pem", "-subj", "/CN=db.test", "-days", "30"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert verify_chain([cert], TrustStore((cert,)), now).trusted is True
    other = verify_chain([cert], TrustStore((make_ca("other").cert,)), now)
    assert other.trusted is False and other.code == trust.DEPTH_ZERO_SELF_SIGNED_CERT
    assert CertificateInfo.from_certificate(cert).subject
    assert hostname_matches(cert, "db.test").matched


def test_sslrootcert_system_says_older_libpq_refuses_it() -> None:
    """libpq 16 added sslrootcert=system; libpq 15 looks for a file named "system" (real psql 15 and 17 on
    the same target: 15 refuses, 17 connects), so a verdict of yes says which clients it is for."""
    verdict = trust.judge_openssl_output(0, "leaf.pem: OK\n", TrustStore(system=True))
    assert verdict.trusted is True
    assert "libpq 16+" in verdict.reason and 'file named "system"' in verdict.reason
    assert "libpq 16+" not in trust.judge_openssl_output(0, "leaf.pem: OK\n", TrustStore()).reason


def test_a_certificate_only_the_raw_enumeration_reached_gets_no_verify_full(
    pki: tuple[Issuer, Issuer],
) -> None:
    """A server whose certificate no libpq-like handshake can use (a brainpool key: libpq's OpenSSL offers no
    such group, "sslv3 alert handshake failure"), seen by the full audit's raw hellos: libpq fails at the
    handshake, so verify-full is no, however good the chain."""
    from pgbatten.probe.check import aggregate
    from pgbatten.probe.enumerate import TlsEnumeration
    from pgbatten.probe.plaintext import PlaintextResult
    from pgbatten.probe.tls import HandshakeInfo, TlsScan, VersionAttempt, VersionStatus
    from pgbatten.probe.wire import PlaintextVerdict, SslAnswer, SslResponse, Target

    root, server_ca = pki
    leaf = make_leaf(server_ca)
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in (leaf, server_ca.cert))
    failure = "sslv3 alert handshake failure"
    scan = TlsScan(
        SslResponse(SslAnswer.ACCEPTED),
        (
            VersionAttempt("TLSv1.3", VersionStatus.ERROR, failure),
            VersionAttempt("TLSv1.2", VersionStatus.ERROR, failure),
        ),
        connections=2,
    )
    enumeration = TlsEnumeration(
        "db.test", 5432, False, ("TLSv1.2",), {}, {}, (), {}, 3, ders, (), (), (), (), (), 0.1
    )
    refused = PlaintextResult(PlaintextVerdict(False, "pg_hba refused"), True)
    store = TrustStore((root.cert,))
    result = aggregate(Target("db.test"), scan, refused, ca=store, now=NOW, enumeration=enumeration)
    [verdict] = result.verify_full
    assert verdict.ok is False
    assert "cannot complete the TLS handshake" in verdict.why and failure in verdict.why
    # The same chain through a libpq-like handshake: yes.
    best = HandshakeInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, ders, full_chain=True)
    shaken = TlsScan(
        SslResponse(SslAnswer.ACCEPTED), (VersionAttempt("TLSv1.3", VersionStatus.ACCEPTED),), best
    )
    fine = aggregate(Target("db.test"), shaken, refused, ca=store, now=NOW, enumeration=enumeration)
    assert fine.verify_full[0].ok is True, fine.verify_full[0].why


def test_no_tls_at_all_is_no_verify_full_in_libpqs_words() -> None:
    """No certificate to judge, yet libpq's answer is known: it refuses a server answering N to SSLRequest,
    and fails on a handshake that never completes."""
    from pgbatten.probe.check import aggregate
    from pgbatten.probe.plaintext import PlaintextResult
    from pgbatten.probe.tls import TlsScan, VersionAttempt, VersionStatus
    from pgbatten.probe.wire import PlaintextVerdict, SslAnswer, SslResponse, Target

    refused = PlaintextResult(PlaintextVerdict(False, "pg_hba refused"), True)
    no_ssl = aggregate(Target("db.test"), TlsScan(SslResponse(SslAnswer.REFUSED)), refused, ca=None, now=NOW)
    [verdict] = no_ssl.verify_full
    assert verdict.ok is False and verdict.why == "server does not support SSL, but SSL was required"
    failure = "TLS handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE"
    attempts = (VersionAttempt("TLSv1.3", VersionStatus.ERROR, failure),)
    scan = TlsScan(SslResponse(SslAnswer.ACCEPTED), attempts, connections=1)
    [verdict] = aggregate(Target("db.test"), scan, refused, ca=None, now=NOW).verify_full
    assert verdict.ok is False and verdict.why.startswith("SSL error:") and failure in verdict.why
