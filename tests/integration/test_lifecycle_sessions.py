"""Revocation that reaches live sessions: ``cert revoke --pgdata`` ends the sessions that authenticated with
the revoked certificate (and only those), once the CRL is in force; ``--keep-sessions`` leaves them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgbatten import libpq
from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
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


def test_revocation_ends_the_sessions_of_the_revoked_certificate(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    cluster = make_cluster(hba=HBA)
    secure(
        discover(pgdata=cluster.data_dir),
        # allow_lockout: only the cluster's superuser logs in over TCP here, and it needs no certificate.
        SecureRequest(ca_dir=ca_dir, client_auth="cert", allow_lockout=True),
    )
    pgdata = str(cluster.data_dir)
    sessions: dict[str, psycopg.Connection[tuple[object, ...]]] = {}
    for user in ("alice", "bob", "carol"):
        cluster.sql().query("SELECT format('CREATE ROLE %I LOGIN', :'u') \\gexec", {"u": user})
        code, out = cli("cert", "client", user, "--out", str(tmp_path / user), "--pgdata", pgdata)
        assert code == 0, out
        bundle = tmp_path / user
        params = libpq.params(
            host="localhost",
            port=cluster.port,
            user=user,
            sslmode="verify-full",
            sslrootcert=bundle / "root.crt",
            client_certificate=libpq.ClientCertificate(bundle / "postgresql.crt", bundle / "postgresql.key"),
        )
        sessions[user] = psycopg.connect(libpq.conninfo(params), autocommit=True)
        assert sessions[user].execute("SELECT current_user").fetchone() == (user,)

    code, out = cli("cert", "revoke", "alice", "--pgdata", pgdata)
    assert code == 0, out
    assert "Ended 1 session(s) that authenticated with the revoked certificate(s) (alice)." in out
    with pytest.raises(psycopg.OperationalError):
        sessions["alice"].execute("SELECT 1")
    # Only alice's: bob's session goes on.
    assert sessions["bob"].execute("SELECT current_user").fetchone() == ("bob",)

    result = CliRunner().invoke(
        main, ["cert", "revoke", "bob", "--pgdata", pgdata, "--keep-sessions", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["cluster"]["sessions"]
    assert (
        report["kept"] is True and report["ended"] == [] and [s["user"] for s in report["found"]] == ["bob"]
    )
    assert sessions["bob"].execute("SELECT current_user").fetchone() == ("bob",)
    assert sessions["carol"].execute("SELECT current_user").fetchone() == ("carol",)
    for conn in sessions.values():
        conn.close()
