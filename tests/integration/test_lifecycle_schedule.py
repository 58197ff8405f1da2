"""``pgbatten schedule`` writes units systemd accepts, and the command line in them really renews: the test
runs the unit's ExecStart itself, with an environment as bare as systemd's."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.lifecycle.schedule import systemd_unquote
from pgbatten.secure import SecureRequest, secure

pytestmark = pytest.mark.integration


def test_schedule_writes_units_whose_command_renews(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    cluster = make_cluster()
    secure(
        discover(pgdata=cluster.data_dir),
        SecureRequest(ca_dir=ca_dir),
    )
    units = tmp_path / "units"
    result = CliRunner().invoke(
        main,
        ["schedule", "--pgdata", str(cluster.data_dir), "--ca-dir", str(ca_dir), "--unit-dir", str(units)],
    )
    assert result.exit_code == 0, result.output
    service = (units / "pgbatten-renew.service").read_text()
    timer = (units / "pgbatten-renew.timer").read_text()
    assert "OnCalendar=daily" in timer
    if shutil.which("systemd-analyze"):
        assert "systemd-analyze verify: ok" in result.output
        verified = subprocess.run(
            [
                "systemd-analyze",
                "verify",
                str(units / "pgbatten-renew.service"),
                str(units / "pgbatten-renew.timer"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stderr
    line = next(ln for ln in service.splitlines() if ln.startswith("ExecStart="))
    argv = systemd_unquote(line.removeprefix("ExecStart="))
    assert Path(argv[0]).is_absolute()
    assert argv[argv.index("--pgdata") + 1] == str(cluster.data_dir)
    assert argv[argv.index("--ca-dir") + 1] == str(ca_dir)
    # The CA belongs to whoever runs the tests, who also owns the cluster or (root) writes as its owner:
    # the job runs as that account, so the unit names no other user.
    assert not any(ln.startswith("User=") for ln in service.splitlines())

    # What systemd gives a service: no HOME, no PG*, a minimal PATH, / as the working directory.
    bare = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    run = subprocess.run(argv, capture_output=True, text=True, env=bare, cwd="/", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Nothing is due: nothing was written." in run.stdout

    # A second schedule with other contents under the same name is refused; the same one is fine.
    again = CliRunner().invoke(
        main,
        ["schedule", "--pgdata", str(cluster.data_dir), "--ca-dir", str(ca_dir), "--unit-dir", str(units)],
    )
    assert again.exit_code == 0, again.output
    other = CliRunner().invoke(
        main,
        [
            "schedule",
            "--pgdata",
            str(cluster.data_dir),
            "--ca-dir",
            str(ca_dir),
            "--unit-dir",
            str(units),
            "--all",
        ],
    )
    assert other.exit_code == 2 and "says something else" in other.output


def test_schedule_cron_prints_a_line(make_cluster: Callable[..., TempCluster], ca_dir: Path) -> None:
    cluster = make_cluster()
    secure(
        discover(pgdata=cluster.data_dir),
        SecureRequest(ca_dir=ca_dir),
    )
    result = CliRunner().invoke(
        main, ["schedule", "--pgdata", str(cluster.data_dir), "--ca-dir", str(ca_dir), "--cron"]
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert f" renew --pgdata {cluster.data_dir} --ca-dir {ca_dir} --yes" in line
    assert "systemd-cat -t pgbatten-renew " in line or line.endswith("| logger -t pgbatten-renew")
