"""Ctrl-C while `pgbatten secure` reads and plans a very large pg_hba.conf: a prompt, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbatten.cluster.temp import TempCluster

pytestmark = pytest.mark.integration


def test_ctrl_c_during_planning_stops_at_once_and_changes_nothing(
    make_cluster: Callable[..., TempCluster], tmp_path: Path
) -> None:
    cluster = make_cluster()
    # Big enough that reading and planning take seconds even on a fast machine.
    rules = "".join(
        f"host db{i % 97} user{i} 10.{i % 256}.{i // 256 % 256}.0/24 md5\n" for i in range(250_000)
    )
    cluster.hba_file.write_text("local all all peer\n" + rules)
    before = {p: p.read_bytes() for p in (cluster.hba_file, cluster.config_file)}
    listing = sorted(p.name for p in cluster.conf_dir.iterdir())
    ca_dir = tmp_path / "ca"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pgbatten.cli import main; main()",
            "secure",
            "--yes",
            "--pgdata",
            str(cluster.data_dir),
            "--ca-dir",
            str(ca_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    time.sleep(3.0)  # past start-up, into reading or planning
    assert proc.poll() is None, "secure finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 3.0, "Ctrl-C took effect late"
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "pgbatten: interrupted"
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in cluster.conf_dir.iterdir()) == listing  # no backup, no new file
    assert not ca_dir.exists()
