"""A CA rotation on a real cluster, judged by real psql (libpq): through the whole overlap a client holding
only the old root, only the new root, or both passes verify-full, and client certificates of both CAs are
accepted; ``ca retire`` refuses while old client certificates remain; afterwards the old CA's certificates
are refused. ``status`` says the stage and its exit code at each step."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from cryptography import x509

from pgbatten import libpq
from pgbatten.certfacts import issued_by
from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.lifecycle import status
from pgbatten.pki import ClusterRef
from pgbatten.secure import SecureRequest, secure

pytestmark = pytest.mark.integration

HBA = """\
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


class Psql:
    def __init__(self, cluster: TempCluster) -> None:
        self.cluster = cluster
        self.psql = cluster.bin.path("psql") if cluster.bin.path("psql").exists() else Path("psql")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def connect(self, user: str, root: Path, bundle: Path | None = None, host: str = "localhost") -> str:
        """current_user on success, else the error libpq printed."""
        params = {
            "host": host,
            "port": str(self.cluster.port),
            "user": user,
            "dbname": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(root),
            "sslcert": str(bundle / "postgresql.crt") if bundle else libpq.NO_FILE,
            "sslkey": str(bundle / "postgresql.key") if bundle else libpq.NO_FILE,
            "password": "pw-of-" + user,
            "connect_timeout": "10",
        }
        run = subprocess.run(
            [str(self.psql), "-XAtc", "SELECT current_user", libpq.conninfo(params)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        return run.stdout.strip() if run.returncode == 0 else run.stderr.strip()


def served_leaf(cluster: TempCluster, ca_dir: Path) -> tuple[x509.Certificate, int]:
    report = status(ca_dir, [ClusterRef.data_directory(cluster.data_dir)])
    served = report.clusters[0].served
    assert served is not None and served.matches_installed, report
    chain = x509.load_pem_x509_certificates((cluster.data_dir / "pgbatten-server.crt").read_bytes())
    return chain[0], len(chain)


def test_rotation_overlap_and_retirement(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    cluster = make_cluster(hba=HBA)
    secure(
        discover(pgdata=cluster.data_dir),
        # allow_lockout: only the cluster's superuser logs in over TCP here, and it needs no certificate.
        SecureRequest(ca_dir=ca_dir, client_auth="verify-full", allow_lockout=True),
    )
    for user in ("alice", "bob", "mallory"):
        cluster.sql().query(
            "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'u', :'p') \\gexec",
            {"u": user, "p": "pw-of-" + user},
        )
    pgdata = str(cluster.data_dir)
    port = str(cluster.port)
    old_root = tmp_path / "old-root.crt"
    old_root.write_bytes((ca_dir / "ca.crt").read_bytes())
    code, out = cli(
        "cert",
        "client",
        "alice",
        "--out",
        str(tmp_path / "alice-old"),
        "--port",
        port,
        "--server-host",
        "localhost",
    )
    assert code == 0, out
    code, out = cli(
        "cert",
        "client",
        "mallory",
        "--out",
        str(tmp_path / "mallory"),
        "--port",
        port,
        "--server-host",
        "localhost",
    )
    assert code == 0, out
    code, out = cli("cert", "revoke", "mallory", "--pgdata", pgdata)
    assert code == 0, out  # a CRL is in force from now on: each CA needs its own in the overlap
    psql = Psql(cluster)
    assert psql.connect("alice", old_root, tmp_path / "alice-old") == "alice"
    assert status(ca_dir, [ClusterRef.data_directory(cluster.data_dir)]).exit_status == 0

    # A session open across the whole rotation: it is never dropped, the postmaster never restarts.
    session = psycopg.connect(
        libpq.conninfo(
            libpq.params(
                host="localhost",
                port=cluster.port,
                user="alice",
                password="pw-of-alice",
                sslmode="verify-full",
                sslrootcert=old_root,
                client_certificate=libpq.ClientCertificate(
                    tmp_path / "alice-old" / "postgresql.crt", tmp_path / "alice-old" / "postgresql.key"
                ),
            )
        ),
        autocommit=True,
    )
    backend = session.execute("SELECT pg_backend_pid()").fetchone()
    postmaster = (cluster.data_dir / "postmaster.pid").read_text().splitlines()[0]

    code, out = cli("ca", "rotate", "--pgdata", pgdata, "--yes")
    assert code == 0, out
    assert "Started a CA rotation" in out
    new_root = ca_dir / "ca.crt"
    both = ca_dir / "roots.crt"
    new_ca = x509.load_pem_x509_certificate(new_root.read_bytes())
    leaf, chain_length = served_leaf(cluster, ca_dir)
    assert issued_by(leaf, new_ca) and chain_length == 2  # leaf + cross certificate
    assert "client holding only the old root" in out and "FAILED" not in out
    # secure during the overlap keeps what renew set up: both roots, both CRLs, the cross certificate.
    files = {n: (cluster.data_dir / n).read_bytes() for n in ("pgbatten-ca.crt", "pgbatten-server.crt")}
    again = secure(
        discover(pgdata=cluster.data_dir),
        SecureRequest(ca_dir=ca_dir, client_auth="verify-full", allow_lockout=True),
    )
    assert not again.plan.changed, [c.path for c in again.plan.changes]
    assert {n: (cluster.data_dir / n).read_bytes() for n in files} == files
    # A server secured for the first time during the overlap is set up the same way.
    newcomer = make_cluster(hba=HBA)
    secure(
        discover(pgdata=newcomer.data_dir),
        SecureRequest(ca_dir=ca_dir, client_auth="verify-full", allow_lockout=True),
    )
    assert (newcomer.data_dir / "pgbatten-ca.crt").read_bytes() == both.read_bytes()
    newcomer.sql().query("SELECT format('CREATE ROLE alice LOGIN PASSWORD %L', 'pw-of-alice') \\gexec")
    served = x509.load_pem_x509_certificates((newcomer.data_dir / "pgbatten-server.crt").read_bytes())
    assert Psql(newcomer).connect("alice", old_root, tmp_path / "alice-old") == "alice", [
        c.subject.rfc4514_string() + " by " + c.issuer.rfc4514_string() for c in served
    ]
    newcomer.stop()

    # bob gets his first certificate from the new CA (cert client issues from the CA in use).
    code, out = cli(
        "cert", "client", "bob", "--out", str(tmp_path / "bob"), "--port", port, "--server-host", "localhost"
    )
    assert code == 0, out

    for root in (old_root, new_root, both):
        for host in ("localhost", "127.0.0.1"):
            assert psql.connect("alice", root, tmp_path / "alice-old", host) == "alice", (root, host)
            assert psql.connect("bob", root, tmp_path / "bob", host) == "bob", (root, host)
    # Revoked stays revoked across the rotation.
    assert "revoked" in psql.connect("mallory", both, tmp_path / "mallory")

    report = status(ca_dir, [ClusterRef.data_directory(cluster.data_dir)])
    assert report.rotation is not None and str(report.rotation.stage) == "moving-clients"
    assert report.exit_status == 0
    later = status(
        ca_dir,
        [ClusterRef.data_directory(cluster.data_dir)],
        now=dt.datetime.now(dt.UTC) + dt.timedelta(days=91),
    )
    # The planned overlap is over and alice still depends on the old CA: a warning (the CRLs have lapsed
    # by then too, which is critical on its own).
    pending = [f for f in later.findings if f.id == "rotation-client-pending"]
    assert pending and pending[0].severity == "medium"
    code, out = cli("status", "--pgdata", pgdata, "--json")
    assert json.loads(out)["rotation"]["stage"] == "moving-clients"

    # Retiring now would lock alice out: refused.
    code, out = cli("ca", "retire", "--pgdata", pgdata, "--yes")
    assert code == 2 and "alice" in out and "still valid" in out, out

    code, out = cli("renew", "--pgdata", pgdata, "--client", "alice", "--yes")
    assert code == 0, out
    alice_new = next((ca_dir / "bundles").glob("alice-*"))
    assert psql.connect("alice", alice_new / "root.crt", alice_new) == "alice"
    report = status(ca_dir, [ClusterRef.data_directory(cluster.data_dir)])
    assert report.rotation is not None and str(report.rotation.stage) == "moving-clients"

    code, out = cli("ca", "retire", "--pgdata", pgdata, "--revoke-replaced", "--yes")
    assert code == 0, out
    assert not (ca_dir / "rotation").exists()
    leaf, chain_length = served_leaf(cluster, ca_dir)
    assert issued_by(leaf, new_ca) and chain_length == 1  # the cross certificate is gone
    assert (cluster.data_dir / "pgbatten-ca.crt").read_bytes() == new_root.read_bytes()
    # After retirement the old CA's certificates are refused; the new ones work.
    refused = psql.connect("alice", new_root, tmp_path / "alice-old")
    assert refused != "alice" and ("unknown ca" in refused or "certificate" in refused), refused
    assert psql.connect("alice", alice_new / "root.crt", alice_new) == "alice"
    assert psql.connect("bob", new_root, tmp_path / "bob") == "bob"
    report = status(ca_dir, [ClusterRef.data_directory(cluster.data_dir)])
    assert report.rotation is None and report.exit_status == 0, report.findings
    assert session.execute("SELECT pg_backend_pid()").fetchone() == backend
    assert (cluster.data_dir / "postmaster.pid").read_text().splitlines()[0] == postmaster
    session.close()
    assert len(list((ca_dir / "retired").iterdir())) == 1
