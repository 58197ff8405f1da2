"""Server CSRs: what a signer refuses (CA bit, wildcards, foreign names, odd keys, altered requests), what it
certifies (only the names and the key, with the CA's own server profile), and ``pgbatten ca sign``."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.cli import main
from pgbatten.errors import PKIError, UsageError
from pgbatten.pki import CAStore, CertificateAuthority, KeyType, classify_host, generate_key
from pgbatten.pki.csr import (
    CsrPolicy,
    check_server_csr,
    csr_pem,
    host_allowed,
    load_csr,
    make_server_csr,
)


def _csr(
    key: object,
    *,
    sans: list[x509.GeneralName] | None,
    cn: str | None = None,
    ca: bool | None = None,
    cert_sign: bool = False,
) -> x509.CertificateSigningRequest:
    """A CSR made the way another tool (or an attacker) might make one."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if cert_sign:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def test_a_csr_from_pgbatten_passes_and_keeps_its_names_in_order() -> None:
    key = generate_key()
    csr = make_server_csr(key, ["db1.example.com", "127.0.0.1", "::1", "localhost"])
    request = check_server_csr(load_csr(csr_pem(csr)), CsrPolicy())
    assert request.hosts == ("db1.example.com", "127.0.0.1", "::1", "localhost")
    assert request.key_type is KeyType.ECDSA_P256
    assert csr.subject.rfc4514_string() == "CN=db1.example.com"
    # DER works as well as PEM.
    assert check_server_csr(load_csr(csr.public_bytes(serialization.Encoding.DER)), CsrPolicy()).hosts


def test_the_certificate_carries_the_csr_key_and_names_and_the_cas_profile(tmp_path: Path) -> None:
    ca = CertificateAuthority.create()
    key = generate_key(KeyType.RSA_2048)
    request = check_server_csr(make_server_csr(key, ["db1.example.com", "10.1.2.3"]), CsrPolicy())
    cert = ca.certify_server_key(request.public_key, request.hosts, days=30)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db1.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and not usage.key_cert_sign  # RSA: key transport allowed, never a CA
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # OpenSSL itself accepts it as a server certificate for that name, from that CA.
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "leaf.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.pem", "-purpose", "sslserver", "-verify_hostname",
         "db1.example.com", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sans": [x509.DNSName("db1.example.com")], "ca": True}, "asks to be a CA"),
        ({"sans": [x509.DNSName("db1.example.com")], "cert_sign": True}, "keyCertSign"),
        ({"sans": [x509.DNSName("*.example.com")]}, "wildcards are not allowed"),
        ({"sans": [x509.RFC822Name("dba@example.com")]}, "DNS names and IPs only"),
        ({"sans": [x509.UniformResourceIdentifier("https://x.example")]}, "DNS names and IPs only"),
        ({"sans": None, "cn": "db1.example.com"}, "no subjectAltName"),
        ({"sans": [x509.DNSName("db1.example.com")], "cn": "bank.example.com"}, "CN 'bank.example.com'"),
        ({"sans": [x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]}, "address range"),
    ],
)
def test_what_a_server_may_not_ask_for(kwargs: dict[str, object], message: str) -> None:
    csr = _csr(generate_key(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PKIError, match=message):
        check_server_csr(csr, CsrPolicy())


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA-1024"),  # noqa: S505  # noqa: S505,
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
)
def test_key_types_the_ca_does_not_issue_are_refused(key: object, message: str) -> None:
    with pytest.raises(PKIError, match=message):
        check_server_csr(_csr(key, sans=[x509.DNSName("db1.example.com")]), CsrPolicy())


def test_the_policy_can_require_one_key_type() -> None:
    csr = make_server_csr(generate_key(KeyType.RSA_2048), ["db1.example.com"])
    with pytest.raises(PKIError, match="rsa-2048; allowed here: ecdsa-p256"):
        check_server_csr(csr, CsrPolicy(key_types=frozenset({KeyType.ECDSA_P256})))


def test_an_altered_csr_is_refused() -> None:
    csr = make_server_csr(generate_key(), ["db1.example.com"])
    # Put another key's public half into the request: the signature no longer verifies.
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    other = (
        generate_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    mine = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    start = der.find(mine)
    der[start : start + len(mine)] = other
    with pytest.raises(PKIError, match="signature does not verify"):
        check_server_csr(load_csr(bytes(der)), CsrPolicy())


def test_garbage_is_one_clear_error() -> None:
    with pytest.raises(PKIError, match="not a readable certificate signing request"):
        load_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n")


def test_allowed_hosts_names_wildcards_and_networks() -> None:
    allowed = ("db1.example.com", "*.pg.example.com", "10.0.0.0/24", "::1", "localhost")
    ok = make_server_csr(generate_key(), ["db1.example.com", "a.pg.example.com", "10.0.0.7", "::1"])
    assert check_server_csr(ok, CsrPolicy(allowed_hosts=allowed)).hosts
    bad = make_server_csr(generate_key(), ["db1.example.com", "a.b.pg.example.com", "10.0.1.7"])
    with pytest.raises(PKIError, match=r"asks for a\.b\.pg\.example\.com, 10\.0\.1\.7, not allowed"):
        check_server_csr(bad, CsrPolicy(allowed_hosts=allowed))
    with pytest.raises(UsageError, match="invalid allowed network"):
        CsrPolicy(allowed_hosts=("10.0.0.1/24",))


_label = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)


@given(st.lists(_label, min_size=1, max_size=4))
def test_a_wildcard_allows_exactly_one_more_label(labels: list[str]) -> None:
    name = ".".join([*labels, "example", "com"])
    assert host_allowed(classify_host(name), ["*.example.com"]) is (len(labels) == 1)
    assert host_allowed(classify_host(name), [name]) is True
    assert host_allowed(classify_host("127.0.0.1"), ["*.example.com"]) is False


# -- pgbatten ca sign ---------------------------------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_ca_sign_signs_records_and_writes_the_files(ca_dir: Path, tmp_path: Path) -> None:
    assert run("ca", "init", "--ca-dir", str(ca_dir)).exit_code == 0
    key_before = (ca_dir / "ca.key").read_bytes()
    key = generate_key()
    (tmp_path / "db1.csr").write_bytes(csr_pem(make_server_csr(key, ["db1.example.com", "10.0.0.5"])))
    result = run(
        "ca", "sign", str(tmp_path / "db1.csr"), "--ca-dir", str(ca_dir),
        "--allow-host", "db1.example.com", "--allow-host", "10.0.0.0/24",
        "--out", str(tmp_path / "db1.crt"), "--ca-out", str(tmp_path / "ca.crt"), "--days", "90", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "pgbatten.ca-sign/1" and doc["signed"] is True
    assert doc["hosts"] == ["db1.example.com", "10.0.0.5"]
    cert = x509.load_pem_x509_certificate((tmp_path / "db1.crt").read_bytes())
    assert str(cert.serial_number) == doc["serial"]
    assert (tmp_path / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
    entries = CAStore(ca_dir).entries()
    assert [(e.kind, e.name, e.serial) for e in entries] == [
        ("server", "db1.example.com", cert.serial_number)
    ]
    assert (ca_dir / "ca.key").read_bytes() == key_before


def test_ca_sign_refusal_is_one_line_and_records_nothing(ca_dir: Path, tmp_path: Path) -> None:
    assert run("ca", "init", "--ca-dir", str(ca_dir)).exit_code == 0
    (tmp_path / "x.csr").write_bytes(csr_pem(make_server_csr(generate_key(), ["bank.example.com"])))
    result = run("ca", "sign", str(tmp_path / "x.csr"), "--ca-dir", str(ca_dir), "--allow-host", "*.pg.test")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "bank.example.com, not allowed" in result.stderr
    assert CAStore(ca_dir).entries() == []
    dry = run("ca", "sign", str(tmp_path / "x.csr"), "--ca-dir", str(ca_dir), "--dry-run")
    assert dry.exit_code == 0 and "Would sign" in dry.stderr
    assert CAStore(ca_dir).entries() == []
