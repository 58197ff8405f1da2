"""The traps off the happy path (issue "Never break a client by surprise"), each reproduced on a real cluster:
a stray client certificate in the home directory, a silent CA swap, a certificate lock-out, a revoked server
certificate, plaintext sessions, symlinked files, a pending restart, a stopped server, paste-ready output."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from pgbatten.certfacts import dns_names, fingerprint_sha256
from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.errors import PKIError, UsageError, VerificationError
from pgbatten.fsutil import atomic_write
from pgbatten.pki import CAStore, CertificateAuthority
from pgbatten.probe import check_target
from pgbatten.secure import SecureRequest, secure
from pgbatten.secure.plan import CERT_NAME
from pgbatten.secure.verify import Proof
from tests.conftest import SEED_HBA

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-app-pw"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def psql(
    cluster: TempCluster,
    conninfo: str,
    *,
    home: Path,
    password: str | None = PASSWORD,
    cwd: Path | None = None,
) -> str:
    """Real psql, run the way a user pastes it, with ``home`` as its home directory."""
    binary = shutil.which("psql") or str(cluster.bin.path("psql"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    if password is not None:
        env["PGPASSWORD"] = password
    out = subprocess.run(
        [
            binary,
            "-X",
            "-A",
            "-t",
            conninfo,
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_foreign_client_certificate_in_home_breaks_nothing(
    seed_cluster: TempCluster, ca_dir: Path, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq sends ~/.postgresql/postgresql.crt to any server that asks; pgbatten used to make every server
    # ask, and its own proofs sent the file too, so a correct change was rolled back ("unknown ca").
    seed_cluster.sql().query(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
    home = isolated_environment
    stranger = CertificateAuthority.create(common_name="someone else's CA").issue_client("app")
    (home / ".postgresql").mkdir()
    atomic_write(home / ".postgresql" / "postgresql.crt", stranger.cert_pem(), mode=0o644)
    atomic_write(home / ".postgresql" / "postgresql.key", stranger.key_pem(), mode=0o600)
    # And an operator's shell full of PG* variables, each of which would break psql, pg_ctl or a proof.
    for name, value in {
        "PGSERVICE": "no-such-service",
        "PGHOST": "/nonexistent",
        "PGPORT": "1",
        "PGSSLMODE": "disable",
        "PGSSLCERT": str(home / ".postgresql" / "postgresql.crt"),
        "PGOPTIONS": "-c statement_timeout=1",
        "PGCONNECT_TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(name, value)

    result = secure(discover(pgdata=seed_cluster.data_dir), SecureRequest(ca_dir=ca_dir))
    assert result.status == "applied" and all(p.ok for p in result.proofs), result.proofs
    assert seed_cluster.sql().value("SHOW ssl_ca_file") == ""
    # The idempotent re-run proves again with the same home: exit 0, nothing written.
    again = cli("secure", "--pgdata", str(seed_cluster.data_dir), "--yes")
    assert again.exit_code == 0, again.output
    # A password user whose home holds that file logs in over verify-full as pgbatten printed it.
    conninfo = result.client.conninfo.replace(f"user={result.client.user}", "user=app")
    assert "user=" in result.client.conninfo
    assert psql(seed_cluster, conninfo, home=home) == "t"


def test_a_ca_swap_is_refused_with_both_fingerprints(
    seed_cluster: TempCluster, ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = discover(pgdata=seed_cluster.data_dir)
    secure(cluster, SecureRequest(ca_dir=ca_dir))
    first = CAStore(ca_dir).load()
    served = (seed_cluster.data_dir / CERT_NAME).read_bytes()

    other_dir = tmp_path / "other-ca"
    refused = cli("secure", "--pgdata", str(seed_cluster.data_dir), "--ca-dir", str(other_dir), "--yes")
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert "\n" not in line and line.startswith("pgbatten: error: ")
    assert fingerprint_sha256(first.certificate) in line  # the installed CA
    assert f"run with --ca-dir {ca_dir}" in line  # found where $PGBATTEN_CA_DIR points
    assert "--replace-ca" in line
    assert (seed_cluster.data_dir / CERT_NAME).read_bytes() == served
    assert not other_dir.exists()  # the refusal left no new CA behind

    # A deliberate switch that then fails its proof is rolled back whole, the new CA directory included.
    import pgbatten.secure.run as run_mod

    monkeypatch.setattr(run_mod, "prove_all", lambda *_a, **_k: [Proof("a proof", False, "made to fail")])
    with pytest.raises(VerificationError, match="rolled back"):
        secure(cluster, SecureRequest(ca_dir=other_dir, replace_ca=True))
    assert not other_dir.exists()
    assert (seed_cluster.data_dir / CERT_NAME).read_bytes() == served
    monkeypatch.undo()

    switched = secure(cluster, SecureRequest(ca_dir=other_dir, replace_ca=True))
    assert switched.status == "applied" and all(p.ok for p in switched.proofs)
    assert any("--replace-ca" in n for n in switched.preview.notes)
    new_ca = x509.load_pem_x509_certificate((other_dir / "ca.crt").read_bytes())
    served_now = x509.load_pem_x509_certificate((seed_cluster.data_dir / CERT_NAME).read_bytes())
    served_now.verify_directly_issued_by(new_ca)
    with pytest.raises(PKIError, match="another CA"):
        secure(cluster, SecureRequest(ca_dir=ca_dir))


def test_certificate_auth_names_who_would_be_locked_out(
    seed_cluster: TempCluster, ca_dir: Path, isolated_environment: Path
) -> None:
    seed_cluster.sql().query(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'; CREATE ROLE nologin NOLOGIN")
    files = {p: p.read_bytes() for p in seed_cluster.data_dir.glob("*.conf")}
    refused = cli("secure", "--pgdata", str(seed_cluster.data_dir), "--client-auth", "cert", "--yes")
    assert refused.exit_code == 2
    assert "would lock out 2 role(s)" in refused.stderr
    assert f": {', '.join(sorted(['app', seed_cluster.owner.name]))};" in refused.stderr
    assert "--allow-lockout" in refused.stderr and "nologin" not in refused.stderr
    assert {p: p.read_bytes() for p in files} == files

    # Once both have certificates the change goes ahead, and says so (also under --yes).
    store = CAStore(ca_dir)
    authority = store.load_or_init()
    bundles = {}
    for role in ("app", seed_cluster.owner.name):
        issued = authority.issue_client(role)
        store.record(issued, "client", role)
        bundles[role] = issued
    done = cli("secure", "--pgdata", str(seed_cluster.data_dir), "--client-auth", "cert", "--yes")
    assert done.exit_code == 0, done.output
    assert "needs a client certificate" in done.stdout and "app: has one" in done.stdout
    assert "pgbatten cert client" in done.stdout and "sslcert=" in done.stdout
    # The printed connection string works as printed once the bundle is where it says (./ROLE/).
    psql_line = next(line.strip() for line in done.stdout.splitlines() if line.strip().startswith("psql "))
    conninfo = shlex.split(psql_line)[1]
    owner = seed_cluster.owner.name
    workdir = isolated_environment / "work"
    (workdir / owner).mkdir(parents=True)
    atomic_write(workdir / owner / "postgresql.crt", bundles[owner].cert_pem(), mode=0o644)
    atomic_write(workdir / owner / "postgresql.key", bundles[owner].key_pem(), mode=0o600)
    assert psql(seed_cluster, conninfo, home=isolated_environment, password=None, cwd=workdir) == "t"


def test_an_interrupted_ca_init_does_not_block_the_next_run(seed_cluster: TempCluster, ca_dir: Path) -> None:
    # A kill between writing ca.key and ca.crt used to block every later run ("ca.crt is missing").
    ca_dir.mkdir()
    orphan = CertificateAuthority.create().key
    from pgbatten.pki import private_key_pem

    atomic_write(ca_dir / "ca.key", private_key_pem(orphan), mode=0o600)
    result = secure(discover(pgdata=seed_cluster.data_dir), SecureRequest(ca_dir=ca_dir))
    assert result.status == "applied" and all(p.ok for p in result.proofs)
    assert any("interrupted" in n for n in result.preview.notes)
    kept = list(ca_dir.glob("ca.key.interrupted-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == private_key_pem(orphan)
    assert CAStore(ca_dir).load().certificate == x509.load_pem_x509_certificate(
        (ca_dir / "ca.crt").read_bytes()
    )


def test_revoked_server_certificate_is_reissued(seed_cluster: TempCluster, ca_dir: Path) -> None:
    cluster = discover(pgdata=seed_cluster.data_dir)
    first = secure(cluster, SecureRequest(ca_dir=ca_dir))
    serial = first.plan.certificate.serial_number
    store = CAStore(ca_dir)
    assert any(e.serial == serial and e.kind == "server" for e in store.entries())
    store.revoke(hex(serial))
    again = secure(cluster, SecureRequest(ca_dir=ca_dir))
    assert again.status == "applied" and again.plan.issued is not None
    assert again.plan.certificate.serial_number != serial
    assert all(p.ok for p in again.proofs)


def test_plaintext_sessions_are_reported_and_can_be_ended(seed_cluster: TempCluster, ca_dir: Path) -> None:
    seed_cluster.sql().query(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
    session = psycopg.connect(
        host="127.0.0.1",
        port=seed_cluster.port,
        dbname="postgres",
        user="app",
        password=PASSWORD,
        sslmode="disable",
        application_name="legacy-app",
    )
    pid = session.info.backend_pid
    result = secure(discover(pgdata=seed_cluster.data_dir), SecureRequest(ca_dir=ca_dir))
    assert [s.pid for s in result.plaintext_sessions] == [pid]
    assert result.plaintext_sessions[0].user == "app"
    assert result.ended_sessions == ()
    assert session.execute("SELECT 1").fetchone() == (1,)  # a reload keeps it

    ended = cli(
        "secure", "--pgdata", str(seed_cluster.data_dir), "--yes", "--end-plaintext-sessions", "--json"
    )
    assert ended.exit_code == 0, ended.output
    data = json.loads(ended.stdout)
    assert data["status"] == "unchanged" and data["ended_sessions"] == [pid]
    assert [s["application_name"] for s in data["plaintext_sessions"]] == ["legacy-app"]
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()


def test_symlinked_files_are_written_and_restored_through_their_links(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster(hba=SEED_HBA, start=False)
    managed = cluster.root / "managed"
    managed.mkdir()
    for name in ("pg_hba.conf", "postgresql.conf"):
        shutil.move(cluster.conf_dir / name, managed / name)
        (cluster.conf_dir / name).symlink_to(managed / name)
    if os.geteuid() == 0:
        os.chown(managed, cluster.owner.uid, cluster.owner.gid)
    # A valid spelling PostgreSQL accepts, and a setting that waits for a restart: neither may block us.
    with (managed / "postgresql.conf").open("a") as conf:
        conf.write("ssl = false\n")
    cluster.start()
    with (managed / "postgresql.conf").open("a") as conf:
        conf.write("shared_buffers = 24MB\n")
    originals = {name: (managed / name).read_bytes() for name in ("pg_hba.conf", "postgresql.conf")}
    described = discover(pgdata=cluster.data_dir)

    import pgbatten.secure.run as run_mod

    with monkeypatch.context() as patch:
        patch.setattr(run_mod, "prove_all", lambda *_a, **_k: [Proof("a proof", False, "made to fail")])
        with pytest.raises(VerificationError, match="rolled back"):
            secure(described, SecureRequest(ca_dir=ca_dir))
    for name, content in originals.items():
        assert (cluster.conf_dir / name).is_symlink(), name
        assert (managed / name).read_bytes() == content

    result = secure(described, SecureRequest(ca_dir=ca_dir))
    assert result.status == "applied" and all(p.ok for p in result.proofs), result.proofs
    assert any("needs a restart" in n for n in result.notes)
    for name in originals:
        assert (cluster.conf_dir / name).is_symlink(), name
    assert "hostssl" in (managed / "pg_hba.conf").read_text()
    assert check_target(f"127.0.0.1:{cluster.port}", timeout=5).plaintext_accepted is False


def test_a_stopped_cluster_is_said_first(make_cluster: Callable[..., TempCluster], ca_dir: Path) -> None:
    cluster = make_cluster(hba=SEED_HBA)
    cluster.stop()
    dry = cli("secure", "--pgdata", str(cluster.data_dir), "-n")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(f"note: cluster {cluster.data_dir} is not running")
    assert "+ssl = on" in dry.stdout
    applying = cli("secure", "--pgdata", str(cluster.data_dir), "--yes")
    assert applying.exit_code == 2
    assert applying.stdout == "" and "is not running" in applying.stderr


def test_json_is_the_documented_schema(seed_cluster: TempCluster, ca_dir: Path) -> None:
    args = ["secure", "--pgdata", str(seed_cluster.data_dir), "--json", "--host", "db.pgbatten.test"]
    dry = cli(*args, "-n")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["schema"] == "pgbatten.secure/1" and plan["status"] == "dry-run" and not plan["applied"]
    assert {f["purpose"] for f in plan["files"]} >= {"server cert", "server key", "settings", "pg_hba"}
    assert any(f["id"] == "hba-plaintext-accepted" and f["lineno"] == 3 for f in plan["lint"]["before"])
    assert plan["settings"]["ssl_ca_file"] == "" and plan["verifies_client_certificates"] is False

    applied = json.loads(cli(*args, "--yes").stdout)
    assert applied["status"] == "applied" and applied["applied"] and applied["ca"]["created"]
    assert all(p["ok"] for p in applied["proofs"]) and applied["proofs"]
    assert "DNS:db.pgbatten.test" in applied["certificate"]["sans"]
    assert applied["client"]["conninfo"].startswith("host=db.pgbatten.test ")
    assert "user=" in applied["client"]["conninfo"]
    assert [b["original"] for b in applied["backups"]]
    again = json.loads(cli(*args, "--yes").stdout)
    assert again["status"] == "unchanged" and again["files"] == [] and again["backups"] == []
    assert again["certificate"]["fingerprint_sha256"] == applied["certificate"]["fingerprint_sha256"]


def test_legacy_ip_sans_serve_verify_full_by_address(
    seed_cluster: TempCluster, ca_dir: Path, isolated_environment: Path
) -> None:
    seed_cluster.sql().query(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
    result = secure(discover(pgdata=seed_cluster.data_dir), SecureRequest(ca_dir=ca_dir, legacy_ip_sans=True))
    assert all(p.ok for p in result.proofs)
    assert "127.0.0.1" in dns_names(result.plan.certificate)
    conninfo = (
        f"host=127.0.0.1 port={seed_cluster.port} dbname=postgres user=app sslmode=verify-full"
        f" sslrootcert={CAStore(ca_dir).ca_cert_path}"
    )
    assert psql(seed_cluster, conninfo, home=isolated_environment) == "t"


def test_lockout_refusal_needs_a_running_server_to_list_roles(
    make_cluster: Callable[..., TempCluster],
) -> None:
    cluster = make_cluster(hba=SEED_HBA)
    cluster.stop()
    dry = cli("secure", "--pgdata", str(cluster.data_dir), "-n", "--client-auth", "verify-full")
    assert dry.exit_code == 0
    assert "cannot be listed while the server is stopped" in dry.stdout
    with pytest.raises(UsageError, match="lock out"):
        cluster.start()
        secure(discover(pgdata=cluster.data_dir), SecureRequest(client_auth="verify-full"))


@pytest.mark.parametrize(
    "line",
    ["SSL = off", "ssl = true", "ssl = 1", "ssl = ON", "Ssl = 'yes'"],
)
def test_ssl_spelled_any_way_postgres_reads_is_secured(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, line: str
) -> None:
    # Seen: "ssl = 'on' would not take effect" for a postgresql.conf saying ssl = true (PostgreSQL reads it
    # as on) or SSL = off (PostgreSQL's names are case-insensitive). The server runs with ssl off; the line
    # is the one the administrator wrote last, not yet reloaded when it spells on.
    cluster = make_cluster(hba=SEED_HBA)
    with cluster.config_file.open("a") as conf:
        conf.write(f"{line}\n")
    described = discover(pgdata=cluster.data_dir)
    result = secure(described, SecureRequest(ca_dir=ca_dir))
    assert result.status == "applied" and all(p.ok for p in result.proofs), result.proofs
    assert cluster.sql().value("SHOW ssl") == "on"
    assert check_target(f"127.0.0.1:{cluster.port}", timeout=5).plaintext_accepted is False
    again = cli("secure", "--pgdata", str(cluster.data_dir), "--yes")
    assert again.exit_code == 0, again.output
