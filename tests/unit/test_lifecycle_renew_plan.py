"""renew's pure planner: what one cluster needs at a given ``now``, and the exact bytes of each file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.certfacts import fingerprint_sha256, host_names, issued_by
from pgbatten.lifecycle.renew import with_crl
from pgbatten.lifecycle.renew_plan import RenewRequest, ServerFiles, plan_server_renewal
from pgbatten.lifecycle.rotation import cross_certificate
from pgbatten.pki import CertificateAuthority, KeyType, key_type_of, load_private_key_pem
from pgbatten.pki.trust import Trust, pem

T0 = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
D = Path("/srv/pg/data")
CERT, KEY, CA, CRL = (
    D / "pgbatten-server.crt",
    D / "pgbatten-server.key",
    D / "pgbatten-ca.crt",
    D / "pgbatten-ca.crl",
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def files(
    ca: CertificateAuthority,
    *,
    days: int = 365,
    key_type: KeyType = KeyType.ECDSA_P256,
    served: str | None = None,
    **kw: object,
) -> ServerFiles:
    issued = ca.issue_server(["db.example.test", "127.0.0.1"], key_type=key_type, days=days)
    existing = {CERT: issued.cert_pem(), KEY: issued.key_pem(), CA: ca.cert_pem()}
    existing.update(kw.pop("existing", {}))  # type: ignore[call-overload]
    return ServerFiles(
        label="db",
        cert_path=CERT,
        key_path=KEY,
        ca_path=CA,
        crl_path=kw.pop("crl_path", None),  # type: ignore[arg-type]
        existing=existing,
        settings={"ssl_cert_file": str(CERT)},
        served_fingerprint=served if served is not None else fingerprint_sha256(issued.certificate),
        **kw,  # type: ignore[arg-type]
    )


def test_not_due_means_no_change(ca: CertificateAuthority) -> None:
    plan = plan_server_renewal(files(ca), Trust.of(ca), RenewRequest(now=T0))
    assert not plan.due and plan.changes == () and plan.skipped is None


def test_due_at_a_third_of_life_keeps_names_and_key_type(ca: CertificateAuthority) -> None:
    f = files(ca, key_type=KeyType.RSA_2048)
    plan = plan_server_renewal(f, Trust.of(ca), RenewRequest(now=T0 + 250 * DAY))
    assert plan.changed and plan.issued is not None
    assert [c.path for c in plan.changes] == [CERT, KEY]
    assert host_names(plan.issued.certificate) == ("db.example.test", "127.0.0.1")
    assert key_type_of(load_private_key_pem(plan.changes[1].new)) is KeyType.RSA_2048
    assert plan.changes[1].secret and plan.changes[1].mode == 0o600
    assert "less than a third of its life" in plan.reasons[0]
    assert plan.replaced_serial is not None


def test_before_and_revoked(ca: CertificateAuthority) -> None:
    f = files(ca)
    assert plan_server_renewal(f, Trust.of(ca), RenewRequest(now=T0, before=400 * DAY)).changed
    leaf = x509.load_pem_x509_certificate(f.existing[CERT])
    revoked = ServerFiles(**{**f.__dict__, "revoked_serials": frozenset({leaf.serial_number})})
    plan = plan_server_renewal(revoked, Trust.of(ca), RenewRequest(now=T0))
    assert plan.changed and "it is revoked" in plan.reasons


def test_foreign_certificates_and_tls_off_are_left_alone(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create(common_name="someone else")
    plan = plan_server_renewal(files(other), Trust.of(ca), RenewRequest(now=T0 + 400 * DAY))
    assert plan.skipped is not None and "not by this CA" in plan.skipped and not plan.changes
    off = ServerFiles(label="db", cert_path=CERT, key_path=KEY, ssl_on=False)
    assert "ssl is off" in (plan_server_renewal(off, Trust.of(ca), RenewRequest(now=T0)).skipped or "")
    theirs = ServerFiles(label="db", cert_path=D / "server.crt", key_path=D / "server.key")
    assert "not pgbatten's" in (plan_server_renewal(theirs, Trust.of(ca), RenewRequest(now=T0)).skipped or "")


def test_installed_but_not_served_needs_a_reload(ca: CertificateAuthority) -> None:
    plan = plan_server_renewal(files(ca, served="AA:BB"), Trust.of(ca), RenewRequest(now=T0))
    assert plan.reload and not plan.changes and plan.due


def test_rotation_reissues_from_the_new_ca_with_the_cross_certificate(ca: CertificateAuthority) -> None:
    new = CertificateAuthority.create(common_name="pgbatten CA G2")
    cross = cross_certificate(ca, new.certificate)
    trust = Trust.of(new, previous=ca.certificate, cross=cross)
    plan = plan_server_renewal(files(ca), trust, RenewRequest(now=T0))
    assert plan.issued is not None and issued_by(plan.issued.certificate, new.certificate)
    chain = x509.load_pem_x509_certificates(plan.changes[0].new)
    assert chain == [plan.issued.certificate, cross]
    ca_change = next(c for c in plan.changes if c.path == CA)
    assert ca_change.new == pem(new.certificate) + pem(ca.certificate)
    assert "its CA is being retired (CA rotation)" in plan.reasons
    # A leaf of the new CA served without the cross certificate gets it added, nothing re-issued.
    leaf = new.issue_server(["db.example.test"])
    f = ServerFiles(
        label="db",
        cert_path=CERT,
        key_path=KEY,
        ca_path=CA,
        existing={CERT: leaf.cert_pem(), KEY: leaf.key_pem(), CA: trust.roots_pem()},
    )
    plan = plan_server_renewal(f, trust, RenewRequest(now=T0))
    assert plan.issued is None and [c.path for c in plan.changes] == [CERT]
    assert plan.changes[0].new == leaf.cert_pem() + pem(cross)
    # After retirement the cross certificate goes again.
    after = ServerFiles(**{**f.__dict__, "existing": {**f.existing, CERT: leaf.cert_pem() + pem(cross)}})
    plan = plan_server_renewal(after, Trust.of(new), RenewRequest(now=T0))
    assert [c.path for c in plan.changes] == [CERT, CA]
    assert plan.changes[0].new == leaf.cert_pem() and plan.changes[1].new == new.cert_pem()


def test_the_crl_joins_the_plan_only_when_it_differs(ca: CertificateAuthority) -> None:
    f = files(ca, crl_path=CRL, existing={CRL: b"old crl"})
    plan = plan_server_renewal(f, Trust.of(ca), RenewRequest(now=T0))
    assert not plan.due
    updated = with_crl(plan, f, b"new crl")
    assert [c.path for c in updated.changes] == [CRL] and updated.reasons
    assert with_crl(plan, f, b"old crl") is plan


def test_a_leaf_that_outlives_its_ca_is_reissued_within_it() -> None:
    from cryptography.hazmat.primitives import hashes

    from pgbatten.pki import generate_key

    short = CertificateAuthority.create(days=100)
    key = generate_key()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "db.example.test")]))
        .issuer_name(short.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + 365 * DAY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("db.example.test")]), critical=False)
        .sign(short.key, hashes.SHA256())
    )
    from pgbatten.pki import private_key_pem

    f = ServerFiles(
        label="db",
        cert_path=CERT,
        key_path=KEY,
        existing={CERT: pem(leaf), KEY: private_key_pem(key)},
    )
    plan = plan_server_renewal(f, Trust.of(short), RenewRequest(now=T0))
    assert plan.issued is not None and any("outlives its CA" in r for r in plan.reasons)
    assert plan.issued.not_after <= short.not_after
