"""The pure half of the server-side audit, on hand-built rows: no server needed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.audit import HbaRow, KeyFileStat, RoleRow, ServerFacts, analyze, hba_rules_from_rows
from pgbatten.audit.analyze import key_file_findings, role_findings, settings_findings
from pgbatten.audit.ciphers import CipherSuite
from pgbatten.audit.hba_findings import hba_findings
from pgbatten.findings import Finding

V4_ALL = ("0.0.0.0", "0.0.0.0")  # noqa: S104 - a pg_hba address, nothing binds
LOOP4 = ("127.0.0.1", "255.255.255.255")
POSTGRES = RoleRow("postgres", superuser=True, can_login=True)
APP = RoleRow("app", superuser=False, can_login=True)


def rule(
    line: int,
    kind: str,
    method: str,
    addr: tuple[str, str] | None = V4_ALL,
    *,
    db: str = "all",
    user: str = "all",
    options: tuple[str, ...] = (),
) -> HbaRow:
    address, netmask = addr if addr is not None else (None, None)
    return HbaRow(
        line_number=line,
        type=kind,
        database=(db,),
        user_name=(user,),
        address=address,
        netmask=netmask,
        auth_method=method,
        options=options,
    )


def ids(findings: Sequence[Finding]) -> set[str]:
    return {f.id for f in findings}


def by_id(findings: Sequence[Finding], fid: str) -> list[Finding]:
    return [f for f in findings if f.id == fid]


SECURE_SETTINGS = {
    "ssl": "on",
    "ssl_min_protocol_version": "TLSv1.2",
    "ssl_max_protocol_version": "",
    "ssl_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305",
    "ssl_cert_file": "/d/server.crt",
    "ssl_key_file": "/d/server.key",
    "ssl_ca_file": "/d/ca.crt",
    "ssl_crl_file": "",
    "ssl_crl_dir": "",
    "ssl_passphrase_command": "",
    "password_encryption": "scram-sha-256",
    "listen_addresses": "localhost",
    "data_directory": "/var/lib/postgresql/16/main",
}


# --- the seed case ------------------------------------------------------------------------------


def test_seed_case_plaintext_accepted_and_hostssl_shadowed() -> None:
    rows = (
        rule(1, "local", "peer", None),
        rule(2, "host", "md5"),
        rule(3, "hostssl", "scram-sha-256"),
    )
    found = hba_findings(rows, {"data_directory": "/srv/pg"}, (POSTGRES,))
    assert {"server-hba-plaintext-accepted", "server-hba-host-above-hostssl", "server-hba-md5"} <= ids(found)
    shadowed = by_id(found, "server-hba-host-above-hostssl")
    assert len(shadowed) == 1
    assert shadowed[0].severity == "high"
    assert shadowed[0].title.startswith("pg_hba.conf line 3:")
    assert "pg_hba.conf line 2 (host all all 0.0.0.0 0.0.0.0 md5)" in shadowed[0].detail
    plain = by_id(found, "server-hba-plaintext-accepted")[0]
    assert plain.fix == "pgbatten secure --pgdata /srv/pg"
    # The dead hostssl rule lets nobody in, so it is not judged for its own weaknesses.
    assert not [f for f in found if f.title.startswith("pg_hba.conf line 3:") and f is not shadowed[0]]


def test_seed_cluster_facts_give_the_expected_ids() -> None:
    facts = ServerFacts(
        settings={"ssl": "off", "password_encryption": "md5", "data_directory": "/srv/pg"},
        hba_rows=(
            rule(1, "local", "peer", None),
            rule(2, "host", "md5", LOOP4),
            rule(3, "host", "md5", ("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            rule(4, "hostssl", "scram-sha-256"),
            rule(5, "host", "md5", LOOP4, db="replication"),
        ),
        roles=(POSTGRES,),
        md5_roles=("postgres",),
    )
    found = analyze(facts)
    assert {
        "server-ssl-off",
        "server-password-encryption-md5",
        "server-hba-plaintext-accepted",
        "server-hba-md5",
        "server-md5-passwords",
        "server-hba-superuser-remote",
    } <= ids(found)
    assert found[0].id == "server-ssl-off"
    assert found[0].severity == "critical"
    # Findings come worst first.
    order = ["critical", "high", "medium", "low", "info"]
    assert [order.index(f.severity) for f in found] == sorted(order.index(f.severity) for f in found)


# --- settings -----------------------------------------------------------------------------------


def test_secure_settings_give_nothing() -> None:
    assert settings_findings(SECURE_SETTINGS) == []


@pytest.mark.parametrize(("minimum", "severity"), [("TLSv1", "high"), ("", "high"), ("TLSv1.1", "medium")])
def test_old_tls_minimum(minimum: str, severity: str) -> None:
    found = settings_findings({**SECURE_SETTINGS, "ssl_min_protocol_version": minimum})
    (f,) = by_id(found, "server-tls-min-version")
    assert f.severity == severity
    assert f.fix == "pgbatten secure --pgdata /var/lib/postgresql/16/main --tls-min 1.2"


def test_tls_settings_not_judged_while_ssl_is_off() -> None:
    found = settings_findings({**SECURE_SETTINGS, "ssl": "off", "ssl_min_protocol_version": "TLSv1"})
    assert ids(found) == {"server-ssl-off"}


def test_postgres_default_ciphers_are_weak() -> None:
    found = settings_findings({**SECURE_SETTINGS, "ssl_ciphers": "HIGH:MEDIUM:+3DES:!aNULL"})
    (f,) = by_id(found, "server-ssl-ciphers-weak")
    assert f.severity in ("medium", "high")
    assert "without forward secrecy" in f.detail
    assert "AES256-GCM-SHA384" in f.detail  # plain RSA key exchange
    assert f.fix is not None and f.fix.startswith("pgbatten secure --pgdata")


def test_cipher_judgement_uses_the_injected_expander() -> None:
    def expand(text: str) -> list[CipherSuite]:
        assert text == "MYSTRING"
        return [
            CipherSuite("ECDHE-RSA-AES128-GCM-SHA256", "kx-ecdhe", "auth-rsa", True, "aes-128-gcm"),
            CipherSuite("NULL-SHA", "kx-rsa", "auth-rsa", False, None),
        ]

    found = settings_findings({**SECURE_SETTINGS, "ssl_ciphers": "MYSTRING"}, expand=expand)
    (f,) = by_id(found, "server-ssl-ciphers-weak")
    assert f.severity == "high"
    assert "NULL-SHA" in f.detail
    assert "ECDHE-RSA-AES128-GCM-SHA256" not in f.detail


def test_unparseable_cipher_string_is_info() -> None:
    found = settings_findings({**SECURE_SETTINGS, "ssl_ciphers": "NOT-A-CIPHER"})
    assert [(f.id, f.severity) for f in found] == [("server-ssl-ciphers-unjudged", "info")]


def test_missing_cert_and_key() -> None:
    found = settings_findings({**SECURE_SETTINGS, "ssl_cert_file": ""}, files_exist={"ssl_key_file": False})
    assert {"server-ssl-cert-file-missing", "server-ssl-key-file-missing"} <= ids(found)


def test_clientcert_without_ca_file_or_crl() -> None:
    settings = {**SECURE_SETTINGS, "ssl_ca_file": ""}
    assert not ids(settings_findings(settings)) & {"server-ssl-ca-file-missing", "server-ssl-crl-missing"}
    found = settings_findings(settings, clientcert_used=True)
    assert {"server-ssl-ca-file-missing", "server-ssl-crl-missing"} <= ids(found)
    with_crl = settings_findings({**SECURE_SETTINGS, "ssl_crl_file": "root.crl"}, clientcert_used=True)
    assert not ids(with_crl) & {"server-ssl-ca-file-missing", "server-ssl-crl-missing"}


def test_passphrase_command_listen_all_and_tls13_disabled() -> None:
    found = settings_findings(
        {
            **SECURE_SETTINGS,
            "ssl_passphrase_command": "cat /secret",
            "ssl_passphrase_command_supports_reload": "off",
            "listen_addresses": "*",
            "ssl_max_protocol_version": "TLSv1.2",
        }
    )
    assert by_id(found, "server-ssl-passphrase-command")[0].severity == "low"
    assert by_id(found, "server-listen-all-interfaces")
    assert by_id(found, "server-tls13-disabled")


def test_fix_without_data_directory_uses_a_placeholder() -> None:
    (f,) = settings_findings({"ssl": "off"})
    assert f.fix == "pgbatten secure --pgdata <data_directory>"


# --- pg_hba -------------------------------------------------------------------------------------


def test_secured_hba_gives_no_high_finding() -> None:
    rows = (
        rule(1, "local", "peer", None),
        rule(3, "hostnossl", "reject", db="all,replication"),
        rule(4, "hostnossl", "reject", ("::", "::"), db="all,replication"),
        rule(5, "hostssl", "scram-sha-256", LOOP4),
        rule(6, "hostssl", "scram-sha-256", ("10.0.0.0", "255.0.0.0"), user="app"),
    )
    found = hba_findings(rows, SECURE_SETTINGS, (POSTGRES, APP))
    assert not [f for f in found if f.severity in ("critical", "high")]


@pytest.mark.parametrize(
    ("method", "fid"),
    [
        ("trust", "server-hba-trust-tcp"),
        ("password", "server-hba-password-cleartext"),
        ("ident", "server-hba-ident-tcp"),
    ],
)
def test_weak_methods_over_tcp(method: str, fid: str) -> None:
    found = hba_findings((rule(1, "hostssl", method, ("10.1.0.0", "255.255.0.0"), user="app"),), {})
    (f,) = by_id(found, fid)
    assert f.severity == "high"
    assert "pg_hba.conf line 1" in (f.fix or "")


def test_rule_loaded_with_a_warning_still_counts() -> None:
    row = HbaRow(
        line_number=5,
        type="hostssl",
        database=("all",),
        user_name=("all",),
        address="0.0.0.0",  # noqa: S104 - a pg_hba address
        netmask="0.0.0.0",  # noqa: S104
        auth_method="scram-sha-256",
        error="hostssl record cannot match because SSL is disabled",
    )
    found = hba_findings((row,), {}, (POSTGRES,))
    assert by_id(found, "server-hba-rule-cannot-match")[0].severity == "low"
    assert "server-hba-error" not in ids(found)
    assert by_id(found, "server-hba-superuser-remote")


def test_error_rows_are_reported_and_not_linted() -> None:
    rows = (HbaRow(line_number=7, type=None, error='invalid authentication method "md6"'),)
    found = hba_findings(rows, {})
    assert [(f.id, f.severity) for f in found] == [("server-hba-error", "high")]
    assert "md6" in found[0].detail


def test_superuser_named_or_all_over_tcp() -> None:
    roles = (POSTGRES, RoleRow("dba", True, True), RoleRow("nologin_su", True, False), APP)
    named = hba_findings((rule(1, "hostssl", "scram-sha-256", user="dba"),), {}, roles)
    assert "dba" in by_id(named, "server-hba-superuser-remote")[0].detail
    everyone = hba_findings((rule(1, "hostssl", "scram-sha-256"),), {}, roles)
    (f,) = by_id(everyone, "server-hba-superuser-remote")
    assert "dba, postgres" in f.detail
    assert "nologin_su" not in f.detail
    assert not by_id(
        hba_findings((rule(1, "hostssl", "scram-sha-256", user="app"),), {}, roles),
        "server-hba-superuser-remote",
    )


def test_loopback_and_reject_rules_are_not_remote() -> None:
    rows = (
        rule(1, "hostssl", "scram-sha-256", LOOP4),
        rule(2, "hostssl", "scram-sha-256", ("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        rule(3, "hostssl", "reject"),
        rule(4, "hostssl", "scram-sha-256", ("samehost", "")),
    )
    found = hba_findings(rows, {}, (POSTGRES,))
    assert not ids(found) & {"server-hba-superuser-remote", "server-hba-all-databases-all-users"}


def test_superusers_unknown_still_flags_all_users() -> None:
    found = hba_findings((rule(1, "hostssl", "scram-sha-256"),), {}, None)
    assert "every superuser" in by_id(found, "server-hba-superuser-remote")[0].detail


def test_rows_become_rules_in_evaluation_order() -> None:
    rows = (
        HbaRow(
            line_number=10,
            type="host",
            database=("db1",),
            user_name=("u",),
            address="10.0.0.0",
            netmask="255.255.255.0",
            auth_method="scram-sha-256",
            file_name="/etc/pg/a.conf",
        ),
        HbaRow(
            line_number=2,
            type="hostssl",
            database=("db1",),
            user_name=("u",),
            address="10.0.0.5",
            netmask="255.255.255.255",
            auth_method="cert",
            options=("clientcert=verify-full", "map=m"),
            file_name="/etc/pg/b.conf",
        ),
    )
    pairs = hba_rules_from_rows(rows)
    assert [r.lineno for r, _ in pairs] == [1, 2]
    assert pairs[0][0].address == "10.0.0.0/24"
    assert pairs[1][0].option("map") == "m"
    found = hba_findings(rows, {})
    shadow = by_id(found, "server-hba-host-above-hostssl")[0]
    assert shadow.title.startswith("b.conf line 2:")
    assert "a.conf line 10" in shadow.detail


# Hypothesis: whatever the rules, findings are well-formed, and a host rule that accepts is always reported
# unless an earlier rule already catches everything it could match.
_methods = st.sampled_from(["trust", "reject", "md5", "scram-sha-256", "password", "cert", "ident", "peer"])
_kinds = st.sampled_from(["local", "host", "hostssl", "hostnossl"])
_addrs = st.sampled_from(
    [V4_ALL, LOOP4, ("10.0.0.0", "255.0.0.0"), ("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]
)
_users = st.sampled_from(["all", "postgres", "app"])


@st.composite
def _rows(draw: st.DrawFn) -> tuple[HbaRow, ...]:
    n = draw(st.integers(min_value=0, max_value=8))
    out = []
    for i in range(n):
        kind = draw(_kinds)
        method = draw(_methods)
        if kind == "local" and method == "cert":
            method = "peer"
        if kind != "local" and method == "peer":
            method = "md5"
        if kind != "hostssl" and method == "cert":
            method = "scram-sha-256"
        out.append(rule(i + 1, kind, method, None if kind == "local" else draw(_addrs), user=draw(_users)))
    return tuple(out)


@given(_rows())
def test_hba_findings_are_well_formed(rows: tuple[HbaRow, ...]) -> None:
    found = hba_findings(rows, SECURE_SETTINGS, (POSTGRES, APP))
    for f in found:
        assert f.id.startswith("server-")
        assert f.severity in ("critical", "high", "medium", "low", "info")
        assert f.title and f.detail and f.fix
    plaintext_lines = {f.title.split(":")[0] for f in by_id(found, "server-hba-plaintext-accepted")}
    pairs = hba_rules_from_rows(rows)
    from pgbatten.pgconf import shadowing_rule

    rules = [r for r, _ in pairs]
    for r, row in pairs:
        expected = (
            r.conn_type.value in ("host", "hostnossl")
            and not r.is_reject
            and shadowing_rule(rules, r) is None
        )
        assert (row.where in plaintext_lines) == expected


# --- roles, key file, privileges ----------------------------------------------------------------


def test_md5_roles() -> None:
    assert role_findings(None) == []
    assert role_findings(()) == []
    (f,) = role_findings(("alice", "bob"))
    assert f.id == "server-md5-passwords"
    assert "alice, bob" in f.detail


def _key(mode: int, uid: int = 999, server_uid: int = 999) -> KeyFileStat:
    return KeyFileStat("/d/server.key", 0o100000 | mode, uid, "x", server_uid, "postgres")


@pytest.mark.parametrize(
    ("mode", "uid", "expected"),
    [
        (0o600, 999, None),
        (0o400, 999, None),
        (0o640, 0, None),
        (0o640, 999, "medium"),
        (0o644, 999, "high"),
        (0o604, 0, "high"),
        (0o600, 1234, "high"),
        (0o660, 0, "medium"),
    ],
)
def test_key_file_permissions(mode: int, uid: int, expected: str | None) -> None:
    found = key_file_findings(_key(mode, uid), None, {"ssl": "on"})
    if expected is None:
        assert found == []
    else:
        (f,) = found
        assert (f.id, f.severity) == ("server-key-file-permissions", expected)
        assert f.fix == "chown postgres /d/server.key && chmod 0600 /d/server.key"


def test_key_file_not_checked_is_info_and_silent_without_ssl() -> None:
    (f,) = key_file_findings(None, "remote server", {"ssl": "on"})
    assert (f.id, f.severity, f.detail) == ("server-key-file-not-checked", "info", "remote server")
    assert key_file_findings(None, "remote", {"ssl": "off"}) == []


def test_degraded_facts_say_what_was_not_checked() -> None:
    facts = ServerFacts(
        settings={k: v for k, v in SECURE_SETTINGS.items() if k != "data_directory"},
        roles=(POSTGRES,),
        unreadable=("pg_hba_file_rules, so pg_hba.conf was not checked", "pg_authid (superuser only)"),
    )
    found = analyze(facts, expand=lambda s: [])
    (f,) = by_id(found, "server-audit-insufficient-privilege")
    assert f.severity == "low"
    assert "pg_hba_file_rules" in f.detail and "pg_authid" in f.detail
    assert not [g for g in found if g.severity in ("critical", "high")]


def test_cis_references() -> None:
    (f,) = settings_findings({"ssl": "off"})
    assert f.cis is not None and "CIS PostgreSQL" in f.cis and "6.8" in f.cis
    weak = settings_findings({**SECURE_SETTINGS, "ssl_ciphers": "HIGH:MEDIUM:+3DES:!aNULL"})
    assert "6.10" in str(by_id(weak, "server-ssl-ciphers-weak")[0].cis)
    trust = hba_findings((rule(1, "hostssl", "trust", ("10.0.0.0", "255.0.0.0"), user="app"),), {})
    assert "5.4" in str(by_id(trust, "server-hba-trust-tcp")[0].cis)
