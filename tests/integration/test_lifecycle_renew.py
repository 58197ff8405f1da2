"""``pgbatten renew`` on real clusters: a due certificate is replaced by reload while a session stays open
and the postmaster keeps its PID; a failed renewal leaves the old certificate serving; nothing due writes
nothing; client certificates go into fresh bundles a real psql uses; CRLs are re-signed and installed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgbatten import libpq
from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.lifecycle import renew as renew_mod
from pgbatten.lifecycle.renew import RenewOptions, renew
from pgbatten.pki import CAStore, ClusterRef, generate_key, private_key_pem
from pgbatten.secure import SecureRequest, secure

pytestmark = pytest.mark.integration

HBA = """\
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


def secured(make_cluster: Callable[..., TempCluster], ca_dir: Path, **options: object) -> TempCluster:
    cluster = make_cluster(hba=HBA)
    secure(
        discover(pgdata=cluster.data_dir),
        # allow_lockout: only the cluster's superuser logs in over TCP here, and it needs no certificate.
        SecureRequest(ca_dir=ca_dir, allow_lockout=True, **options),  # type: ignore[arg-type]
    )
    return cluster


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def served_serial(pgdata: Path) -> str:
    _, out = cli("status", "--pgdata", str(pgdata), "--json")
    served = json.loads(out)["clusters"][0]["served"]
    assert served["matches_installed"] is True, out
    return str(served["serial"])


def postmaster_pid(cluster: TempCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])


APP_PASSWORD = "app-pw-1"


def open_session(
    cluster: TempCluster, ca_dir: Path, password: str = APP_PASSWORD
) -> psycopg.Connection[tuple[object, ...]]:
    cluster.sql().query("SELECT format('CREATE ROLE app LOGIN PASSWORD %L', :'pw') \\gexec", {"pw": password})
    params = libpq.params(
        host="localhost",
        hostaddr="127.0.0.1",
        port=cluster.port,
        user="app",
        password=password,
        sslmode="verify-full",
        sslrootcert=ca_dir / "ca.crt",
    )
    return psycopg.connect(libpq.conninfo(params), autocommit=True)


def test_due_certificate_renewed_by_reload_with_a_session_open(
    make_cluster: Callable[..., TempCluster], ca_dir: Path
) -> None:
    cluster = secured(make_cluster, ca_dir, days=3)
    pgdata = str(cluster.data_dir)
    before = served_serial(cluster.data_dir)
    pid = postmaster_pid(cluster)
    session = open_session(cluster, ca_dir)
    backend = session.execute("SELECT pg_backend_pid()").fetchone()

    # Not due under the default rule (a 3-day certificate with 3 days left): nothing is written.
    files = sorted(p.name for p in cluster.data_dir.iterdir())
    code, out = cli("renew", "--pgdata", pgdata, "--yes")
    assert code == 0 and "Nothing is due: nothing was written." in out
    assert sorted(p.name for p in cluster.data_dir.iterdir()) == files

    code, out = cli("renew", "--pgdata", pgdata, "--before", "5d", "--yes")
    assert code == 0, out
    after = served_serial(cluster.data_dir)
    assert after != before
    assert f"now serving {after}" in out and f"(was {before})" in out
    assert "verify-full login by name" in out and "verify-full login by address 127.0.0.1" in out
    # The session opened before the renewal is the same backend, still working; the postmaster never
    # restarted.
    assert session.execute("SELECT pg_backend_pid()").fetchone() == backend
    assert session.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    assert postmaster_pid(cluster) == pid
    session.close()
    # The new certificate is in the inventory, valid a year.
    entry = next(e for e in CAStore(ca_dir).entries() if f"{e.serial:#x}" == after)
    assert entry.kind == "server" and entry.not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    # A second run: nothing due, and as facts for a configuration tool: nothing changed.
    result = CliRunner().invoke(main, ["renew", "--pgdata", pgdata, "--before", "5d", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["changed"] is False and facts["nothing_due"] is True


@pytest.mark.parametrize("fault", ["broken key", "refused certificate file"])
def test_failed_renewal_leaves_the_old_certificate_serving(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    cluster = secured(make_cluster, ca_dir)
    cert_file = cluster.data_dir / "pgbatten-server.crt"
    old_bytes = cert_file.read_bytes()
    old_serial = served_serial(cluster.data_dir)
    real_plan = renew_mod.plan_server_renewal

    def faulty(*args: object, **kwargs: object) -> renew_mod.RenewPlan:
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        changes = []
        for change in plan.changes:
            if fault == "broken key" and change.purpose == "server key":
                change = replace(change, new=private_key_pem(generate_key()))  # not the certificate's key
            if fault == "refused certificate file" and change.purpose == "server cert":
                change = replace(
                    change, new=b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
                )
            changes.append(change)
        return replace(plan, changes=tuple(changes))

    monkeypatch.setattr(renew_mod, "plan_server_renewal", faulty)
    code, out = cli("renew", "--pgdata", str(cluster.data_dir), "--before", "400d", "--yes")
    assert code == 2, out
    assert "the old certificate keeps serving" in out
    assert cert_file.read_bytes() == old_bytes
    assert served_serial(cluster.data_dir) == old_serial
    # The certificate that never served is not left in the inventory.
    assert [e for e in CAStore(ca_dir).entries() if e.kind == "server"] == [
        e for e in CAStore(ca_dir).entries() if e.kind == "server" and f"{e.serial:#x}" == old_serial
    ]


def test_dry_run_writes_nothing(make_cluster: Callable[..., TempCluster], ca_dir: Path) -> None:
    cluster = secured(make_cluster, ca_dir)
    state = sorted((p.name, p.stat().st_mtime_ns) for p in [*cluster.data_dir.iterdir(), *ca_dir.iterdir()])
    code, out = cli("renew", "--pgdata", str(cluster.data_dir), "--before", "400d", "--dry-run")
    assert code == 0, out
    assert "due: less than 400d is left" in out and "Dry run: nothing was written." in out
    assert (
        sorted((p.name, p.stat().st_mtime_ns) for p in [*cluster.data_dir.iterdir(), *ca_dir.iterdir()])
        == state
    )


def test_client_certificates_renewed_into_fresh_bundles_and_crl_kept_current(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    cluster = secured(make_cluster, ca_dir, client_auth="cert")
    pgdata = str(cluster.data_dir)
    cluster.sql().query("CREATE ROLE alice LOGIN")
    code, out = cli(
        "cert",
        "client",
        "alice",
        "--out",
        str(tmp_path / "alice"),
        "--days",
        "3",
        "--port",
        str(cluster.port),
        "--server-host",
        "localhost",
    )
    assert code == 0, out
    # Revoking someone installs a CRL: from now on renew keeps it current.
    # Without a cluster (or --port) cert client refuses to guess the server's port.
    code, out = cli("cert", "client", "mallory", "--out", str(tmp_path / "mallory"), "--pgdata", pgdata)
    assert code == 0, out
    code, out = cli("cert", "revoke", "mallory", "--pgdata", pgdata)
    assert code == 0, out
    old = next(e for e in CAStore(ca_dir).entries() if e.name == "alice")

    code, out = cli("renew", "--pgdata", pgdata, "--client", "alice", "--before", "5d", "--yes")
    assert code == 0, out
    new = next(e for e in CAStore(ca_dir).entries() if e.name == "alice" and e.serial != old.serial)
    bundles = list((ca_dir / "bundles").iterdir())
    assert [b.name.startswith("alice-") for b in bundles] == [True]
    bundle = bundles[0]
    assert {p.name for p in bundle.iterdir()} >= {
        "postgresql.crt",
        "postgresql.key",
        "root.crt",
        "postgresql.pk8",
        "postgresql.p12",
        "INSTALL.md",
        "postgresql.p12.password",
    }
    assert (bundle / "postgresql.p12.password").stat().st_mode & 0o077 == 0
    # The old one stays valid until the operator says the new one is handed out, and renew says how.
    assert f"pgbatten cert revoke {old.serial:#x}" in out
    assert not next(e for e in CAStore(ca_dir).entries() if e.serial == old.serial).revoked

    # Real psql with the new bundle: verify-full and the certificate alone (cert auth).
    psql = cluster.bin.path("psql")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    conninfo = libpq.conninfo(
        {
            "host": "localhost",
            "port": str(cluster.port),
            "user": "alice",
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(bundle / "root.crt"),
            "sslcert": str(bundle / "postgresql.crt"),
            "sslkey": str(bundle / "postgresql.key"),
        }
    )
    run = subprocess.run(
        [str(psql), "-XAtc", "SELECT current_user", conninfo],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.stdout.strip() == "alice", run.stderr

    # With a grace period, a later renew revokes the replaced certificate and installs the CRL.
    options = RenewOptions(clusters=(ClusterRef.data_directory(cluster.data_dir),), yes=True)
    store = CAStore(ca_dir)
    from pgbatten.lifecycle.clients import load_replacements, save_replacements

    items = load_replacements(store)
    save_replacements(store, [replace(r, revoke_after=dt.datetime.now(dt.UTC)) for r in items])
    old_bundle = tmp_path / "alice"
    old_session = psycopg.connect(
        libpq.conninfo(
            libpq.params(
                host="localhost",
                port=cluster.port,
                user="alice",
                sslmode="verify-full",
                sslrootcert=old_bundle / "root.crt",
                client_certificate=libpq.ClientCertificate(
                    old_bundle / "postgresql.crt", old_bundle / "postgresql.key"
                ),
            )
        ),
        autocommit=True,
    )
    result = renew(ca_dir, options, log=lambda _msg: None)
    assert [r.old_serial for r in result.revoked] == [old.serial]
    assert not result.failed
    # The session still running on the replaced certificate ends with its revocation.
    assert result.clusters[0].sessions_ended == 1
    with pytest.raises(psycopg.OperationalError):
        old_session.execute("SELECT 1")
    old_session.close()
    assert next(e for e in CAStore(ca_dir).entries() if e.serial == old.serial).revoked
    crl_proofs = [p.what for c in result.clusters for p in c.proofs]
    assert crl_proofs, result
    assert not new.revoked

    # A CRL closer than half its life to its next update is re-signed and installed (moved clock).
    number = CAStore(ca_dir).load_crl()
    assert number is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=16)
    result = renew(ca_dir, replace(options, now=later), log=lambda _msg: None)
    assert [c.reason for c in result.crls] and "half of its validity" in result.crls[0].reason
    assert result.clusters[0].applied and not result.failed
    installed = (cluster.data_dir / "pgbatten-ca.crl").read_bytes()
    assert installed == (ca_dir / "crl.pem").read_bytes()


def test_nothing_due_needs_no_passphrase_and_a_stopped_cluster_fails_alone(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    running = secured(make_cluster, ca_dir, ca_passphrase=b"correct horse")
    stopped = secured(make_cluster, ca_dir, ca_passphrase=b"correct horse")
    stopped.stop()
    code, out = cli("renew", "--pgdata", str(running.data_dir), "--yes")
    assert code == 0 and "Nothing is due" in out  # the CA key was never read
    code, out = cli("renew", "--pgdata", str(running.data_dir), "--before", "400d", "--yes")
    assert code == 2 and "passphrase" in out.lower(), out
    before = served_serial(running.data_dir)
    code, out = cli(
        "renew",
        "--pgdata",
        str(stopped.data_dir),
        "--pgdata",
        str(running.data_dir),
        "--before",
        "400d",
        "--ca-passphrase-file",
        str(passphrase),
        "--yes",
    )
    assert code == 2 and "is not running" in out, out
    # Nothing serves on a stopped cluster: the error must not say the old certificate keeps serving.
    assert "keeps serving" not in out and "rolled back" not in out, out
    assert served_serial(running.data_dir) != before  # the running one was renewed all the same


def test_renew_waits_for_another_run_on_the_cluster(
    make_cluster: Callable[..., TempCluster], ca_dir: Path
) -> None:
    from pgbatten.errors import BusyError
    from pgbatten.fsutil import directory_lock

    cluster = secured(make_cluster, ca_dir)
    options = RenewOptions(clusters=(ClusterRef.data_directory(cluster.data_dir),), yes=True, lock_wait=0.2)
    lock_holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)",
            str(cluster.data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert lock_holder.stdout is not None and lock_holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"cluster {cluster.data_dir}"):
            renew(ca_dir, options, log=lambda _m: None)
    finally:
        lock_holder.kill()
        lock_holder.wait()
    # The same lock, re-entrant in this process (as ca rotate then renew take it), and free again now.
    with directory_lock(cluster.data_dir, wait=1, what="test"):
        assert renew(ca_dir, options, log=lambda _m: None).nothing_due
