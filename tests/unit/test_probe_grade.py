"""Grading, aggregation and JSON output: pure, no network."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pgbatten import certfacts
from pgbatten.errors import FileProblem
from pgbatten.findings import Finding, Severity
from pgbatten.probe import cert_findings, grading
from pgbatten.probe.check import aggregate
from pgbatten.probe.grading import GRADE_RULES, grade
from pgbatten.probe.plaintext import PlaintextResult
from pgbatten.probe.result import exit_status, result_to_json
from pgbatten.probe.tls import HandshakeInfo, TlsScan, VersionAttempt, VersionStatus
from pgbatten.probe.wire import PlaintextVerdict, SslAnswer, SslResponse, Target

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
MODERN = ("TLSv1.2", "TLSv1.3")


def f(fid: str, severity: Severity = "high") -> Finding:
    return Finding(fid, severity, fid)


@pytest.mark.parametrize(
    ("findings", "kwargs", "expected"),
    [
        ([], {"plaintext_accepted": False, "protocols": MODERN, "verify_full_ok": True}, "A+"),
        ([], {"plaintext_accepted": False, "protocols": MODERN, "verify_full_ok": None}, "A"),
        ([], {"plaintext_accepted": None, "protocols": MODERN, "verify_full_ok": True}, "A"),
        ([f("x", "low")], {"plaintext_accepted": False, "protocols": MODERN, "verify_full_ok": True}, "A+"),
        ([f("x", "medium")], {"plaintext_accepted": False, "protocols": MODERN, "verify_full_ok": True}, "A"),
        ([f("plaintext-accepted", "critical")], {"plaintext_accepted": True, "protocols": MODERN}, "F"),
        ([f("tls-not-supported", "critical")], {"plaintext_accepted": False, "protocols": ()}, "F"),
        (
            [f("cert-expired")],
            {"plaintext_accepted": False, "protocols": MODERN, "verify_full_ok": True},
            "C",
        ),
        ([f("tls10-accepted")], {"plaintext_accepted": False, "protocols": ("TLSv1", *MODERN)}, "C"),
        ([f("tls11-accepted", "medium")], {"plaintext_accepted": False, "protocols": MODERN}, "C"),
        ([f("hostname-mismatch")], {"plaintext_accepted": False, "protocols": MODERN}, "B"),
        ([f("untrusted-issuer")], {"plaintext_accepted": False, "protocols": MODERN}, "B"),
        ([f("weak-key")], {"plaintext_accepted": False, "protocols": MODERN}, "B"),
        (
            [f("hostname-mismatch"), f("cert-expired")],
            {"plaintext_accepted": False, "protocols": MODERN},
            "C",
        ),
        (
            [f("plaintext-accepted", "critical"), f("cert-expired")],
            {"plaintext_accepted": True, "protocols": MODERN},
            "F",
        ),
        ([], {"reachable": False}, "-"),
        ([f("not-postgresql")], {}, "-"),
    ],
)
def test_grade_rules(findings: list[Finding], kwargs: dict[str, object], expected: str) -> None:
    assert grade(findings, **kwargs) == expected  # type: ignore[arg-type]


def test_rules_are_quotable() -> None:
    assert [g for g, _ in GRADE_RULES] == ["F", "C", "B", "A", "A+", "-"]
    assert grading.__doc__ is not None
    assert "A+" in grading.__doc__


# --------------------------------------------------------------------------------------------- aggregate


def make_cert(
    *,
    sans: list[x509.GeneralName],
    not_after: dt.datetime,
    rsa_bits: int | None = None,
    self_signed: bool = False,
) -> tuple[x509.Certificate, x509.Certificate]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=400))
        .not_valid_after(NOW + dt.timedelta(days=4000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.example.com")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if self_signed else ca_name)
        .public_key(key.public_key())
        .serial_number(0xABC)
        .not_valid_before(NOW - dt.timedelta(days=300))
        .not_valid_after(not_after)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    leaf = builder.sign(key if self_signed else ca_key, hashes.SHA256())
    return ca, leaf


def scan_with(
    leaf: x509.Certificate,
    protocols: tuple[str, ...] = ("TLSv1.3", "TLSv1.2"),
    extra: bytes = b"",
) -> TlsScan:
    attempts = tuple(
        VersionAttempt(v, VersionStatus.ACCEPTED if v in protocols else VersionStatus.REFUSED)
        for v in ("TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1")
    )
    best = HandshakeInfo(
        protocols[0], "TLS_AES_256_GCM_SHA384", 256, (leaf.public_bytes(Encoding.DER),), full_chain=True
    )
    return TlsScan(SslResponse(SslAnswer.ACCEPTED, extra), attempts, best, extra, connections=4)


REFUSED = PlaintextResult(PlaintextVerdict(False, "pg_hba refused"), True)
ACCEPTED = PlaintextResult(PlaintextVerdict(True, "md5", "md5-password"), True)
DNS: list[x509.GeneralName] = [x509.DNSName("db.example.com")]


def test_aggregate_a_plus() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    result = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    assert result.grade == "A+", result.findings
    assert result.protocols == ("TLSv1.2", "TLSv1.3")
    assert result.connections_used == 5
    doc = result_to_json(result)
    assert doc["target"] == "db.example.com:5432"
    assert doc["plaintext_accepted"] is False
    assert doc["certificate"]["not_after"] == "2025-12-18T00:00:00Z"
    assert doc["certificate"]["serial"] == "ABC"
    assert doc["verify_full"] == {
        "db.example.com": {"ok": True, "why": doc["verify_full"]["db.example.com"]["why"]}
    }
    assert doc["findings"] == []


def test_aggregate_without_ca_is_a() -> None:
    _, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    result = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=None, now=NOW)
    assert result.grade == "A"
    assert result.verify_full[0].ok is None


def test_aggregate_plaintext_accepted() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    result = aggregate(Target("db.example.com"), scan_with(leaf), ACCEPTED, ca=[ca], now=NOW)
    assert result.grade == "F"
    assert result.findings[0].id == "plaintext-accepted"
    assert exit_status([result]) == 1


def test_aggregate_certificate_findings() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW - dt.timedelta(days=1), rsa_bits=1024)
    result = aggregate(Target("other.example.com"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    found = {x.id for x in result.findings}
    assert {"cert-expired", "hostname-mismatch", "weak-key"} <= found
    assert result.certificate is not None
    assert result.certificate.key_type == "RSA"
    assert result.certificate.key_size == 1024
    assert result.grade == "C"


def test_weak_signature() -> None:
    # This OpenSSL will not sign with SHA-1, so describe such a certificate instead of building one.
    _, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    info = dataclasses.replace(certfacts.CertificateInfo.from_certificate(leaf), signature_hash="sha1")
    assert cert_findings.certificate_findings(info, [], ca_given=False, now=NOW) == []
    found = cert_findings.signature_findings([info])
    assert [x.id for x in found] == ["weak-signature"]
    assert found[0].cis is not None


def test_aggregate_expires_soon_and_self_signed_untrusted() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=10), self_signed=True)
    result = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    found = {x.id for x in result.findings}
    assert {"cert-expires-soon", "cert-self-signed", "untrusted-issuer"} <= found
    assert result.certificate is not None
    assert result.certificate.self_signed
    assert result.grade == "B"


def test_aggregate_self_signed_given_as_ca_verifies() -> None:
    _, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200), self_signed=True)
    result = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=[leaf], now=NOW)
    assert result.verify_full[0].ok is True
    assert "untrusted-issuer" not in {x.id for x in result.findings}


def test_aggregate_ip_target_and_cn_fallback() -> None:
    ca, leaf = make_cert(
        sans=[x509.IPAddress(ipaddress.ip_address("::1"))], not_after=NOW + dt.timedelta(days=90)
    )
    result = aggregate(Target("0:0::1"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    assert result.verify_full[0].name_ok
    ca, leaf = make_cert(sans=[], not_after=NOW + dt.timedelta(days=90))
    result = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    assert result.verify_full[0].ok is True


def test_aggregate_old_tls_and_bytes_after_s() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    scan = scan_with(leaf, protocols=("TLSv1.2", "TLSv1.1", "TLSv1"), extra=b"\x00evil")
    result = aggregate(Target("db.example.com"), scan, REFUSED, ca=[ca], now=NOW)
    found = {x.id for x in result.findings}
    assert {"tls10-accepted", "tls11-accepted", "bytes-after-ssl-response", "tls13-not-supported"} <= found
    assert result.grade == "C"
    assert result_to_json(result)["protocols"] == ["TLSv1", "TLSv1.1", "TLSv1.2"]


def test_aggregate_no_tls() -> None:
    scan = TlsScan(SslResponse(SslAnswer.REFUSED), connections=1)
    result = aggregate(Target("db"), scan, ACCEPTED, ca=None, now=NOW)
    assert not result.tls_supported
    assert result.grade == "F"
    assert {x.id for x in result.findings} == {"tls-not-supported", "plaintext-accepted"}


def test_aggregate_unreachable() -> None:
    result = aggregate(
        Target("db"), TlsScan(None, connections=1, unreachable="timed out"), None, ca=None, now=NOW
    )
    assert not result.reachable
    assert result.error == "timed out"
    assert exit_status([result]) == 3


def test_exit_status_ok_and_ordering() -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    good = aggregate(Target("db.example.com"), scan_with(leaf), REFUSED, ca=[ca], now=NOW)
    bad = aggregate(Target("db.example.com"), scan_with(leaf), ACCEPTED, ca=[ca], now=NOW)
    gone = aggregate(Target("x"), TlsScan(None, unreachable="refused"), None, ca=None, now=NOW)
    assert exit_status([good]) == 0
    assert exit_status([good, bad]) == 1
    assert exit_status([good, bad, gone]) == 3
    assert exit_status([]) == 0


def test_load_ca_file(tmp_path: Path) -> None:
    ca, leaf = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    bundle = tmp_path / "root.crt"
    bundle.write_bytes(ca.public_bytes(Encoding.PEM) + leaf.public_bytes(Encoding.PEM))
    assert certfacts.load_pem_file(bundle) == [ca, leaf]
    (tmp_path / "bad.crt").write_text("nonsense")
    with pytest.raises(FileProblem):
        certfacts.load_pem_file(tmp_path / "bad.crt")
    with pytest.raises(FileProblem):
        certfacts.load_pem_file(tmp_path / "missing.crt")


def _unknown_key_der() -> bytes:
    """A certificate whose public key uses an algorithm cryptography cannot load (as GOST or SM2 keys)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db.example.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=200))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("db.example.com")]), critical=False)
        .sign(key, None)
    )
    der = bytearray(cert.public_bytes(Encoding.DER))
    ed25519_oid = bytes.fromhex("06032b6570")  # signature algorithm (TBS), key algorithm, signature algorithm
    at = der.find(ed25519_oid, der.find(ed25519_oid) + 1)
    der[at : at + 5] = bytes.fromhex("06032b6563")  # 1.3.101.99: no such key type
    return bytes(der)


def test_aggregate_survives_a_certificate_with_an_unloadable_key() -> None:
    der = _unknown_key_der()
    best = HandshakeInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, (der,), full_chain=True)
    scan = TlsScan(
        SslResponse(SslAnswer.ACCEPTED), (VersionAttempt("TLSv1.3", VersionStatus.ACCEPTED),), best
    )
    ca, _ = make_cert(sans=DNS, not_after=NOW + dt.timedelta(days=200))
    result = aggregate(Target("db.example.com"), scan, REFUSED, ca=[ca], now=NOW)
    assert result.certificate is not None
    assert result.certificate.key_type.startswith("unsupported")
    assert result.certificate.key_size is None
    assert result.verify_full[0].name_ok  # the names are still judged
    assert result.verify_full[0].trusted is False  # and the chain does not verify
    assert "untrusted-issuer" in {f.id for f in result.findings}
    result_to_json(result)


def test_certificate_group_of_an_unloadable_key_is_unknown() -> None:
    from pgbatten.probe.enumeration_plan import certificate_group

    assert certificate_group([_unknown_key_der()]) is None


# --------------------------------------------------------------------------------------------- documentation

ROOT = Path(__file__).resolve().parents[2]


def test_readme_grade_and_finding_tables_are_the_rules() -> None:
    """The README shows the tables the code generates from its rules, word for word."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert grading.grade_table_markdown() in readme
    assert grading.finding_table_markdown() in readme
    assert [g for g, _ in GRADE_RULES][:-1] == [*[r.grade for r in grading.CAPS], "A", "A+"]
    assert grading.__doc__ is not None
    for g, text in GRADE_RULES:
        assert f"* {g} - {text}." in grading.__doc__


def test_every_finding_id_emitted_is_catalogued_with_its_severity() -> None:
    """Each ``Finding("id", "severity"`` in the outside check's sources is in FINDING_SEVERITIES, and back."""
    import re

    from pgbatten.probe.findings import FINDING_SEVERITIES

    sources = [*(ROOT / "src/pgbatten/probe").glob("*.py"), ROOT / "src/pgbatten/audit/collect.py"]
    emitted: dict[str, set[str]] = {}
    for path in sources:
        for fid, sev in re.findall(r'Finding\(\s*"([a-z0-9-]+)",\s*"(\w+)"', path.read_text()):
            emitted.setdefault(fid, set()).add(sev)
        # weak-dh picks its severity at run time
        for fid in re.findall(r'Finding\(\s*"([a-z0-9-]+)",\s*"high" if', path.read_text()):
            emitted.setdefault(fid, set()).update({"high", "medium"})
    assert set(emitted) == set(FINDING_SEVERITIES)
    for fid, sevs in emitted.items():
        assert sevs == set(FINDING_SEVERITIES[fid]), fid


def test_no_grade_d_or_e() -> None:
    assert grading.GRADES == ("A+", "A", "B", "C", "F")
