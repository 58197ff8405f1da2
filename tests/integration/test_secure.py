"""``pgbatten secure`` on real clusters: the seed case, idempotence, rollback, refusals, Debian layout."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgbatten.certfacts import load_pem_file as load_ca_file
from pgbatten.cli import main
from pgbatten.cluster.discover import CONF_ROOT_ENV, Cluster, discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.errors import ParseError, ValidationError, VerificationError
from pgbatten.pki import CAStore, KeyType, generate_key, private_key_pem
from pgbatten.probe import check_target
from pgbatten.secure import SecureRequest, secure
from pgbatten.secure.plan import KEY_NAME

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-app-pw"


def add_app_role(cluster: TempCluster) -> None:
    cluster.sql().query(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")


def psql_verify_full(
    cluster: TempCluster, host: str, hostaddr: str, ca: Path
) -> subprocess.CompletedProcess[str]:
    """The real libpq client, as a user would run it."""
    psql = shutil.which("psql") or str(cluster.bin.path("psql"))
    conninfo = (
        f"host={host} hostaddr={hostaddr} port={cluster.port} dbname=postgres user=app "
        f"sslmode=verify-full sslrootcert={ca}"
    )
    return subprocess.run(
        [
            psql,
            "-X",
            "-A",
            "-t",
            conninfo,
            "-c",
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": PASSWORD},
        timeout=30,
    )


def snapshot(*dirs: Path) -> dict[Path, bytes]:
    return {
        p: p.read_bytes() for d in dirs for p in sorted(d.iterdir()) if p.is_file() and p.suffix != ".pid"
    }


def test_secure_seed_cluster_end_to_end(seed_cluster: TempCluster, ca_dir: Path) -> None:
    add_app_role(seed_cluster)
    before = check_target(f"127.0.0.1:{seed_cluster.port}", timeout=5)
    assert before.plaintext_accepted is True
    assert before.grade == "F"

    # A session opened before must survive: secure reloads, it never restarts.
    session = psycopg.connect(
        host="127.0.0.1",
        port=seed_cluster.port,
        dbname="postgres",
        user="app",
        password=PASSWORD,
        sslmode="disable",
    )
    pid_before = session.execute("SELECT pg_backend_pid()").fetchone()

    result = secure(
        discover(pgdata=seed_cluster.data_dir),
        SecureRequest(hosts=("db.pgbatten.test",), ca_dir=ca_dir),
    )
    assert result.applied
    assert all(p.ok for p in result.proofs), result.proofs

    ca_cert = CAStore(ca_dir).ca_cert_path
    by_name = psql_verify_full(seed_cluster, "db.pgbatten.test", "127.0.0.1", ca_cert)
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.strip().startswith("t|TLSv1.")
    by_ip = psql_verify_full(seed_cluster, "127.0.0.1", "127.0.0.1", ca_cert)
    assert by_ip.returncode == 0, by_ip.stderr
    wrong_name = psql_verify_full(seed_cluster, "other.pgbatten.test", "127.0.0.1", ca_cert)
    assert wrong_name.returncode != 0
    assert "does not match host name" in wrong_name.stderr

    after = check_target(f"127.0.0.1:{seed_cluster.port}", ca=load_ca_file(ca_cert), timeout=5)
    assert after.plaintext_accepted is False
    assert set(after.protocols) == {"TLSv1.2", "TLSv1.3"}
    assert after.grade in ("A", "A+")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host="127.0.0.1",
            port=seed_cluster.port,
            dbname="postgres",
            user="app",
            password=PASSWORD,
            sslmode="disable",
        )

    assert session.execute("SELECT pg_backend_pid()").fetchone() == pid_before
    session.close()

    # Second run: nothing to change, and no file is written (not even a backup).
    files = snapshot(seed_cluster.data_dir)
    again = secure(
        discover(pgdata=seed_cluster.data_dir),
        SecureRequest(hosts=("db.pgbatten.test",), ca_dir=ca_dir),
    )
    assert not again.plan.changed
    assert snapshot(seed_cluster.data_dir) == files


def _plan(cluster: Cluster, ca_dir: Path) -> tuple[Any, Any]:
    from pgbatten.secure import facts
    from pgbatten.secure import plan as plan_mod

    authority = CAStore(ca_dir).load_or_init()
    return plan_mod.plan_secure(facts.read_state(cluster), SecureRequest(ca_dir=ca_dir), authority), authority


def test_a_key_that_does_not_fit_the_certificate_is_refused_before_the_reload(
    seed_cluster: TempCluster, ca_dir: Path
) -> None:
    # Found by fault injection: a broken pair used to be noticed only by the reload, costing every TCP client
    # an outage until the rollback. It is now loaded the way PostgreSQL loads it before any reload.
    from pgbatten.secure import apply as apply_mod

    cluster = discover(pgdata=seed_cluster.data_dir)
    files = snapshot(seed_cluster.data_dir)
    plan, _ = _plan(cluster, ca_dir)
    wrong_key = private_key_pem(generate_key(KeyType.ECDSA_P256))
    broken = dataclasses.replace(
        plan,
        changes=tuple(
            dataclasses.replace(c, new=wrong_key) if c.path.name == KEY_NAME else c for c in plan.changes
        ),
    )
    loaded = seed_cluster.sql().value("SELECT pg_conf_load_time()")

    def prove() -> list[Any]:
        raise AssertionError("never reached: the pair is checked before the reload")

    with pytest.raises(ValidationError, match="cannot be loaded together"):
        apply_mod.apply_plan(cluster, broken, prove=prove, log=lambda _m: None)

    restored = {p: b for p, b in snapshot(seed_cluster.data_dir).items() if ".pgbatten-" not in p.name}
    assert restored == files
    assert seed_cluster.sql().value("SELECT pg_conf_load_time()") == loaded  # never reloaded
    assert check_target(f"127.0.0.1:{seed_cluster.port}", timeout=5).plaintext_accepted is True
    assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "off"


def test_rollback_when_a_proof_fails_after_the_reload(seed_cluster: TempCluster, ca_dir: Path) -> None:
    from pgbatten.secure import apply as apply_mod
    from pgbatten.secure.verify import Proof

    cluster = discover(pgdata=seed_cluster.data_dir)
    files = snapshot(seed_cluster.data_dir)
    plan, _ = _plan(cluster, ca_dir)

    def prove() -> list[Proof]:
        # The new configuration is in effect here (the reload happened); a failed outside check must undo it.
        assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "on"
        return [Proof("verify-full login by name db.test", False, "tlsv1 alert unknown ca")]

    with pytest.raises(VerificationError, match="rolled back"):
        apply_mod.apply_plan(cluster, plan, prove=prove, log=lambda _m: None)

    restored = {p: b for p, b in snapshot(seed_cluster.data_dir).items() if ".pgbatten-" not in p.name}
    assert restored == files
    # Back as it was: plaintext still accepted (ssl is off again), the server answers.
    assert check_target(f"127.0.0.1:{seed_cluster.port}", timeout=5).plaintext_accepted is True
    assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "off"


def test_broken_hba_is_refused_and_nothing_changes(seed_cluster: TempCluster, ca_dir: Path) -> None:
    with seed_cluster.hba_file.open("a") as hba:
        hba.write("host all all 10.0.0.0/33 md5\n")
    files = snapshot(seed_cluster.data_dir)
    with pytest.raises(ParseError) as info:
        secure(discover(pgdata=seed_cluster.data_dir), SecureRequest(ca_dir=ca_dir))
    assert info.value.lineno == 8  # the line appended after the seed's seven
    assert str(seed_cluster.hba_file) in str(info.value)
    assert snapshot(seed_cluster.data_dir) == files
    assert seed_cluster.sql().value("SELECT 1") == "1"


def test_cli_errors_are_one_line(seed_cluster: TempCluster, ca_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad_host = runner.invoke(
        main, ["secure", "--pgdata", str(seed_cluster.data_dir), "--host", "bad host", "-y"]
    )
    assert bad_host.exit_code == 2
    assert bad_host.output.count("\n") == 1 and "invalid host name" in bad_host.output
    missing = runner.invoke(main, ["secure", "--pgdata", str(tmp_path / "nope"), "-y"])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output and "Traceback" not in missing.output


def test_cli_dry_run_shows_diff_and_touches_nothing(seed_cluster: TempCluster, ca_dir: Path) -> None:
    files = snapshot(seed_cluster.data_dir)
    result = CliRunner().invoke(main, ["secure", "--pgdata", str(seed_cluster.data_dir), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "+hostssl all             all             127.0.0.1/32            md5" in result.output
    assert "+ssl = on" in result.output
    assert "Dry run: nothing was written." in result.output
    assert snapshot(seed_cluster.data_dir) == files
    assert not ca_dir.exists()  # not even the CA is created by a dry run


def test_tls13_only_and_alter_system_override(seed_cluster: TempCluster, ca_dir: Path) -> None:
    # ALTER SYSTEM writes postgresql.auto.conf, which PostgreSQL reads last: an edit of postgresql.conf
    # alone would be silently ineffective.
    seed_cluster.sql().query("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'")
    result = secure(
        discover(pgdata=seed_cluster.data_dir),
        SecureRequest(ca_dir=ca_dir, tls_min="1.3"),
    )
    assert all(p.ok for p in result.proofs)
    assert "TLSv1.3" in (seed_cluster.data_dir / "postgresql.auto.conf").read_text()
    after = check_target(f"127.0.0.1:{seed_cluster.port}", timeout=5)
    assert after.protocols == ("TLSv1.3",)


def test_debian_layout_with_config_outside_pgdata(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import SEED_HBA

    cluster = make_cluster(hba=SEED_HBA, config_outside_pgdata=True)
    root = tmp_path / "etc-postgresql"
    (root / str(cluster.bin.major)).mkdir(parents=True)
    (root / str(cluster.bin.major) / "main").symlink_to(cluster.conf_dir)
    monkeypatch.setenv(CONF_ROOT_ENV, str(root))
    runner = CliRunner()
    result = runner.invoke(main, ["secure", "--cluster", f"{cluster.bin.major}/main", "--yes"])
    assert result.exit_code == 0, result.output
    assert (cluster.conf_dir / "pgbatten-server.crt").exists()
    assert not (cluster.data_dir / "pgbatten-server.crt").exists()
    key_mode = (cluster.conf_dir / KEY_NAME).stat().st_mode & 0o777
    assert key_mode == 0o600
    assert (cluster.conf_dir / KEY_NAME).stat().st_uid == cluster.owner.uid
    assert check_target(f"127.0.0.1:{cluster.port}", timeout=5).plaintext_accepted is False


def test_check_cli_tells_before_and_after_apart(seed_cluster: TempCluster, ca_dir: Path) -> None:
    import json

    runner = CliRunner()
    target = f"127.0.0.1:{seed_cluster.port}"
    before = runner.invoke(main, ["check", target, "--json"])
    assert before.exit_code == 1  # plaintext accepted is a high-severity finding
    [b] = json.loads(before.output)
    assert b["plaintext_accepted"] is True and b["protocols"] == [] and b["grade"] == "F"
    assert "plaintext-accepted" in {f["id"] for f in b["findings"]}

    secured = runner.invoke(main, ["secure", "--pgdata", str(seed_cluster.data_dir), "--yes"])
    assert secured.exit_code == 0, secured.output

    after = runner.invoke(main, ["check", target, "--json", "--ca", str(CAStore(ca_dir).ca_cert_path)])
    assert after.exit_code == 0, after.output
    [a] = json.loads(after.output)
    assert a["plaintext_accepted"] is False
    assert "TLSv1.3" in a["protocols"] and "TLSv1.2" in a["protocols"]
    assert b["certificate"] is None
    not_after = dt.datetime.fromisoformat(a["certificate"]["not_after"].replace("Z", "+00:00"))
    assert dt.timedelta(days=360) < not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=366)
    assert a["grade"] in ("A", "A+")


def test_secure_refuses_a_stopped_server(make_cluster: Callable[..., TempCluster], ca_dir: Path) -> None:
    cluster = make_cluster()
    cluster.stop()
    files = snapshot(cluster.data_dir)
    result = CliRunner().invoke(main, ["secure", "--pgdata", str(cluster.data_dir), "--yes"])
    assert result.exit_code == 2
    assert "is not running" in result.output
    assert snapshot(cluster.data_dir) == files


def test_socket_only_server_is_refused_before_writing(
    make_cluster: Callable[..., TempCluster], ca_dir: Path
) -> None:
    cluster = make_cluster(settings={"listen_addresses": "''"})
    files = snapshot(cluster.data_dir)
    result = CliRunner().invoke(
        main, ["secure", "--pgdata", str(cluster.data_dir), "--yes", "--host", "db.test"]
    )
    assert result.exit_code == 2
    assert "takes no TCP connections" in result.output
    assert snapshot(cluster.data_dir) == files


def test_rollback_when_the_proofs_cannot_run(seed_cluster: TempCluster, ca_dir: Path) -> None:
    from pgbatten.secure import apply as apply_mod

    cluster = discover(pgdata=seed_cluster.data_dir)
    files = snapshot(seed_cluster.data_dir)
    plan, _ = _plan(cluster, ca_dir)

    def interrupted() -> list[Any]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply_mod.apply_plan(cluster, plan, prove=interrupted, log=lambda _m: None)
    restored = {p: b for p, b in snapshot(seed_cluster.data_dir).items() if ".pgbatten-" not in p.name}
    assert restored == files
    assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "off"


def test_listen_on_localhost_proves_exactly_what_is_bound(
    make_cluster: Callable[..., TempCluster], ca_dir: Path
) -> None:
    # Found on a real Debian cluster: /etc/hosts maps localhost to 127.0.0.1 only, so PostgreSQL never
    # binds ::1, and a proof that assumed it did rolled a correct change back.
    from tests.conftest import SEED_HBA

    cluster = make_cluster(hba=SEED_HBA, settings={"listen_addresses": "'localhost'"})
    result = secure(discover(pgdata=cluster.data_dir), SecureRequest(ca_dir=ca_dir))
    assert all(p.ok for p in result.proofs), result.proofs
    proved = {p.what.rsplit(" ", 1)[-1] for p in result.proofs if p.what.startswith("plaintext refused at")}
    assert f"127.0.0.1:{cluster.port}" in proved


def test_without_yes_and_without_a_terminal_nothing_is_applied(
    seed_cluster: TempCluster, ca_dir: Path
) -> None:
    files = snapshot(seed_cluster.data_dir)
    result = CliRunner().invoke(main, ["secure", "--pgdata", str(seed_cluster.data_dir)])
    assert result.exit_code == 2
    assert "pass --yes to apply, or --dry-run" in result.output
    assert snapshot(seed_cluster.data_dir) == files
    assert not ca_dir.exists()
