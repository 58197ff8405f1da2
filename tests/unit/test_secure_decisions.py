"""The pure decisions of ``secure`` that keep clients working: the request, the CA in use, who needs a
certificate, when the server asks for one, and the SANs old libpq compares."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.certfacts import dns_names, fingerprint_sha256, ip_addresses
from pgbatten.errors import UsageError
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CertificateAuthority, InventoryEntry
from pgbatten.secure.lockout import LoginRole, certificate_needs, parse_user_file, user_matches
from pgbatten.secure.plan import CA_NAME, CERT_NAME, CRL_NAME, KEY_NAME, SecureRequest, plan_secure
from tests.unit.test_secure_plan import NOW, PGDATA, applied, state


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW - dt.timedelta(days=1))


def test_request_is_validated_once_when_made() -> None:
    with pytest.raises(UsageError, match="--days"):
        SecureRequest(days=0)
    with pytest.raises(UsageError, match="--client-auth"):
        SecureRequest(client_auth="maybe")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="one string"):
        SecureRequest(hosts="db.example.test")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--tls-min"):
        SecureRequest(tls_min="1.1")  # type: ignore[arg-type]


def test_server_asks_for_client_certificates_only_when_they_are_verified(ca: CertificateAuthority) -> None:
    # libpq sends ~/.postgresql/postgresql.crt to any server that asks; a server that asks without needing
    # one refuses a certificate from another CA, breaking password logins.
    none = plan_secure(state(), SecureRequest(), ca, now=NOW)
    assert none.settings["ssl_ca_file"] == ""
    assert not none.verifies_clients
    cert = plan_secure(state(), SecureRequest(client_auth="cert"), ca, now=NOW)
    assert cert.settings["ssl_ca_file"] == str(PGDATA / CA_NAME)
    assert cert.verifies_clients
    # A rule that already checks certificates keeps the CA file, even without --client-auth.
    hba = "local all all peer\nhostssl all all 0.0.0.0/0 scram-sha-256 clientcert=verify-full\n"
    kept = plan_secure(state(hba=hba), SecureRequest(), ca, now=NOW)
    assert kept.settings["ssl_ca_file"] == str(PGDATA / CA_NAME)
    # An ssl_ca_file set by hand is cleared, and the plan says why.
    foreign = plan_secure(state("ssl_ca_file = '/etc/ssl/other.crt'\n"), SecureRequest(), ca, now=NOW)
    assert foreign.settings["ssl_ca_file"] == ""
    assert any("ssl_ca_file was '/etc/ssl/other.crt'" in n for n in foreign.notes)


def test_the_crl_is_installed_only_where_client_certificates_are_verified(ca: CertificateAuthority) -> None:
    crl = b"-----BEGIN X509 CRL-----\n...\n"
    none = plan_secure(state(), SecureRequest(), ca, crl=crl, now=NOW)
    assert "ssl_crl_file" not in none.settings
    assert all(c.path.name != CRL_NAME for c in none.changes)
    cert = plan_secure(state(), SecureRequest(client_auth="cert"), ca, crl=crl, now=NOW)
    assert cert.settings["ssl_crl_file"] == str(PGDATA / CRL_NAME)
    assert any(c.path.name == CRL_NAME and c.new == crl for c in cert.changes)


def test_another_cas_files_are_a_conflict_with_both_fingerprints(ca: CertificateAuthority) -> None:
    first = plan_secure(state(), SecureRequest(), ca, now=NOW)
    after = applied(state(), first)
    # pgbatten-ca.crt is not in `applied`'s certificate files: add it as the first run wrote it.
    existing = {**after.existing, PGDATA / CA_NAME: ca.cert_pem()}
    installed = dataclasses.replace(after, existing=existing)
    assert plan_secure(installed, SecureRequest(), ca, now=NOW).ca_conflict is None

    other = CertificateAuthority.create(now=NOW - dt.timedelta(days=1))
    swap = plan_secure(installed, SecureRequest(), other, now=NOW)
    assert swap.ca_conflict is not None
    text = swap.ca_conflict.describe()
    assert fingerprint_sha256(ca.certificate) in text and fingerprint_sha256(other.certificate) in text
    assert set(swap.ca_conflict.files) == {CA_NAME, CERT_NAME}
    assert swap.issued is not None  # what --replace-ca would install
    replaced = plan_secure(installed, SecureRequest(replace_ca=True), other, now=NOW)
    assert any("--replace-ca" in n for n in replaced.notes)


def test_a_revoked_server_certificate_is_replaced(ca: CertificateAuthority) -> None:
    first = plan_secure(state(), SecureRequest(), ca, now=NOW)
    after = applied(state(), first)
    serial = first.certificate.serial_number
    assert plan_secure(after, SecureRequest(), ca, now=NOW).issued is None
    again = plan_secure(after, SecureRequest(), ca, revoked={serial}, now=NOW)
    assert again.issued is not None and again.issued.serial != serial
    assert any("revoked" in n for n in again.notes)


def test_legacy_ip_sans_spell_each_address_as_a_dns_name_too(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(legacy_ip_sans=True), ca, now=NOW)
    ips = {str(ip) for ip in ip_addresses(plan.certificate)}
    assert {"127.0.0.1", "::1"} <= ips
    assert ips <= set(dns_names(plan.certificate))
    assert len(plan.hosts) == len(set(plan.hosts))
    after = applied(state(), plan)
    assert plan_secure(after, SecureRequest(legacy_ip_sans=True), ca, now=NOW).issued is None
    # Dropping the option takes effect: the next certificate has IP SANs only.
    plain = plan_secure(after, SecureRequest(), ca, now=NOW)
    assert plain.issued is not None
    assert not any(_is_ip(n) for n in dns_names(plain.certificate))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_the_rules_that_will_demand_a_certificate_are_known(ca: CertificateAuthority) -> None:
    hba = (
        "local all all peer\n"
        "host all app 0.0.0.0/0 scram-sha-256\n"
        "hostssl all +staff 0.0.0.0/0 md5\n"
        "host all robot 0.0.0.0/0 trust\n"
    )
    plan = plan_secure(state(hba=hba), SecureRequest(client_auth="cert"), ca, now=NOW)
    assert [r.users for r in plan.cert_rules] == [("app",), ("+staff",)]
    none = plan_secure(state(hba=hba), SecureRequest(), ca, now=NOW)
    assert none.cert_rules == ()


def _entry(name: str, *, days: int = 30, revoked: bool = False, serial: int = 1) -> InventoryEntry:
    return InventoryEntry(
        kind="client",
        name=name,
        serial=serial,
        not_after=NOW + dt.timedelta(days=days),
        fingerprint_sha256="AA",
        revoked_at=NOW if revoked else None,
    )


def test_certificate_needs_name_every_role_let_in_and_its_valid_certificate() -> None:
    hba = hba_mod.parse_hba(
        "hostssl all app 0.0.0.0/0 md5\n"
        'hostssl all +staff,"Mixed" 0.0.0.0/0 md5\n'
        "hostssl all @admins.txt 0.0.0.0/0 md5\n"
        "hostssl all /^svc_ 0.0.0.0/0 md5\n"
    )
    roles = [
        LoginRole("app"),
        LoginRole("alice", frozenset({"staff"})),
        LoginRole("Mixed"),
        LoginRole("mixed"),
        LoginRole("root_admin"),
        LoginRole("svc_backup"),
        LoginRole("nobody"),
    ]
    inventory = [
        _entry("app"),
        _entry("alice", revoked=True, serial=2),
        _entry("svc_backup", days=-1, serial=3),
    ]
    needs = certificate_needs(hba.rules, roles, inventory, files={"admins.txt": ("root_admin",)}, now=NOW)
    by_role = {n.role: n.covered for n in needs}
    assert by_role == {
        "app": True,
        "alice": False,  # revoked
        "Mixed": False,
        "root_admin": False,
        "svc_backup": False,  # expired
    }
    assert "nobody" not in by_role and "mixed" not in by_role
    everyone = hba_mod.parse_hba("hostssl all all 0.0.0.0/0 md5\n")
    assert {n.role for n in certificate_needs(everyone.rules, roles, [], now=NOW, ignore=["app"])} == {
        r.name for r in roles if r.name != "app"
    }


def test_user_tokens_match_as_postgresql_matches_them() -> None:
    role = LoginRole("all")
    assert user_matches('"all"', role, {})
    assert not user_matches('"all"', LoginRole("bob"), {})
    assert user_matches("all", LoginRole("bob"), {})
    assert not user_matches("+staff", LoginRole("bob"), {})
    assert parse_user_file("alice, bob\n# carol\n  dave # and\n") == ("alice", "bob", "dave")


def test_settings_are_compared_the_way_postgresql_reads_them() -> None:
    from pgbatten.pgconf.guc_values import parse_bool
    from pgbatten.secure.validate import same_setting

    for word in ("on", "ON", "true", "yes", "1", "t", "ye", "tru"):
        assert parse_bool(word) is True, word
    for word in ("off", "of", "false", "no", "0", "f", "n"):
        assert parse_bool(word) is False, word
    assert parse_bool("o") is None and parse_bool("maybe") is None
    assert same_setting("ssl", "TRUE", "on")
    assert same_setting("ssl_min_protocol_version", "tlsv1.2", "TLSv1.2")
    assert not same_setting("ssl_cert_file", "/A", "/a")


def test_plan_for_a_conf_that_spells_ssl_its_own_way(ca: CertificateAuthority) -> None:
    conf = "ssl = true\n"
    plan = plan_secure(state(conf), SecureRequest(), ca, now=NOW)
    change = next(c for c in plan.changes if c.path.name == "postgresql.conf")
    parsed = conf_mod.effective_settings([conf_mod.parse_conf(change.new.decode(), PGDATA / "p.conf")])
    from pgbatten.secure.validate import same_setting

    assert same_setting("ssl", parsed["ssl"].value, "on")


def test_key_file_is_private_and_never_shown(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(), ca, now=NOW)
    key = next(c for c in plan.changes if c.path == PGDATA / KEY_NAME)
    assert key.mode == 0o600 and key.secret
    assert isinstance(plan.certificate, x509.Certificate)
    assert Path(plan.settings["ssl_key_file"]) == PGDATA / KEY_NAME


def test_a_certificate_of_someone_elses_being_replaced_is_said(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create(common_name="Corp Root").issue_server(["db.example.test"])
    served = (Path("/etc/ssl/db.crt"), other.cert_pem())
    plan = plan_secure(dataclasses.replace(state(), served=served), SecureRequest(), ca, now=NOW)
    [note] = [n for n in plan.notes if "/etc/ssl/db.crt" in n]
    assert "issued by CN=Corp Root" in note and fingerprint_sha256(ca.certificate) in note
    assert plan.ca_conflict is None  # informed, not refused: pgbatten did not install it
