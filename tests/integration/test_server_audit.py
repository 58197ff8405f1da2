"""``server_audit`` against real clusters: the seed case, a secured cluster, and under-privileged roles.

psycopg runs as root here while local (peer) logins expect the cluster's OS user, so every audit connects
over TCP on loopback with a password role made for the test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbatten.audit import ServerAudit, server_audit
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CertificateAuthority
from pgbatten.secure import SecureRequest, secure

pytestmark = pytest.mark.integration

PASSWORD = "audit-pw-1"


def add_role(cluster: TempCluster, name: str, *extra: str, md5: bool = False) -> None:
    # SCRAM unless asked: the seed cluster's password_encryption is md5.
    encryption = "md5" if md5 else "scram-sha-256"
    cluster.sql().query(
        f"SET password_encryption = '{encryption}'; CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}' "
        + " ".join(extra)
    )


def enable_ssl(cluster: TempCluster) -> None:
    """A certificate from a throwaway CA and ssl = on, left at PostgreSQL's default ciphers; by reload."""
    issued = CertificateAuthority.create().issue_server(["localhost", "127.0.0.1"])
    for name, data in (("server.crt", issued.cert_pem()), ("server.key", issued.key_pem())):
        path = cluster.data_dir / name
        path.write_bytes(data)
        os.chown(path, cluster.owner.uid, cluster.owner.gid)
        path.chmod(0o600)
    sql = cluster.sql()
    sql.query("ALTER SYSTEM SET ssl = on")
    sql.query("SELECT pg_reload_conf()")
    for _ in range(100):
        if sql.value("SELECT setting FROM pg_settings WHERE name = 'ssl'") == "on":
            return
        time.sleep(0.05)
    raise AssertionError("ssl did not turn on after reload")


def dsn(cluster: TempCluster, user: str, *, ssl: bool = False) -> str:
    mode = "require" if ssl else "disable"
    return (
        f"host=127.0.0.1 port={cluster.port} dbname=postgres user={user} password={PASSWORD} sslmode={mode}"
    )


def ids(audit: ServerAudit) -> set[str]:
    return {f.id for f in audit.findings}


def test_seed_cluster(seed_cluster: TempCluster) -> None:
    add_role(seed_cluster, "auditor", "SUPERUSER")
    add_role(seed_cluster, "legacy", md5=True)
    audit = server_audit(dsn(seed_cluster, "auditor"))
    assert audit.errors == ()
    assert audit.settings["ssl"] == "off"
    assert audit.settings["data_directory"] == str(seed_cluster.data_dir)
    assert {
        "server-ssl-off",
        "server-password-encryption-md5",
        "server-hba-plaintext-accepted",
        "server-hba-md5",
        "server-hba-superuser-remote",
        "server-hba-rule-cannot-match",
        "server-md5-passwords",
    } <= ids(audit)
    # The host rules cover loopback only, so the hostssl 0.0.0.0/0 rule is not wholly shadowed.
    assert "server-hba-host-above-hostssl" not in ids(audit)
    assert "server-audit-insufficient-privilege" not in ids(audit)
    md5 = next(f for f in audit.findings if f.id == "server-md5-passwords")
    assert "legacy" in md5.detail
    assert "auditor" not in md5.detail
    plaintext = {f.title.split(":")[0] for f in audit.findings if f.id == "server-hba-plaintext-accepted"}
    assert plaintext == {"pg_hba.conf line 3", "pg_hba.conf line 4", "pg_hba.conf line 7"}
    ssl_off = next(f for f in audit.findings if f.id == "server-ssl-off")
    assert ssl_off.fix == f"pgbatten secure --pgdata {seed_cluster.data_dir}"
    assert [r.type for r in audit.hba_rules] == ["local", "host", "host", "hostssl", "local", "host"]


def test_host_above_hostssl_is_shadowing(make_cluster: Callable[..., TempCluster]) -> None:
    cluster = make_cluster(
        hba=("local all all peer\nhost all all 0.0.0.0/0 md5\nhostssl all all 0.0.0.0/0 scram-sha-256\n"),
    )
    enable_ssl(cluster)
    add_role(cluster, "auditor", "SUPERUSER")
    audit = server_audit(dsn(cluster, "auditor"))
    assert audit.errors == ()
    (shadowed,) = [f for f in audit.findings if f.id == "server-hba-host-above-hostssl"]
    assert shadowed.title.startswith("pg_hba.conf line 3:")
    assert "pg_hba.conf line 2" in shadowed.detail
    assert {"server-hba-plaintext-accepted", "server-ssl-ciphers-weak"} <= ids(audit)


def test_secured_cluster_has_no_high_finding(
    make_cluster: Callable[..., TempCluster], tmp_path: Path
) -> None:
    cluster = make_cluster()
    add_role(cluster, "auditor", "SUPERUSER")
    secure(
        discover(pgdata=cluster.data_dir),
        SecureRequest(ca_dir=tmp_path / "ca"),
    )
    audit = server_audit(dsn(cluster, "auditor", ssl=True))
    assert audit.errors == ()
    assert audit.settings["ssl"] == "on"
    high = [f for f in audit.findings if f.severity in ("critical", "high")]
    assert high == []
    # The key is on this machine and mode 0600, so it was checked, and found fine.
    assert not ids(audit) & {"server-key-file-not-checked", "server-key-file-permissions"}
    # Plaintext is refused now: the same role cannot get in without TLS.
    refused = server_audit(dsn(cluster, "auditor"))
    assert [f.id for f in refused.findings] == ["server-audit-failed"]
    assert refused.errors and refused.errors[0].startswith("cannot connect")


def test_group_readable_key_is_found(make_cluster: Callable[..., TempCluster], tmp_path: Path) -> None:
    cluster = make_cluster()
    add_role(cluster, "auditor", "SUPERUSER")
    secure(
        discover(pgdata=cluster.data_dir),
        SecureRequest(ca_dir=tmp_path / "ca"),
    )
    audit = server_audit(dsn(cluster, "auditor", ssl=True))
    key = Path(audit.settings["ssl_key_file"])
    key = key if key.is_absolute() else cluster.data_dir / key
    key.chmod(0o640)
    audit = server_audit(dsn(cluster, "auditor", ssl=True))
    (finding,) = [f for f in audit.findings if f.id == "server-key-file-permissions"]
    assert finding.severity == "medium"
    assert "0640" in finding.title


def test_pg_monitor_role_is_degraded_not_crashed(seed_cluster: TempCluster) -> None:
    add_role(seed_cluster, "monitor", "IN ROLE pg_monitor")
    audit = server_audit(dsn(seed_cluster, "monitor"))
    assert audit.errors == ()
    assert "data_directory" in audit.settings  # pg_monitor includes pg_read_all_settings
    assert audit.hba_rules == ()
    found = ids(audit)
    assert "server-audit-insufficient-privilege" in found
    assert "server-ssl-off" in found
    assert not {f for f in found if f.startswith("server-hba-")}
    degraded = next(f for f in audit.findings if f.id == "server-audit-insufficient-privilege")
    assert "pg_hba_file_rules" in degraded.detail and "pg_authid" in degraded.detail


def test_plain_role_sees_even_less(seed_cluster: TempCluster) -> None:
    add_role(seed_cluster, "nobody")
    audit = server_audit(dsn(seed_cluster, "nobody"))
    assert audit.errors == ()
    assert "data_directory" not in audit.settings
    assert "server-audit-insufficient-privilege" in ids(audit)
    ssl_off = next(f for f in audit.findings if f.id == "server-ssl-off")
    assert ssl_off.fix == "pgbatten secure --pgdata <data_directory>"


def test_unreachable_server_is_an_error_not_an_exception(seed_cluster: TempCluster) -> None:
    audit = server_audit(
        f"host=127.0.0.1 port={seed_cluster.port} user=nosuchrole password=x dbname=postgres"
    )
    # A failed audit must never pass for a clean one.
    assert [(f.id, f.severity) for f in audit.findings] == [("server-audit-failed", "high")]
    assert audit.errors and audit.errors[0].startswith("cannot connect")
    bad = server_audit("this is not = a dsn '")
    assert bad.errors and [f.id for f in bad.findings] == ["server-audit-failed"]
