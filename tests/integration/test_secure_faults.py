"""A real ``pgbatten secure`` killed at chosen instants, and concurrent runs.

Each case pauses a real run at a named step (``pgbatten.faults``) and kills it there: SIGKILL or SIGTERM, the
process or its whole group, including the instant after the files changed on disk and before the reload.
Whatever the kill, no file is half-written, a SIGTERM rolls back like Ctrl-C (exit 143), and the next run
ends TLS-only and proved, leaving no temp file, no throwaway role and no unrecorded served certificate.
The long sweep over every step and timed kills is ``scripts/fault_sweep.py``.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from pgbatten.cluster.temp import TempCluster
from pgbatten.pgconf import postgresql_conf as conf_mod
from pgbatten.pki import CAStore
from pgbatten.probe import check_target
from pgbatten.secure.plan import CERT_NAME
from tests.faultlib import Run

pytestmark = pytest.mark.integration


def secure_args(cluster: TempCluster, *extra: str) -> list[str]:
    return ["secure", "--pgdata", str(cluster.data_dir), "--yes", "--json", *extra]


def files_of(cluster: TempCluster) -> dict[str, bytes]:
    """Every regular file of the configuration directory, backups aside."""
    return {
        p.name: p.read_bytes()
        for p in cluster.conf_dir.iterdir()
        if p.is_file() and ".pgbatten-" not in p.name and p.suffix != ".pid"
    }


def leftovers(cluster: TempCluster) -> list[str]:
    temps = [p.name for p in cluster.conf_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    roles = cluster.sql().query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgbatten_verify_%'")
    return temps + [str(r[0]) for r in roles]


def assert_secured_and_proved(cluster: TempCluster, ca_dir: Path) -> dict[str, object]:
    """A run without faults ends TLS-only, proved, clean, with the served certificate in the inventory."""
    code, out, err = Run(secure_args(cluster)).finish()
    assert code == 0, err
    result: dict[str, object] = json.loads(out)
    assert result["status"] in ("applied", "unchanged", "repaired"), result
    proofs = result["proofs"]
    assert isinstance(proofs, list) and proofs and all(p["ok"] for p in proofs), proofs
    assert check_target(f"127.0.0.1:{cluster.port}", timeout=5).plaintext_accepted is False
    assert cluster.sql().value("SELECT current_setting('ssl')") == "on"
    assert leftovers(cluster) == []
    conf_mod.load_conf_tree(cluster.config_file)  # whole, parseable files
    served = x509.load_pem_x509_certificate((cluster.conf_dir / CERT_NAME).read_bytes())
    assert served.serial_number in {e.serial for e in CAStore(ca_dir).entries()}
    return result


CASES = [
    # The trap: files say TLS, the server still runs plaintext; the re-run must reload and prove.
    pytest.param("written", signal.SIGKILL, False, "repaired", id="sigkill-after-write-before-reload"),
    pytest.param("first-file", signal.SIGKILL, True, "applied", id="sigkill-group-half-written"),
    pytest.param("validated", signal.SIGTERM, True, "applied", id="sigterm-group-before-reload"),
    # Found by the sweep: a signal right after the reload, before the proofs began, was not rolled back.
    pytest.param("reloaded", signal.SIGTERM, True, "applied", id="sigterm-group-after-reload"),
    pytest.param("locked", signal.SIGTERM, False, "applied", id="sigterm-before-reading"),
    pytest.param("proving", signal.SIGTERM, False, "applied", id="sigterm-while-proving"),
    pytest.param("proving", signal.SIGKILL, False, "unchanged", id="sigkill-while-proving"),
    # Found by the sweep: after the last proof the change is complete, and the new CA it was signed by must
    # stay with it (it used to be removed as if the run had been rolled back).
    pytest.param("proved", signal.SIGTERM, False, "unchanged", id="sigterm-after-the-last-proof"),
]


@pytest.mark.parametrize(("point", "sig", "group", "rerun"), CASES)
def test_a_killed_secure_is_finished_by_the_next_run(
    seed_cluster: TempCluster, ca_dir: Path, point: str, sig: signal.Signals, group: bool, rerun: str
) -> None:
    before = files_of(seed_cluster)
    run = Run(secure_args(seed_cluster), pause=point)
    assert run.wait_for_point(point), "".join(run.stderr)
    run.kill(sig, group=group)
    code, _, err = run.finish()
    if point == "proved":
        assert code == 143, err
        assert files_of(seed_cluster) != before and (ca_dir / "ca.crt").exists()
    elif sig == signal.SIGTERM:
        # Unwinds like Ctrl-C: everything restored (and reloaded), the CA it created removed, exit 143.
        assert code == 143, err
        assert "terminated by signal 15" in err
        assert files_of(seed_cluster) == before
        assert seed_cluster.sql().value("SELECT current_setting('ssl')") == "off"
        assert not ca_dir.exists()
    else:
        assert code == -signal.SIGKILL
    result = assert_secured_and_proved(seed_cluster, ca_dir)
    assert result["status"] == rerun


def test_concurrent_runs_wait_for_each_other_or_refuse(seed_cluster: TempCluster, tmp_path: Path) -> None:
    release = tmp_path / "release"
    first = Run(secure_args(seed_cluster), pause="planned", release=release)
    assert first.wait_for_point("planned"), "".join(first.stderr)
    # The first run holds the cluster from before it read the files: a second one refuses after its wait...
    impatient = Run(secure_args(seed_cluster, "--lock-wait", "0.5"))
    code, out, err = impatient.finish()
    assert code == 2 and out == ""
    assert "another pgbatten run is changing cluster" in err and err.count("\n") == 1
    # ...or, waiting long enough, runs after it on what the first one wrote, and finds nothing to change.
    patient = Run(secure_args(seed_cluster, "--lock-wait", "120"))
    release.touch()
    code, out, err = first.finish()
    assert code == 0, err
    assert json.loads(out)["status"] == "applied"
    code, out, err = patient.finish()
    assert code == 0, err
    assert json.loads(out)["status"] == "unchanged"


def test_a_revocation_is_not_undone_by_a_concurrent_secure(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    # Found by fault injection: a secure that passed its "unchanged since the plan" check wrote a
    # postgresql.conf computed before a concurrent `cert revoke` installed its CRL; both exited 0, and the
    # revoked client logged in again. The lock now spans plan to proof for both.
    from tests.conftest import SEED_HBA

    cluster = make_cluster(hba=SEED_HBA)
    code, _, err = Run(secure_args(cluster, "--client-auth", "cert", "--allow-lockout")).finish()
    assert code == 0, err
    cluster.sql().query("CREATE ROLE alice LOGIN")
    bundle = ["cert", "client", "alice", "--out", str(tmp_path / "alice"), "--pgdata", str(cluster.data_dir)]
    code, _, err = Run(bundle).finish()
    assert code == 0, err

    release = tmp_path / "release"
    # A secure that rewrites postgresql.conf (TLS 1.3 now), paused after planning, holding the cluster.
    changing = Run(
        secure_args(cluster, "--client-auth", "cert", "--tls-min", "1.3"), pause="planned", release=release
    )
    assert changing.wait_for_point("planned"), "".join(changing.stderr)
    revoke = Run(["cert", "revoke", "alice", "--pgdata", str(cluster.data_dir)])
    time.sleep(2)
    assert revoke.process.poll() is None  # revoked in the CA, now waiting for the cluster's lock
    release.touch()
    code, _, err = changing.finish()
    assert code == 0, err
    code, out, err = revoke.finish()
    assert code == 0, out + err
    effective = conf_mod.effective_settings(conf_mod.load_conf_tree(cluster.config_file))
    assert effective["ssl_crl_file"].value.endswith("pgbatten-ca.crl")
    assert effective["ssl_min_protocol_version"].value == "TLSv1.3"
    assert cluster.sql().value("SELECT current_setting('ssl_crl_file')") != ""
