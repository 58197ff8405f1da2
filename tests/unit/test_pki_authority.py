from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pgbatten.certfacts import format_fingerprint
from pgbatten.errors import PKIError, UsageError
from pgbatten.pki import (
    CertificateAuthority,
    IssuedCertificate,
    KeyType,
    generate_key,
    key_type_of,
    load_private_key_pem,
    private_key_pem,
)

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority) -> IssuedCertificate:
    return ca.issue_server(["db.example.com", "127.0.0.1", "::1"])


# -- key types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ecdsa-p256", KeyType.ECDSA_P256),
        ("ECDSA", KeyType.ECDSA_P256),
        ("p256", KeyType.ECDSA_P256),
        ("rsa", KeyType.RSA_2048),
        ("rsa2048", KeyType.RSA_2048),
        ("RSA_3072", KeyType.RSA_3072),
        (" rsa-4096 ", KeyType.RSA_4096),
    ],
)
def test_key_type_parse_accepts_aliases(text: str, expected: KeyType) -> None:
    assert KeyType.parse(text) is expected


def test_key_type_parse_rejects_unknown_with_one_line() -> None:
    with pytest.raises(UsageError) as info:
        KeyType.parse("dsa-1024")
    assert "'dsa-1024'" in str(info.value)
    assert "ecdsa-p256" in str(info.value)
    assert "\n" not in str(info.value)


def test_generate_key_matches_type() -> None:
    ec_key = generate_key(KeyType.ECDSA_P256)
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    assert isinstance(ec_key.curve, ec.SECP256R1)
    rsa_key = generate_key(KeyType.RSA_2048)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert rsa_key.key_size == 2048
    assert key_type_of(rsa_key) is KeyType.RSA_2048


def test_encrypted_pem_needs_the_right_passphrase() -> None:
    key = generate_key()
    pem = private_key_pem(key, b"s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    loaded = load_private_key_pem(pem, b"s3cret", label="CA key /x/ca.key")
    assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(PKIError) as info:
        load_private_key_pem(pem, b"wrong", label="CA key /x/ca.key")
    assert str(info.value) == "wrong passphrase for CA key /x/ca.key"
    with pytest.raises(PKIError, match="is encrypted and no passphrase was given"):
        load_private_key_pem(pem, None, label="CA key /x/ca.key")


def test_garbage_key_is_a_one_line_error() -> None:
    with pytest.raises(PKIError) as info:
        load_private_key_pem(b"not a key", None, label="CA key k")
    assert str(info.value).startswith("CA key k is not a readable PEM private key")


# -- the root ---------------------------------------------------------------------------------------------


def test_ca_root_extensions_and_validity() -> None:
    ca = CertificateAuthority.create(common_name="Acme DB CA", days=100, now=NOW)
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme DB CA"
    cert.verify_directly_issued_by(cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=100)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CertificateAuthority.create(now=dt.datetime(2030, 1, 1))


def test_ca_rejects_mismatched_key(ca: CertificateAuthority) -> None:
    with pytest.raises(PKIError):
        CertificateAuthority(certificate=ca.certificate, key=generate_key())


def test_serials_are_random_and_positive(ca: CertificateAuthority) -> None:
    serials = {ca.issue_client("u").serial for _ in range(3)}
    assert len(serials) == 3
    assert all(0 < s < 2**159 for s in serials)


# -- server certificates ----------------------------------------------------------------------------------


def test_server_certificate_contents(ca: CertificateAuthority, server: IssuedCertificate) -> None:
    cert = server.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.IPv4Address("127.0.0.1"),
        ipaddress.IPv6Address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment  # ECDSA keys cannot encipher
    assert not ku.value.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert server.chain == ()
    assert server.fingerprint_sha256 == format_fingerprint(cert.fingerprint(hashes.SHA256()).hex())
    assert server.serial == cert.serial_number
    assert server.not_after.tzinfo is not None


def test_rsa_server_key_gets_key_encipherment(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(["db.example.com"], key_type=KeyType.RSA_2048)
    assert isinstance(issued.key, rsa.RSAPrivateKey)
    assert issued.certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    issued.certificate.verify_directly_issued_by(ca.certificate)


def test_server_cn_falls_back_to_ip_and_honours_explicit(ca: CertificateAuthority) -> None:
    by_ip = ca.issue_server(["10.1.2.3", "db.internal"])
    assert by_ip.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db.internal"
    only_ip = ca.issue_server(["10.1.2.3"])
    assert only_ip.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "10.1.2.3"
    explicit = ca.issue_server(["db.internal"], common_name="primary")
    assert explicit.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "primary"


def test_long_host_name_leaves_subject_empty_with_critical_san(ca: CertificateAuthority) -> None:
    long_name = "a" * 60 + ".example.com"
    issued = ca.issue_server([long_name])
    assert len(issued.certificate.subject) == 0
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.DNSName) == [long_name]


def test_server_validity_is_clamped_to_the_root() -> None:
    ca = CertificateAuthority.create(days=10, now=NOW)
    issued = ca.issue_server(["db.example.com"], days=365, now=NOW + dt.timedelta(days=1))
    assert issued.not_after == ca.not_after
    assert issued.certificate.not_valid_before_utc == NOW + dt.timedelta(days=1) - dt.timedelta(minutes=5)


def test_issuing_from_an_expired_root_fails() -> None:
    ca = CertificateAuthority.create(days=1, now=NOW)
    with pytest.raises(PKIError, match="expired"):
        ca.issue_server(["db.example.com"], now=NOW + dt.timedelta(days=2))


def test_invalid_host_or_days_is_usage_error(ca: CertificateAuthority) -> None:
    with pytest.raises(UsageError, match="invalid host name 'x y'"):
        ca.issue_server(["x y"])
    with pytest.raises(UsageError, match="at least one day"):
        ca.issue_server(["db.example.com"], days=0)


# -- client certificates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "Bob", 'we "ird", =+;<>#\\ name', "ユーザー", "x" * 63])
def test_client_cn_is_the_role_name_exactly(ca: CertificateAuthority, user: str) -> None:
    issued = ca.issue_client(user)
    issued.certificate.verify_directly_issued_by(ca.certificate)
    assert issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
    eku = issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not issued.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    ("user", "reason"),
    [("", "empty"), ("bob\n", "control"), ("a\x00b", "control"), ("é" * 32, "63 bytes")],
)
def test_client_name_rejects_what_cannot_be_a_role(ca: CertificateAuthority, user: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        ca.issue_client(user)


# -- serialisations ---------------------------------------------------------------------------------------


def test_pem_pk8_and_pkcs12_load_back(ca: CertificateAuthority) -> None:
    issued = ca.issue_client("alice")
    certs = x509.load_pem_x509_certificates(issued.cert_pem())
    assert certs == [issued.certificate]
    pem_key = serialization.load_pem_private_key(issued.key_pem(), password=None)
    assert isinstance(pem_key, ec.EllipticCurvePrivateKey)
    assert pem_key.private_numbers() == issued.key.private_numbers()
    der_key = serialization.load_der_private_key(issued.key_pk8_der(), password=None)
    assert isinstance(der_key, ec.EllipticCurvePrivateKey)
    assert der_key.private_numbers() == issued.key.private_numbers()
    p12 = pkcs12.load_pkcs12(issued.pkcs12(b"hunter2", ca.certificate), b"hunter2")
    assert p12.cert is not None
    assert p12.cert.certificate == issued.certificate
    assert p12.cert.friendly_name == b"user"  # the alias PgJDBC requires
    assert [c.certificate for c in p12.additional_certs] == [ca.certificate]
    assert p12.key is not None
    assert isinstance(p12.key, ec.EllipticCurvePrivateKey)
    assert p12.key.private_numbers() == issued.key.private_numbers()
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(issued.pkcs12(b"hunter2"), b"wrong")
    with pytest.raises(UsageError):
        issued.pkcs12(b"")


def test_cert_pem_carries_intermediates(ca: CertificateAuthority, server: IssuedCertificate) -> None:
    with_chain = IssuedCertificate(server.certificate, server.key, chain=(ca.certificate,))
    assert x509.load_pem_x509_certificates(with_chain.cert_pem()) == [server.certificate, ca.certificate]


# -- CRL --------------------------------------------------------------------------------------------------


def test_crl_lists_revoked_serials_and_is_signed(ca: CertificateAuthority) -> None:
    revoked_at = NOW - dt.timedelta(days=1)
    crl = ca.build_crl([(1234, revoked_at), (2**158 + 7, revoked_at)], number=42, days=7, now=NOW)
    assert crl.is_signature_valid(ca.key.public_key())
    assert not crl.is_signature_valid(CertificateAuthority.create().key.public_key())
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + dt.timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    entry = crl.get_revoked_certificate_by_serial_number(2**158 + 7)
    assert entry is not None
    assert entry.revocation_date_utc == revoked_at
    assert crl.get_revoked_certificate_by_serial_number(999) is None


# -- real TLS handshakes ----------------------------------------------------------------------------------


def _write_pair(tmp_path: Path, issued: IssuedCertificate, stem: str) -> tuple[Path, Path]:
    cert_file = tmp_path / f"{stem}.crt"
    key_file = tmp_path / f"{stem}.key"
    cert_file.write_bytes(issued.cert_pem())
    key_file.write_bytes(issued.key_pem())
    return cert_file, key_file


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> None:
    """Run both ends of a TLS handshake over a socketpair; raise the client's error, else the server's."""
    client_sock, server_sock = socket.socketpair()
    # Only a guard against a hung test; the assertions never depend on timing.
    client_sock.settimeout(30)
    server_sock.settimeout(30)
    server_error: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            server_error.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            assert tls.recv(2) == b"ok"
    finally:
        client_sock.close()
        thread.join()
        server_sock.close()
    if server_error:
        raise server_error[0]


def _server_ctx(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _client_ctx(ca_cert: x509.Certificate) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    return ctx


@pytest.mark.parametrize("hostname", ["db.example.com", "DB.Example.COM", "127.0.0.1", "::1"])
def test_tls_handshake_succeeds_for_each_san(
    tmp_path: Path, ca: CertificateAuthority, server: IssuedCertificate, hostname: str
) -> None:
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    _handshake(server_ctx, _client_ctx(ca.certificate), hostname)


def test_tls_handshake_rejects_wrong_host_name(
    tmp_path: Path, ca: CertificateAuthority, server: IssuedCertificate
) -> None:
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake(server_ctx, _client_ctx(ca.certificate), "evil.example.com")
    assert "mismatch" in info.value.verify_message.lower()


def test_tls_handshake_rejects_wrong_ip(
    tmp_path: Path, ca: CertificateAuthority, server: IssuedCertificate
) -> None:
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake(server_ctx, _client_ctx(ca.certificate), "127.0.0.2")
    assert "mismatch" in info.value.verify_message.lower()


def test_tls_handshake_rejects_a_different_ca(tmp_path: Path, server: IssuedCertificate) -> None:
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    other_ca = CertificateAuthority.create(common_name="pgbatten CA")  # same name, different key
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake(server_ctx, _client_ctx(other_ca.certificate), "db.example.com")
    assert "issuer certificate" in info.value.verify_message


def test_mutual_tls_with_client_certificate(
    tmp_path: Path, ca: CertificateAuthority, server: IssuedCertificate
) -> None:
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    client = ca.issue_client("alice", key_type=KeyType.RSA_2048)
    client_ctx = _client_ctx(ca.certificate)
    client_ctx.load_cert_chain(*_write_pair(tmp_path, client, "client"))
    _handshake(server_ctx, client_ctx, "db.example.com")


def test_server_certificate_cannot_act_as_client(
    tmp_path: Path, ca: CertificateAuthority, server: IssuedCertificate
) -> None:
    # The EKU must matter: a server certificate presented as a client one is refused by the server.
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    client_ctx = _client_ctx(ca.certificate)
    client_ctx.load_cert_chain(*_write_pair(tmp_path, server, "wrong-client"))
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(server_ctx, client_ctx, "db.example.com")


# -- one builder: CA, leaf and stand-in certificates share their shape -----------------------------------


def test_stand_in_carries_the_given_serial_and_a_client_shape(ca: CertificateAuthority) -> None:
    probe = ca.issue_stand_in(0xC0FFEE, common_name="probe", lifetime=dt.timedelta(minutes=30), now=NOW)
    cert = probe.certificate
    assert probe.serial == 0xC0FFEE
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "probe"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert cert.not_valid_after_utc == min(NOW + dt.timedelta(minutes=30), ca.not_after)
    with pytest.raises(ValueError, match="positive"):
        ca.issue_stand_in(0, common_name="probe", lifetime=dt.timedelta(minutes=1))
    with pytest.raises(ValueError, match="159 bits"):
        ca.issue_stand_in(2**159, common_name="probe", lifetime=dt.timedelta(minutes=1))


def test_every_certificate_gets_critical_constraints_and_key_usage(ca: CertificateAuthority) -> None:
    stand_in = ca.issue_stand_in(77, common_name="probe", lifetime=dt.timedelta(minutes=5))
    leaves = [ca.issue_client("alice"), ca.issue_server(["db.example.com"]), stand_in]
    for cert in [ca.certificate, *(leaf.certificate for leaf in leaves)]:
        is_ca = cert is ca.certificate
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert bc.critical and ku.critical
        assert bc.value.ca is is_ca
        assert ku.value.digital_signature
        assert ku.value.key_cert_sign is is_ca
        assert ku.value.crl_sign is is_ca
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        if not is_ca:
            aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            assert aki.key_identifier == ski.digest


def test_explicit_not_after_is_capped_at_the_ca() -> None:
    ca = CertificateAuthority.create(days=30, now=NOW)
    wanted = NOW + dt.timedelta(days=10, hours=3)
    assert ca.issue_client("alice", not_after=wanted, now=NOW).not_after == wanted
    assert ca.issue_server(["db"], not_after=wanted, now=NOW).not_after == wanted
    # No leaf is ever issued to outlive its CA.
    assert ca.issue_client("alice", not_after=NOW + dt.timedelta(days=400), now=NOW).not_after == ca.not_after
    with pytest.raises(UsageError, match="not in the future"):
        ca.issue_client("alice", not_after=NOW - dt.timedelta(seconds=1), now=NOW)


def test_crl_is_sorted_by_serial_and_drops_certificates_that_have_ended(ca: CertificateAuthority) -> None:
    from pgbatten.pki.revocation import Revocation

    revoked_at = NOW - dt.timedelta(days=3)
    ended = Revocation(5, revoked_at, not_after=NOW - dt.timedelta(days=1))
    just_ended = Revocation(6, revoked_at, not_after=NOW - dt.timedelta(minutes=1))  # within clock skew
    live = [Revocation(s, revoked_at, not_after=NOW + dt.timedelta(days=9)) for s in (900, 3, 2**150, 41)]
    crl = ca.build_crl([*live, ended, just_ended, (17, revoked_at)], number=1, now=NOW)
    serials = [r.serial_number for r in crl]
    assert serials == sorted(serials)
    assert set(serials) == {3, 6, 17, 41, 900, 2**150}
    assert crl.get_revoked_certificate_by_serial_number(5) is None
    assert crl.is_signature_valid(ca.key.public_key())


# -- CA rotation: the next CA, vouched for by the old one ------------------------------------------------


def test_next_ca_leaves_verify_against_the_old_root_the_new_root_and_both(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)  # real handshakes check validity against the real clock
    old = CertificateAuthority.create(common_name="Ops CA", days=100, now=now - dt.timedelta(days=1))
    new = old.next_ca(days=3650, now=now)
    [cross] = new.chain
    assert cross.subject == new.certificate.subject == old.certificate.subject
    assert cross.issuer == old.certificate.subject
    cross.verify_directly_issued_by(old.certificate)
    assert cross.not_valid_after_utc == old.not_after  # never outlives either CA
    assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cross.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    same_ski = new.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert cross.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == same_ski
    assert key_type_of(new.key) is key_type_of(old.key)

    server = new.issue_server(["db.example.com"], now=now)
    assert server.chain == (cross,)
    assert x509.load_pem_x509_certificates(server.cert_pem()) == [server.certificate, cross]
    server_ctx = _server_ctx(*_write_pair(tmp_path, server, "server"))
    for roots in ([old.certificate], [new.certificate], [new.certificate, old.certificate]):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(
            cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in roots)
        )
        _handshake(server_ctx, ctx, "db.example.com")
    # The new CA's own leaves never outlive it, whatever is asked.
    assert new.issue_client("alice", days=36500, now=now).not_after == new.not_after


def test_cross_certificate_must_certify_this_ca() -> None:
    old, other = CertificateAuthority.create(), CertificateAuthority.create()
    new = old.next_ca()
    with pytest.raises(PKIError, match="does not certify this CA"):
        other.with_cross(new.chain[0])
    ended = CertificateAuthority.create(days=1, now=NOW - dt.timedelta(days=5))
    with pytest.raises(PKIError, match="no overlap left"):
        ended.cross_sign(new.certificate, now=NOW)
