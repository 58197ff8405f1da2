"""Every PostgreSQL version we can get, for real: the same commands on 15 (Debian's) and 17 (a wheel built
with OpenSSL), direct SSL measured on real servers, PostgreSQL 18's parser judging the settings we write for
it, a running server's own binaries, and the official Docker image's layout.

Tests marked ``pg_matrix`` run once per installation found (see tests/conftest.py); the others pick the
version they need and are skipped, saying why, where it cannot be had.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from pgbatten.cli import main
from pgbatten.cluster.binaries import PgBinaries
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CertificateAuthority
from pgbatten.secure.facts import read_state
from pgbatten.secure.plan import SecureRequest, plan_secure
from tests.conftest import DOCKER_HBA_LAST, SEED_HBA, lay_out_like_docker, newest_with

pytestmark = pytest.mark.integration

SELECT_SSL = "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def cli(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, f"pgbatten {' '.join(args)}: {result.output}"
    return result


def psql(binaries: PgBinaries, params: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """This installation's own psql (its own libpq), as a user would run it, no password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    info = " ".join(f"{k}={v}" for k, v in params.items())
    return subprocess.run(
        [str(binaries.psql()), "-X", "-A", "-t", "-w", info, "-c", SELECT_SSL],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def bundle_params(port: int, ca: Path, bundle: Path, user: str, **extra: str) -> dict[str, str]:
    return {
        "host": "localhost",
        "port": str(port),
        "dbname": "postgres",
        "user": user,
        "sslmode": "verify-full",
        "sslrootcert": str(ca),
        "sslcert": str(bundle / "postgresql.crt"),
        "sslkey": str(bundle / "postgresql.key"),
        "connect_timeout": "10",
        **extra,
    }


# -- the same commands on every version --------------------------------------------------------------------


@pytest.mark.pg_matrix
def test_secure_check_client_certificate_and_revocation(
    seed_cluster: TempCluster, ca_dir: Path, tmp_path: Path
) -> None:
    cluster = seed_cluster
    major = cluster.major
    direct = major >= 17
    data = str(cluster.data_dir)

    # secure, found by the running server's own binaries (the 17 wheel is on no PATH), proving
    # sslnegotiation=direct where the server takes it.
    # --allow-lockout: the seed's only TCP role is the superuser, which needs no certificate here.
    out = cli("secure", "--pgdata", data, "--client-auth", "cert", "--allow-lockout", "--yes").output
    assert "rolled back" not in out
    assert ("with sslnegotiation=direct" in out) is direct, out
    assert ("sslnegotiation=direct'" in out) is direct  # the connection string offered to clients
    if direct:
        assert "libpq 17 or newer" in out

    # check, the full audit from outside: direct SSL reported on 17, not on 15.
    checked = cli("check", f"127.0.0.1:{cluster.port}", "--ca", str(ca_dir / "ca.crt"), "--json").output
    (report,) = json.loads(checked)
    assert report["mode"] == "full"
    assert report["plaintext_accepted"] is False
    assert report["direct_ssl"] is direct
    assert ("direct-ssl-supported" in {f["id"] for f in report["findings"]}) is direct
    assert report["grade"] == "A+", report["findings"]

    # cert client: the bundle works with this version's own psql, and by direct SSL where it is offered.
    cluster.sql().query("CREATE ROLE alice LOGIN")
    bundle = tmp_path / "alice"
    cli("cert", "client", "alice", "--out", str(bundle), "--pgdata", data, "--server-host", "localhost",
        "--p12-password-file", str(_secret(tmp_path)))  # fmt: skip
    install = (bundle / "INSTALL.md").read_text()
    assert ("sslnegotiation=direct" in install) is direct
    ca = ca_dir / "ca.crt"
    login = psql(cluster.bin, bundle_params(cluster.port, ca, bundle, "alice"))
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "t|alice"
    if direct:
        # The wheel's psql is libpq 17: the line INSTALL.md offers, as a libpq 17 client runs it.
        login = psql(cluster.bin, bundle_params(cluster.port, ca, bundle, "alice", sslnegotiation="direct"))
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == "t|alice"

    # cert revoke installs the CRL by reload: alice is refused by this version's server.
    out = cli("cert", "revoke", "alice", "--pgdata", data).output
    assert "refused as revoked" in out
    refused = psql(cluster.bin, bundle_params(cluster.port, ca, bundle, "alice"))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stderr, refused.stderr
    assert cluster.sql().value("SELECT current_setting('ssl_crl_file') <> ''") == "t"


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "p12pw"
    path.write_text("p12-secret-42\n")
    return path


# -- direct SSL, measured on real servers ---------------------------------------------------------------


def test_direct_ssl_refused_by_15_accepted_by_17(
    make_cluster: Callable[..., TempCluster], pg_binaries: PgBinaries, ca_dir: Path
) -> None:
    """libpq's own verdict, not our probe's: a direct-SSL login fails on 16 and older, works on 17+."""
    pg17 = newest_with(17)
    older = pg_binaries if pg_binaries.major < 17 else None
    for binaries in filter(None, (older, pg17)):
        cluster = make_cluster(binaries=binaries, hba=SEED_HBA)
        cli("secure", "--pgdata", str(cluster.data_dir), "--ca-dir", str(ca_dir), "--yes")
        cluster.sql().query("CREATE ROLE bob LOGIN PASSWORD 'bob-pw-1'")
        params = {
            "host": "127.0.0.1",
            "port": str(cluster.port),
            "dbname": "postgres",
            "user": "bob",
            "password": "bob-pw-1",
            "sslmode": "verify-full",
            "sslrootcert": str(ca_dir / "ca.crt"),
            "sslnegotiation": "direct",
            "connect_timeout": "10",
        }
        try:
            with psycopg.connect(**params) as conn:  # type: ignore[arg-type]
                row = conn.execute(SELECT_SSL).fetchone()
            outcome = f"{row}"
        except psycopg.OperationalError as exc:
            outcome = f"refused: {exc}"
        if binaries.major >= 17:
            assert outcome == "(True, 'bob')", outcome
        else:
            assert outcome.startswith("refused"), outcome


# -- a running server's own binaries ------------------------------------------------------------------


def test_a_running_server_names_its_own_binaries(
    make_cluster: Callable[..., TempCluster], ca_dir: Path
) -> None:
    pg17 = newest_with(17)
    cluster = make_cluster(binaries=pg17, hba=SEED_HBA)
    data = str(cluster.data_dir)
    found = discover(pgdata=cluster.data_dir)
    assert found.binaries == pg17  # from /proc/PID/exe, wherever the wheel is
    assert found.sql().value("SELECT current_setting('server_version_num')::int / 10000") == "17"

    cluster.stop()
    stopped = discover(pgdata=cluster.data_dir, pg_bindir=pg17.bindir)
    assert stopped.binaries == pg17 and stopped.running is None
    # Whether or not its binaries can be found, a stopped cluster is reported as stopped.
    out = cli("secure", "--pgdata", data, "--yes", code=2).output
    assert "is not running" in out, out

    other = next((b for b in _installations() if b.major != 17), None)
    if other is not None:
        out = cli("secure", "--pgdata", data, "--pg-bindir", str(other.bindir), code=2).output
        assert out.strip() == (
            f"pgbatten: error: --pg-bindir {other.bindir} holds PostgreSQL {other.major},"
            " the cluster is PostgreSQL 17"
        )
    out = cli("secure", "--pgdata", data, "--pg-bindir", str(cluster.root), code=2).output
    assert out.strip() == (
        f"pgbatten: error: --pg-bindir {cluster.root}: no PostgreSQL server binaries there"
        " (postgres, initdb, pg_ctl)"
    )


def _installations() -> tuple[PgBinaries, ...]:
    from tests.conftest import installations

    return installations()


# -- PostgreSQL 18 judges the settings we write for it ---------------------------------------------------


def test_postgresql_18_accepts_every_setting_secure_writes_for_it(
    make_cluster: Callable[..., TempCluster],
) -> None:
    """The postgresql.conf lines ``secure`` plans for 18, parsed by 18 itself (the wheel has no SSL, so
    ``ssl`` stays off; every other line must be accepted and applied as written)."""
    pg18 = newest_with(18, ssl=False)
    cluster = make_cluster(binaries=pg18, hba=SEED_HBA)
    plan = plan_secure(read_state(cluster.cluster), SecureRequest(), CertificateAuthority.create())
    assert "ssl_groups" in plan.settings and "ssl_ecdh_curve" not in plan.settings
    wanted = {name: value for name, value in plan.settings.items() if name != "ssl"}
    (conf_change,) = [c for c in plan.changes if c.path == cluster.config_file]
    planned = conf_mod.parse_conf(conf_change.new.decode(), cluster.config_file)
    without_ssl, _ = conf_mod.set_values(planned, {"ssl": "off"})
    cluster.config_file.write_text(conf_mod.render(without_ssl))

    rows = cluster.sql().query(
        "SELECT name, setting, applied, coalesce(error, '') FROM pg_file_settings"
        " WHERE sourcefile = :'conf' ORDER BY seqno",
        {"conf": str(cluster.config_file)},
    )
    last = {name: (setting, applied, error) for name, setting, applied, error in rows}
    for name, value in wanted.items():
        assert name in last, f"{name} is not in {cluster.config_file}"
        assert last[name] == (value, "t", ""), (name, last[name])
    assert cluster.sql().value("SELECT pg_reload_conf()") == "t"
    in_effect = {
        name: setting
        for name, setting in cluster.sql().query(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(string_to_array(:'names', ','))",
            {"names": ",".join(wanted)},
        )
    }
    assert in_effect == wanted


# -- the official Docker image's layout -----------------------------------------------------------------


@pytest.mark.pg_matrix
def test_docker_layout_becomes_tls_only_with_a_guard_above_every_tcp_rule(
    docker_cluster: TempCluster, ca_dir: Path
) -> None:
    cluster = docker_cluster
    assert cluster.sql().value("SHOW listen_addresses") == "*"
    assert cluster.hba_file.parent == cluster.data_dir == cluster.config_file.parent

    out = cli("secure", "--pgdata", str(cluster.data_dir), "--yes").output
    assert "rolled back" not in out
    assert cluster.sql().value("SHOW ssl") == "on"
    assert cluster.sql().value("SHOW listen_addresses") == "*"

    # The server's own reading of the new pg_hba.conf: plaintext TCP rejected before any TCP rule.
    rules = cluster.sql().query(
        "SELECT type, database::text, user_name::text, coalesce(address, ''), coalesce(netmask, ''),"
        " auth_method FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number"
    )
    tcp = [r for r in rules if r[0] != "local"]
    guards = [r for r in tcp if r[0] == "hostnossl"]
    assert {r[3] for r in guards} == {"0.0.0.0", "::"}  # noqa: S104 - read from pg_hba, nothing is bound
    assert {r[5] for r in guards} == {"reject"}
    assert tcp[: len(guards)] == guards, tcp
    assert {r[0] for r in tcp[len(guards) :]} == {"hostssl"}
    assert tcp[-1] == ("hostssl", "{all}", "{all}", "all", "", "scram-sha-256")
    assert cluster.hba_file.read_text().rstrip().endswith(DOCKER_HBA_LAST.replace("host", "hostssl", 1))

    # From outside: every listening address refuses plaintext and serves the installed certificate.
    for host in ("127.0.0.1", "::1") if cluster.listen_ipv6 else ("127.0.0.1",):
        target = f"[{host}]:{cluster.port}" if ":" in host else f"{host}:{cluster.port}"
        checked = cli("check", target, "--ca", str(ca_dir / "ca.crt"), "--quick", "--json").output
        (report,) = json.loads(checked)
        assert report["plaintext_accepted"] is False
        assert report["verify_full"][host]["ok"] is True, report["verify_full"]
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host="127.0.0.1", port=cluster.port, dbname="postgres", user="postgres", sslmode="disable",
            connect_timeout=10,
        )  # fmt: skip


@dataclass
class Container:
    """A cluster whose server runs in a PID namespace of its own."""

    cluster: TempCluster
    unshare: subprocess.Popen[bytes]

    def kill(self) -> None:
        """``docker kill``: SIGKILL to the namespace's PID 1, which takes every backend with it.

        Sent to the server itself: unshare's --kill-child does not survive the switch to the owner's uid.
        """
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            for pid in children.read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.unshare.wait(timeout=60)
        if self.unshare.poll() is None:
            self.unshare.kill()
            self.unshare.wait(timeout=60)


@pytest.fixture
def container(make_cluster: Callable[..., TempCluster]) -> Iterator[Container]:
    """A Docker-layout cluster whose postmaster runs in a PID namespace of its own, as PID 1, the way a
    container's does: seen from here, ``postmaster.pid`` names a process that is not the server."""
    cluster = make_cluster(start=False)
    lay_out_like_docker(cluster)
    owner = cluster.owner
    switch = ["setpriv", f"--reuid={owner.uid}", f"--regid={owner.gid}", "--init-groups"]
    argv = ["unshare", "--pid", "--fork", "--"]
    argv += [
        *(switch if os.geteuid() == 0 else []),
        str(cluster.bin.path("postgres")),
        "-D",
        str(cluster.data_dir),
    ]
    with cluster.log_file.open("ab") as log:
        unshare = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/"
        )
    running = Container(cluster, unshare)
    try:
        deadline = time.monotonic() + 60
        while cluster.cluster.running is None:
            if unshare.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"cannot start a server in a PID namespace of its own here: {cluster.log_tail()}")
            time.sleep(0.1)
        yield running
    finally:
        running.kill()


def test_a_container_seen_from_the_host(container: Container, ca_dir: Path) -> None:
    cluster = container.cluster
    assert (cluster.data_dir / "postmaster.pid").read_text().splitlines()[0] == "1"  # the container's PID
    found = discover(pgdata=cluster.data_dir)
    assert found.running is not None and not found.running.local and found.running.pid == 1
    assert found.running.executable() is None  # /proc/1/exe here is another program
    assert found.sql().value("SELECT pg_backend_pid() <> 1") == "t"

    out = cli("secure", "--pgdata", str(cluster.data_dir), "--yes").output
    assert "rolled back" not in out
    assert cluster.sql().value("SHOW ssl") == "on"
    checked = cli("check", f"127.0.0.1:{cluster.port}", "--ca", str(ca_dir / "ca.crt"), "--quick", "--json")
    (report,) = json.loads(checked.output)
    assert report["plaintext_accepted"] is False
    assert report["verify_full"]["127.0.0.1"]["ok"] is True

    # A killed container leaves postmaster.pid behind: that is a stopped cluster, not one running elsewhere.
    container.kill()
    assert (cluster.data_dir / "postmaster.pid").exists()
    assert discover(pgdata=cluster.data_dir).running is None
    assert "is not running" in cli("secure", "--pgdata", str(cluster.data_dir), "--yes", code=2).output
