"""Client certificates end to end, with real clients we did not write: psql (libpq), psycopg, PgJDBC and
node-postgres connect with a ``pgbatten cert client`` bundle under ``--client-auth cert`` and
``verify-full``; ``pgbatten cert revoke`` shuts one user out by reload while everyone else keeps working.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import ClusterTemplate, TempCluster
from pgbatten.secure import SecureRequest, secure
from pgbatten.secure.plan import ClientAuth
from tests.conftest import PGJDBC_JAR

pytestmark = pytest.mark.integration

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
HBA = """\
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""
PASSWORD = "alice-pw-4711"
P12_PASSWORD = "p12-secret-42"
SELECT_SSL = "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@dataclass(frozen=True)
class Secured:
    """A cluster secured with client certificates, and bundles for alice and bob."""

    cluster: TempCluster
    ca_dir: Path
    bundles: dict[str, Path]

    @property
    def port(self) -> int:
        return self.cluster.port


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, f"pgbatten {' '.join(args)}: {result.output}"
    return result.output


def _secure(template: ClusterTemplate, root: Path, client_auth: ClientAuth) -> tuple[TempCluster, Secured]:
    cluster = TempCluster(template=template, hba=HBA)
    cluster.init()
    cluster.start()
    ca_dir = root / "ca"
    secure(
        discover(pgdata=cluster.data_dir),
        # Only the cluster's superuser logs in over TCP yet; it is the one being locked out on purpose.
        SecureRequest(ca_dir=ca_dir, client_auth=client_auth, allow_lockout=True),
    )
    (root / "p12pw").write_text(P12_PASSWORD + "\n")
    bundles: dict[str, Path] = {}
    for user in ("alice", "bob"):
        cluster.sql().query(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
        bundles[user] = root / user
        _cli(
            "cert", "client", user, "--ca-dir", str(ca_dir), "--out", str(bundles[user]),
            "--p12-password-file", str(root / "p12pw"), "--server-host", "localhost",
            "--port", str(cluster.port),
        )  # fmt: skip
    return cluster, Secured(cluster, ca_dir, bundles)


@pytest.fixture(scope="module")
def cert_auth(
    pg_binaries: PgBinaries,
    cluster_templates: Callable[[PgBinaries], ClusterTemplate],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Secured]:
    """One ``--client-auth cert`` cluster shared by the read-only client tests."""
    cluster, env = _secure(cluster_templates(pg_binaries), tmp_path_factory.mktemp("certauth"), "cert")
    try:
        yield env
    finally:
        cluster.cleanup()


@pytest.fixture
def secured(
    pg_binaries: PgBinaries, cluster_templates: Callable[[PgBinaries], ClusterTemplate], tmp_path: Path
) -> Iterator[Callable[[ClientAuth], Secured]]:
    """A fresh secured cluster per test, for tests that change it."""
    made: list[TempCluster] = []

    def factory(client_auth: ClientAuth) -> Secured:
        cluster, env = _secure(cluster_templates(pg_binaries), tmp_path / f"s{len(made)}", client_auth)
        made.append(cluster)
        return env

    yield factory
    for cluster in made:
        cluster.cleanup()


# -- libpq: psql and psycopg ------------------------------------------------------------------------------


def conninfo(env: Secured, user: str, bundle: str | None, **extra: str) -> dict[str, str]:
    params = {
        "host": "localhost",
        "port": str(env.port),
        "dbname": "postgres",
        "user": user,
        "sslmode": "verify-full",
        "sslrootcert": str(env.ca_dir / "ca.crt"),
        "connect_timeout": "10",
    }
    if bundle is not None:
        params["sslcert"] = str(env.bundles[bundle] / "postgresql.crt")
        params["sslkey"] = str(env.bundles[bundle] / "postgresql.key")
    else:
        # Files that do not exist: libpq then sends no certificate (rather than ~/.postgresql's).
        params["sslcert"] = str(env.ca_dir / "no-such.crt")
        params["sslkey"] = str(env.ca_dir / "no-such.key")
    params.update(extra)
    return params


def run_psql(params: dict[str, str], password: str | None = None) -> subprocess.CompletedProcess[str]:
    """The psql binary, as a user would run it; no password unless one is given."""
    psql = shutil.which("psql")
    assert psql, "psql is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    if password is not None:
        env["PGPASSWORD"] = password
    info = " ".join(f"{k}={v}" for k, v in params.items())
    return subprocess.run(
        [psql, "-X", "-A", "-t", "-w", info, "-c", SELECT_SSL],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def psycopg_login(params: dict[str, str], password: str | None = None) -> tuple[bool, str]:
    kwargs = dict(params, password=password or "", passfile=os.devnull)
    try:
        with psycopg.connect(**kwargs) as conn:  # type: ignore[arg-type]
            row = conn.execute(SELECT_SSL).fetchone()
    except psycopg.Error as exc:
        return False, " ".join(str(exc).split())
    return True, f"{row}"


def test_cert_auth_psql_and_psycopg(cert_auth: Secured) -> None:
    env = cert_auth
    ok = run_psql(conninfo(env, "alice", "alice"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "t|alice"
    connected, detail = psycopg_login(conninfo(env, "alice", "alice"))
    assert connected, detail
    assert detail == "(True, 'alice')"

    # bob's certificate is no key to alice's account.
    wrong = run_psql(conninfo(env, "alice", "bob"))
    assert wrong.returncode != 0
    assert 'certificate authentication failed for user "alice"' in wrong.stderr
    connected, detail = psycopg_login(conninfo(env, "alice", "bob"))
    assert not connected
    assert 'certificate authentication failed for user "alice"' in detail

    # No certificate, even with the right password.
    none = run_psql(conninfo(env, "alice", None), password=PASSWORD)
    assert none.returncode != 0
    assert "certificate" in none.stderr, none.stderr
    connected, detail = psycopg_login(conninfo(env, "alice", None), password=PASSWORD)
    assert not connected
    assert "certificate" in detail, detail

    # Plaintext, with certificate and password.
    plain = run_psql(conninfo(env, "alice", "alice", sslmode="disable"), password=PASSWORD)
    assert plain.returncode != 0
    assert "no encryption" in plain.stderr, plain.stderr
    connected, detail = psycopg_login(conninfo(env, "alice", "alice", sslmode="disable"), PASSWORD)
    assert not connected
    assert "no encryption" in detail, detail


def test_verify_full_wants_certificate_and_password(
    secured: Callable[[ClientAuth], Secured],
) -> None:
    env = secured("verify-full")
    ok = run_psql(conninfo(env, "alice", "alice"), password=PASSWORD)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "t|alice"
    connected, detail = psycopg_login(conninfo(env, "alice", "alice"), PASSWORD)
    assert connected, detail

    no_password = run_psql(conninfo(env, "alice", "alice"))
    assert no_password.returncode != 0
    assert "password" in no_password.stderr, no_password.stderr
    bad_password = run_psql(conninfo(env, "alice", "alice"), password="wrong")
    assert bad_password.returncode != 0
    assert "password authentication failed" in bad_password.stderr, bad_password.stderr

    no_cert = run_psql(conninfo(env, "alice", None), password=PASSWORD)
    assert no_cert.returncode != 0
    assert "certificate" in no_cert.stderr, no_cert.stderr
    connected, detail = psycopg_login(conninfo(env, "alice", None), PASSWORD)
    assert not connected
    assert "certificate" in detail, detail

    wrong_cert = run_psql(conninfo(env, "alice", "bob"), password=PASSWORD)
    assert wrong_cert.returncode != 0
    # The client is told only that authentication failed; the server log says why.
    assert 'authentication failed for user "alice"' in wrong_cert.stderr, wrong_cert.stderr
    assert "CN mismatch" in env.cluster.log_text()

    plain = run_psql(conninfo(env, "alice", "alice", sslmode="disable"), password=PASSWORD)
    assert plain.returncode != 0
    assert "no encryption" in plain.stderr, plain.stderr


# -- PgJDBC ----------------------------------------------------------------------------------------------


def run_java(
    env: Secured, user: str, key_params: str, bundle_user: str | None = None
) -> subprocess.CompletedProcess[str]:
    java = shutil.which("java")
    if java is None:
        pytest.skip("Java is not installed (the PgJDBC test needs a Java 17+ runtime)")
    jar = PGJDBC_JAR
    if jar is None:
        pytest.fail(
            "no PgJDBC jar: expected .pg/pgjdbc/postgresql.jar (scripts/test puts it there), "
            "~/.m2/repository/org/postgresql/postgresql/42.*/ or /usr/share/java/postgresql.jar "
            "(apt-get install libpostgresql-jdbc-java; scripts/test does it)"
        )
    bundle = env.bundles[bundle_user or user]
    url = (
        f"jdbc:postgresql://localhost:{env.port}/postgres?sslmode=verify-full"
        f"&sslrootcert={bundle / 'root.crt'}&sslcert={bundle / 'postgresql.crt'}&{key_params}"
    )
    return subprocess.run(
        [java, "-cp", str(jar), str(CLIENTS / "java" / "PgConnect.java"), url, user],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_pgjdbc_connects_with_pk8_key(cert_auth: Secured) -> None:
    result = run_java(cert_auth, "alice", f"sslkey={cert_auth.bundles['alice'] / 'postgresql.pk8'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ssl=t version=TLSv1."), result.stdout
    assert result.stdout.strip().endswith("user=alice")


def test_pgjdbc_connects_with_p12_key(cert_auth: Secured) -> None:
    p12 = cert_auth.bundles["alice"] / "postgresql.p12"
    result = run_java(cert_auth, "alice", f"sslkey={p12}&sslpassword={P12_PASSWORD}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ssl=t version=TLSv1."), result.stdout
    assert result.stdout.strip().endswith("user=alice")


def test_pgjdbc_refuses_someone_elses_certificate(cert_auth: Secured) -> None:
    bob_key = cert_auth.bundles["bob"] / "postgresql.pk8"
    wrong = run_java(cert_auth, "alice", f"sslkey={bob_key}", bundle_user="bob")
    assert wrong.returncode != 0
    assert 'certificate authentication failed for user "alice"' in wrong.stderr, wrong.stderr


# -- node-postgres ---------------------------------------------------------------------------------------


def test_node_postgres_connects_with_pem_files(cert_auth: Secured) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the node-postgres test needs it)")
    if not (CLIENTS / "node_modules" / "pg").is_dir():
        pytest.fail(f"node-postgres is not installed: run 'npm install' in {CLIENTS} (scripts/test does it)")
    result = subprocess.run(
        [
            node,
            str(CLIENTS / "pg_connect.mjs"),
            "localhost",
            str(cert_auth.port),
            "alice",
            str(cert_auth.bundles["alice"]),
            "localhost",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"ssl":true' in result.stdout
    assert '"role":"alice"' in result.stdout
    refused = subprocess.run(
        [node, str(CLIENTS / "pg_connect.mjs"), "localhost", str(cert_auth.port), "alice",
         str(cert_auth.bundles["bob"]), "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "certificate authentication failed" in refused.stderr


# -- revocation ------------------------------------------------------------------------------------------


def postmaster_pid(cluster: TempCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_revoke_shuts_out_alice_by_reload_while_bob_keeps_working(
    secured: Callable[[ClientAuth], Secured],
) -> None:
    env = secured("cert")
    pid = postmaster_pid(env.cluster)
    assert run_psql(conninfo(env, "alice", "alice")).returncode == 0
    # A session opened before the revocation: a reload never drops it.
    session = psycopg.connect(**conninfo(env, "bob", "bob"))  # type: ignore[arg-type]

    output = _cli(
        "cert", "revoke", "alice", "--ca-dir", str(env.ca_dir), "--pgdata", str(env.cluster.data_dir)
    )
    assert "Revoked client certificate" in output
    assert "refused as revoked" in output
    assert "not revoked is still accepted" in output

    refused = run_psql(conninfo(env, "alice", "alice"))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stderr, refused.stderr
    connected, detail = psycopg_login(conninfo(env, "alice", "alice"))
    assert not connected
    assert "certificate revoked" in detail, detail

    bob = run_psql(conninfo(env, "bob", "bob"))
    assert bob.returncode == 0, bob.stderr
    assert bob.stdout.strip() == "t|bob"
    connected, detail = psycopg_login(conninfo(env, "bob", "bob"))
    assert connected, detail
    assert session.execute("SELECT 1").fetchone() == (1,)
    session.close()
    assert postmaster_pid(env.cluster) == pid, "the server was restarted"
    conf = env.cluster.config_file.read_text()
    assert f"ssl_crl_file = '{env.cluster.data_dir / 'pgbatten-ca.crl'}'" in conf

    listing = _cli("cert", "list", "--ca-dir", str(env.ca_dir))
    alice_line = next(line for line in listing.splitlines() if " alice " in line)
    assert "revoked" in alice_line
    assert "next update" in listing

    # A refresh re-signs and re-installs; alice stays out, bob stays in, still no restart.
    refreshed = _cli("crl", "refresh", "--ca-dir", str(env.ca_dir), "--pgdata", str(env.cluster.data_dir))
    assert "Installed the CRL" in refreshed
    # Every hint names this cluster, never a placeholder.
    assert f"pgbatten crl refresh --ca-dir {env.ca_dir} --pgdata {env.cluster.data_dir}" in refreshed
    assert "DIR" not in output + refreshed
    assert "certificate revoked" in run_psql(conninfo(env, "alice", "alice")).stderr
    assert run_psql(conninfo(env, "bob", "bob")).returncode == 0
    assert postmaster_pid(env.cluster) == pid

    # The same through --json: what was revoked, the CRL, what was proved on the cluster.
    import json

    doc = json.loads(
        _cli("cert", "revoke", "bob", "--ca-dir", str(env.ca_dir), "--pgdata", str(env.cluster.data_dir),
             "--json")
    )  # fmt: skip
    assert doc["schema"] == "pgbatten.cert-revoke/1"
    assert [r["name"] for r in doc["revoked"]] == ["bob"]
    assert doc["crl"]["entries"] == 2
    assert doc["cluster"]["label"] == str(env.cluster.data_dir)
    assert doc["cluster"]["proofs"] and all(p["ok"] for p in doc["cluster"]["proofs"])
    assert run_psql(conninfo(env, "bob", "bob")).returncode != 0
    listing = json.loads(_cli("cert", "list", "--ca-dir", str(env.ca_dir), "--json"))
    assert {c["name"]: c["status"] for c in listing["certificates"] if c["kind"] == "client"} == {
        "alice": "revoked",
        "bob": "revoked",
    }


def test_failed_revocation_proof_restores_the_cluster(
    secured: Callable[[ClientAuth], Secured], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgbatten.secure import crl as crl_mod
    from pgbatten.secure.verify import Proof

    env = secured("cert")
    conf_before = env.cluster.config_file.read_bytes()
    pid = postmaster_pid(env.cluster)
    monkeypatch.setattr(
        crl_mod, "prove_revocation", lambda *a, **k: [Proof("revoked serial refused", False, "simulated")]
    )
    result = CliRunner().invoke(
        main, ["cert", "revoke", "alice", "--ca-dir", str(env.ca_dir), "--pgdata", str(env.cluster.data_dir)]
    )
    assert result.exit_code == 2, result.output
    assert "rolled back" in result.stderr and "simulated" in result.stderr
    assert "the cluster is not" in result.stderr
    assert result.stderr.count("\n") == 1
    assert env.cluster.config_file.read_bytes() == conf_before
    assert not (env.cluster.data_dir / "pgbatten-ca.crl").exists()
    assert env.cluster.sql().value("SELECT current_setting('ssl_crl_file') = ''") == "t"
    assert run_psql(conninfo(env, "alice", "alice")).returncode == 0
    assert postmaster_pid(env.cluster) == pid


def test_revoke_on_a_debian_cluster_puts_the_crl_beside_postgresql_conf(
    pg_binaries: PgBinaries,
    cluster_templates: Callable[[PgBinaries], ClusterTemplate],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgbatten.cluster.discover import CONF_ROOT_ENV

    template = cluster_templates(pg_binaries)
    with TempCluster(template=template, hba=HBA, config_outside_pgdata=True) as cluster:
        root = tmp_path / "etc-postgresql"
        (root / str(cluster.bin.major)).mkdir(parents=True)
        (root / str(cluster.bin.major) / "main").symlink_to(cluster.conf_dir)
        monkeypatch.setenv(CONF_ROOT_ENV, str(root))
        name = f"{cluster.bin.major}/main"
        ca_dir = tmp_path / "ca"
        _cli("secure", "--cluster", name, "--client-auth", "cert", "--ca-dir", str(ca_dir), "--allow-lockout",
             "--yes")  # fmt: skip
        cluster.sql().query("CREATE ROLE alice LOGIN")
        _cli("cert", "client", "alice", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "alice"),
             "--server-host", "localhost", "--cluster", name)  # fmt: skip
        env = Secured(cluster, ca_dir, {"alice": tmp_path / "alice"})
        assert run_psql(conninfo(env, "alice", "alice")).returncode == 0

        _cli("cert", "revoke", "alice", "--ca-dir", str(ca_dir), "--cluster", name)
        installed = cluster.conf_dir / "pgbatten-ca.crl"
        assert installed.read_bytes() == (ca_dir / "crl.pem").read_bytes()
        assert installed.stat().st_uid == cluster.owner.uid
        assert not (cluster.data_dir / "pgbatten-ca.crl").exists()
        assert "certificate revoked" in run_psql(conninfo(env, "alice", "alice")).stderr


# -- never break a client by surprise ---------------------------------------------------------------------


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_cert_client_takes_host_and_port_from_the_cluster(cert_auth: Secured, tmp_path: Path) -> None:
    from cryptography import x509

    from pgbatten.certfacts import host_names

    env = cert_auth
    served = x509.load_pem_x509_certificate((env.cluster.data_dir / "pgbatten-server.crt").read_bytes())
    name = next(n for n in host_names(served) if not n[0].isdigit() and ":" not in n)
    output = _cli(
        "cert", "client", "carol", "--ca-dir", str(env.ca_dir), "--out", str(tmp_path / "carol"),
        "--pgdata", str(env.cluster.data_dir),
    )  # fmt: skip
    install = (tmp_path / "carol" / "INSTALL.md").read_text()
    assert f"host={name} port={env.port} dbname=postgres user=carol" in install
    assert f"host={name} port={env.port}" in output
    assert "warning:" not in output  # the server verifies client certificates for every user

    # The served certificate cannot be revoked by accident, and the refusal changes nothing.
    before = snapshot(env.ca_dir)
    result = CliRunner().invoke(
        main, ["cert", "revoke", f"{served.serial_number:#x}", "--ca-dir", str(env.ca_dir),
               "--pgdata", str(env.cluster.data_dir)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"is the one cluster {env.cluster.data_dir}" in result.stderr
    assert "--allow-served" in result.stderr
    assert snapshot(env.ca_dir) == before


def test_cert_client_warns_when_the_server_will_not_use_the_certificate(
    make_cluster: Callable[..., TempCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(hba=HBA)  # plaintext, passwords: certificates play no part
    ca_dir = tmp_path / "ca"
    _cli("ca", "init", "--ca-dir", str(ca_dir))
    output = _cli(
        "cert", "client", "alice", "--ca-dir", str(ca_dir), "--out", str(tmp_path / "alice"),
        "--pgdata", str(cluster.data_dir), "--server-host", "localhost",
    )  # fmt: skip
    assert f"warning: {cluster.data_dir} does not use TLS (ssl is off)" in output
    assert f"port={cluster.port}" in (tmp_path / "alice" / "INSTALL.md").read_text()
