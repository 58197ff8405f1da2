"""What the operating system can do to a run: close its output pipe, mount its files read-only, deny a
directory. Each ends in one line (or, for the pipe, quietly) and changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbatten.cluster.temp import TempCluster
from tests.conftest import SEED_HBA

pytestmark = pytest.mark.integration

PGBATTEN = [sys.executable, "-c", "from pgbatten.cli import main; main()"]


def test_a_closed_pipe_ends_quietly(make_cluster: Callable[..., TempCluster]) -> None:
    # Enough rules that the plan's diff is far larger than a pipe's buffer.
    rules = "".join(f"host all user{i} 10.{i // 250}.{i % 250}.0/24 scram-sha-256\n" for i in range(700))
    cluster = make_cluster(hba=SEED_HBA + rules)
    process = subprocess.Popen(
        [*PGBATTEN, "secure", "--pgdata", str(cluster.data_dir), "-n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # what `| head -1` does
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert err == ""


def test_a_read_only_mount_is_one_line_and_changes_nothing(seed_cluster: TempCluster, ca_dir: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a mount namespace with a read-only bind mount")
    before = {p.name: p.read_bytes() for p in seed_cluster.data_dir.glob("*.conf")}
    target = str(seed_cluster.data_dir)
    script = (
        f"mount --bind {target} {target} && mount -o remount,ro,bind {target} && exec "
        + " ".join(f"'{a}'" for a in PGBATTEN)
        + f" secure --pgdata {target} --yes"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=180
    )
    if "Operation not permitted" in done.stderr and "mount" in done.stderr:
        pytest.skip(f"no mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("pgbatten: error: ")
    assert "Read-only file system" in done.stderr and target in done.stderr
    assert "internal error" not in done.stderr
    assert {p.name: p.read_bytes() for p in seed_cluster.data_dir.glob("*.conf")} == before
    assert not ca_dir.exists()  # the CA made for this run went with it


def test_a_directory_the_user_cannot_enter_is_named(seed_cluster: TempCluster, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run pgbatten as the cluster's owner next to a root-only directory")
    import json

    from click.testing import CliRunner

    from pgbatten.cli import (
        main,
        secure_cmd,  # noqa: F401 - imported before the fork drops the rights to read it
    )
    from pgbatten.cluster import discover  # noqa: F401
    from pgbatten.secure import run  # noqa: F401

    locked = tmp_path / "root-only"
    (locked / "ca").mkdir(parents=True)
    locked.chmod(0o700)
    owner = seed_cluster.owner
    args = ["secure", "--pgdata", str(seed_cluster.data_dir), "--ca-dir", str(locked / "ca"), "-n"]
    # A child that is the cluster's owner (root enters any directory); this checkout may not be readable
    # by that user, so it runs the code already imported here instead of starting a new interpreter.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(owner.gid)
            os.setuid(owner.uid)
            os.chdir("/")
            result = CliRunner().invoke(main, args)
            os.write(write_end, json.dumps([result.exit_code, result.stderr]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    code, stderr = json.loads(report)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("pgbatten: error: ")
    assert "Permission denied" in stderr and str(tmp_path) in stderr
