"""The pure planner of ``secure``: what it writes, what it leaves alone, and that it converges."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.errors import UsageError
from pgbatten.pgconf import hba as hba_mod
from pgbatten.pgconf import pg_ident
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CertificateAuthority, KeyType
from pgbatten.secure.hosts import MachineNames, certificate_hosts, probe_addresses, unproved_addresses
from pgbatten.secure.plan import (
    CA_NAME,
    CERT_NAME,
    KEY_NAME,
    ClusterState,
    SecurePlan,
    SecureRequest,
    plan_secure,
    render_diff,
)
from pgbatten.secure.settings import INTERMEDIATE_CIPHERS

DATA = Path(__file__).parent / "data"
PGDATA = Path("/srv/pg/data")
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
MACHINE = MachineNames(hostnames=("db1", "db1.example.test"), addresses=("192.0.2.10",), ipv6_loopback=True)
SEED_HBA = (
    "local   all   all                 peer\n"
    "host    all   all   0.0.0.0/0     md5\n"
    "hostssl all   all   0.0.0.0/0     scram-sha-256\n"
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(now=NOW - dt.timedelta(days=1))


def state(
    conf: str | None = None,
    hba: str = SEED_HBA,
    *,
    major: int = 15,
    extra_conf: tuple[tuple[str, str], ...] = (),
    existing: dict[Path, bytes] | None = None,
    listen: str = "localhost",
) -> ClusterState:
    main_text = conf if conf is not None else (DATA / "postgresql.conf.initdb15").read_text()
    files = [conf_mod.parse_conf(main_text, PGDATA / "postgresql.conf")]
    files += [conf_mod.parse_conf(text, PGDATA / name) for name, text in extra_conf]
    return ClusterState(
        major=major,
        cert_dir=PGDATA,
        conf_files=tuple(files),
        hba=hba_mod.parse_hba(hba, PGDATA / "pg_hba.conf"),
        ident=pg_ident.parse_ident("", PGDATA / "pg_ident.conf"),
        listen_addresses=listen,
        machine=MACHINE,
        existing=existing or {},
    )


def applied(before: ClusterState, plan: SecurePlan) -> ClusterState:
    """The state after writing the plan's files, for convergence checks."""
    contents = {c.path: c.new for c in plan.changes}

    def text(path: Path, old: str) -> str:
        return contents[path].decode() if path in contents else old

    files = tuple(
        conf_mod.parse_conf(text(f.path, conf_mod.render(f)), f.path) for f in before.conf_files if f.path
    )
    hba_path = PGDATA / "pg_hba.conf"
    existing = dict(before.existing)
    existing.update(
        {p: b for p, b in contents.items() if p.parent == PGDATA and p.suffix in (".crt", ".key")}
    )
    return ClusterState(
        major=before.major,
        cert_dir=before.cert_dir,
        conf_files=files,
        hba=hba_mod.parse_hba(text(hba_path, hba_mod.render(before.hba)), hba_path),
        ident=before.ident,
        listen_addresses=before.listen_addresses,
        machine=before.machine,
        existing=existing,
    )


def test_seed_plan_sets_tls_settings_and_rewrites_hba(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(hosts=("db.example.test",)), ca, now=NOW)
    by_name = {c.path.name: c for c in plan.changes}
    assert set(by_name) == {CERT_NAME, KEY_NAME, CA_NAME, "postgresql.conf", "pg_hba.conf"}
    assert by_name[KEY_NAME].mode == 0o600 and by_name[KEY_NAME].secret
    conf = conf_mod.parse_conf(by_name["postgresql.conf"].new.decode(), PGDATA / "postgresql.conf")
    settings = conf_mod.effective_settings([conf])
    assert settings["ssl"].value == "on"
    assert settings["ssl_min_protocol_version"].value == "TLSv1.2"
    assert settings["ssl_ciphers"].value == INTERMEDIATE_CIPHERS
    assert settings["ssl_ecdh_curve"].value == "prime256v1"
    assert settings["password_encryption"].value == "scram-sha-256"
    assert settings["ssl_key_file"].value == str(PGDATA / KEY_NAME)
    hba = hba_mod.parse_hba(by_name["pg_hba.conf"].new.decode())
    tcp = [r for r in hba.rules if r.is_tcp]
    # The guard comes first, so no TCP rule can accept plaintext whatever follows.
    assert tcp[0].conn_type is hba_mod.ConnType.HOSTNOSSL and tcp[0].is_reject
    assert all(r.conn_type is not hba_mod.ConnType.HOST for r in tcp)
    assert [r.conn_type for r in hba.rules if not r.is_tcp] == [hba_mod.ConnType.LOCAL]
    assert any(f.id == "hba-host-above-hostssl" for f in plan.lint_before)


def test_conf_edit_changes_only_ssl_lines(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(), ca, now=NOW)
    change = next(c for c in plan.changes if c.path.name == "postgresql.conf")
    old = change.old.decode().split("\n") if change.old else []
    new = change.new.decode().split("\n")
    assert len(old) == len(new)  # every setting was a commented default, uncommented in place
    touched = {o.split("=")[0].strip("# \t") for o, n in zip(old, new, strict=True) if o != n}
    assert touched == {
        "ssl",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_ca_file",
        "ssl_ciphers",
        "ssl_ecdh_curve",
        "ssl_min_protocol_version",
        "password_encryption",
    }


def test_second_plan_on_applied_state_changes_nothing(ca: CertificateAuthority) -> None:
    first_state = state()
    first = plan_secure(first_state, SecureRequest(hosts=("db.example.test",)), ca, now=NOW)
    second = plan_secure(applied(first_state, first), SecureRequest(hosts=("db.example.test",)), ca, now=NOW)
    assert second.changes == ()
    assert second.issued is None
    assert second.certificate == first.certificate


def test_certificate_is_replaced_when_a_host_is_added_or_it_nears_expiry(ca: CertificateAuthority) -> None:
    first_state = state()
    first = plan_secure(first_state, SecureRequest(), ca, now=NOW)
    after = applied(first_state, first)
    more_hosts = plan_secure(after, SecureRequest(hosts=("new.example.test",)), ca, now=NOW)
    assert more_hosts.issued is not None
    late = plan_secure(after, SecureRequest(), ca, now=NOW + dt.timedelta(days=340))
    assert late.issued is not None
    other_key = plan_secure(after, SecureRequest(key_type=KeyType.RSA_2048), ca, now=NOW)
    assert other_key.issued is not None


def test_setting_in_a_later_include_is_edited_where_postgresql_reads_it(ca: CertificateAuthority) -> None:
    main = "ssl = off\ninclude_dir = 'conf.d'\n"
    include = ("conf.d/10-ssl.conf", "ssl = off\nssl_min_protocol_version = 'TLSv1'\n")
    plan = plan_secure(state(main, extra_conf=(include,)), SecureRequest(), ca, now=NOW)
    changed = {c.path.name: c.new.decode() for c in plan.changes}
    assert "ssl_min_protocol_version = 'TLSv1.2'" in changed["10-ssl.conf"]
    assert "ssl = on" in changed["10-ssl.conf"]
    # The overridden line in postgresql.conf is left alone: PostgreSQL never uses it.
    assert changed["postgresql.conf"].startswith("ssl = off\n")
    assert any("overrides" in note for note in plan.notes)


def test_auto_conf_override_is_edited(ca: CertificateAuthority) -> None:
    auto = ("postgresql.auto.conf", "# Do not edit this file manually!\nssl_ciphers = 'ALL'\n")
    plan = plan_secure(state("ssl = on\n", extra_conf=(auto,)), SecureRequest(), ca, now=NOW)
    changed = {c.path.name: c.new.decode() for c in plan.changes}
    assert f"ssl_ciphers = '{INTERMEDIATE_CIPHERS}'" in changed["postgresql.auto.conf"]


def test_postgresql_18_uses_ssl_groups(ca: CertificateAuthority) -> None:
    plan = plan_secure(state("", major=18), SecureRequest(tls_min="1.3"), ca, now=NOW)
    assert plan.settings["ssl_groups"] == "X25519:prime256v1"
    assert "ssl_ecdh_curve" not in plan.settings
    assert plan.settings["ssl_min_protocol_version"] == "TLSv1.3"


def test_client_auth_cert_with_map(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(client_auth="cert", cert_map="certs"), ca, now=NOW)
    changed = {c.path.name: c.new.decode() for c in plan.changes}
    hba = hba_mod.parse_hba(changed["pg_hba.conf"])
    ssl_rules = [r for r in hba.rules if r.conn_type is hba_mod.ConnType.HOSTSSL]
    assert ssl_rules and all(r.method == "cert" and r.option("map") == "certs" for r in ssl_rules)
    ident = pg_ident.parse_ident(changed["pg_ident.conf"])
    assert [(m.map_name, m.system_user, m.pg_user) for m in ident.mappings] == [("certs", "/^(.*)$", "\\1")]


def test_bad_requests_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="invalid host name"):
        SecureRequest(hosts=("not a host",))
    with pytest.raises(UsageError, match="--cert-map"):
        SecureRequest(cert_map="m")


def test_diff_never_shows_the_private_key(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(), ca, now=NOW)
    text = render_diff(plan)
    assert "PRIVATE KEY" not in text
    assert f"new file {PGDATA / KEY_NAME} (private key, mode 0600; content not shown)" in text
    assert "+ssl = on" in text
    assert "-host    all   all   0.0.0.0/0     md5" in text


def test_certificate_hosts_cover_names_and_listen_addresses() -> None:
    hosts = certificate_hosts("localhost,192.0.2.20", ("db.example.test", "DB.example.test"), MACHINE)
    assert hosts[0] == "db.example.test"
    assert hosts.count("db.example.test") == 1
    assert {"db1", "db1.example.test", "localhost", "127.0.0.1", "::1", "192.0.2.20"} <= set(hosts)
    assert "192.0.2.10" not in hosts  # only listed when the server listens on every interface
    assert "192.0.2.10" in certificate_hosts("*", (), MACHINE)
    with pytest.raises(UsageError):
        certificate_hosts("*", ("bad_host!",), MACHINE)


def test_probe_addresses_follow_what_postgresql_binds() -> None:
    # Debian's /etc/hosts often maps localhost to 127.0.0.1 only: then PostgreSQL never binds ::1.
    v4_only = MachineNames((), (), ipv6_loopback=True, resolved={"localhost": ("127.0.0.1",)})
    assert probe_addresses("localhost", v4_only) == ("127.0.0.1",)
    both = MachineNames((), (), ipv6_loopback=True, resolved={"localhost": ("::1", "127.0.0.1")})
    assert probe_addresses("localhost", both) == ("::1", "127.0.0.1")
    assert probe_addresses("127.0.0.1", MACHINE) == ("127.0.0.1",)
    # A wildcard listens on every interface: every address of the machine is proved, not loopback alone.
    assert probe_addresses("*", MACHINE) == ("127.0.0.1", "::1", "192.0.2.10")
    no_v6 = MachineNames(hostnames=(), addresses=(), ipv6_loopback=False)
    assert probe_addresses("*", no_v6) == ("127.0.0.1",)
    assert probe_addresses("0.0.0.0", MACHINE) == ("127.0.0.1", "192.0.2.10")  # noqa: S104 - a setting
    assert probe_addresses("::", MACHINE) == ("::1",)
    dual = MachineNames((), ("192.0.2.10", "2001:db8::10"), link_local=("fe80::1",))
    assert probe_addresses("::", dual) == ("::1", "2001:db8::10")
    assert unproved_addresses("*", dual) == ("fe80::1",)
    assert unproved_addresses("0.0.0.0", dual) == ()  # noqa: S104 - a setting, no bind
    assert probe_addresses("192.0.2.20", MACHINE) == ("192.0.2.20",)
    assert probe_addresses("db1", MachineNames((), (), resolved={"db1": ("192.0.2.10",)})) == ("192.0.2.10",)
    assert probe_addresses("unknown-name", MACHINE) == ()
    assert probe_addresses("", MACHINE) == ()


def test_served_certificate_has_ip_and_dns_sans(ca: CertificateAuthority) -> None:
    plan = plan_secure(state(), SecureRequest(hosts=("db.example.test",)), ca, now=NOW)
    san = plan.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "db.example.test" in san.get_values_for_type(x509.DNSName)
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}


def test_reused_certificate_keeps_the_names_of_an_earlier_host(ca: CertificateAuthority) -> None:
    first_state = state()
    first = plan_secure(first_state, SecureRequest(hosts=("db.example.test",)), ca, now=NOW)
    second = plan_secure(applied(first_state, first), SecureRequest(), ca, now=NOW)
    assert second.issued is None
    assert second.hosts[0] == "db.example.test"
    assert second.hosts == first.hosts
