"""A real ``pgbatten ca init`` killed between writing ``ca.key`` and ``ca.crt`` blocks no later run.

It used to leave an orphan key that made every later ``ca init``, ``cert client`` and ``secure`` refuse
("ca.key exists but ca.crt is missing"). The key alone is a half-made CA (nothing was signed with it): the
next run that creates a CA replaces it and keeps the old key aside.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CAStore
from tests.faultlib import Run

pytestmark = pytest.mark.integration


def killed_with_only_the_key(args: list[str], ca_dir: Path, sig: signal.Signals) -> bytes:
    run = Run(args, pause="ca-key-written")
    assert run.wait_for_point("ca-key-written"), "".join(run.stderr)
    run.kill(sig, group=True)
    run.finish()
    assert (ca_dir / "ca.key").exists() and not (ca_dir / "ca.crt").exists()
    return (ca_dir / "ca.key").read_bytes()


def test_a_ca_init_killed_after_the_key_is_finished_by_the_next_one(ca_dir: Path, tmp_path: Path) -> None:
    key = killed_with_only_the_key(["ca", "init"], ca_dir, signal.SIGKILL)
    client = [
        "cert",
        "client",
        "alice",
        "--server-host",
        "db",
        "--port",
        "5432",
        "--out",
        str(tmp_path / "a"),
    ]
    # Meanwhile other commands say what is there and what finishes it, in one line, changing nothing.
    code, out, err = Run(client).finish()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "interrupted 'pgbatten ca init'" in err
    assert "run 'pgbatten ca init'" in err
    assert (ca_dir / "ca.key").read_bytes() == key
    code, out, err = Run(["ca", "init", "--json"]).finish()
    assert code == 0, err
    document = json.loads(out)
    (kept,) = ca_dir.glob("ca.key.interrupted-*")
    assert document["interrupted_key_moved_to"] == str(kept) and kept.read_bytes() == key
    assert CAStore(ca_dir).load().certificate.serial_number == int(document["serial"])
    code, out, err = Run(client).finish()
    assert code == 0, err


def test_secure_finishes_a_ca_its_own_killed_run_left_half_made(
    seed_cluster: TempCluster, ca_dir: Path
) -> None:
    args = ["secure", "--pgdata", str(seed_cluster.data_dir), "--yes", "--json"]
    key = killed_with_only_the_key(args, ca_dir, signal.SIGKILL)
    code, out, err = Run(args).finish()
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "applied" and all(p["ok"] for p in result["proofs"])
    (kept,) = ca_dir.glob("ca.key.interrupted-*")
    assert kept.read_bytes() == key
    assert CAStore(ca_dir).load()  # a whole CA, whose certificate the cluster now serves
