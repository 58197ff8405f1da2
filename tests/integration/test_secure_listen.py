"""``listen_addresses = '*'`` is proved on every address of the machine, not on loopback alone.

The machine here is a network namespace the test creates (``unshare -n``), with extra addresses of its own
on its loopback interface: no traffic ever reaches this machine's real interfaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

V4, V6 = "10.200.0.1", "fd00:200::1"

SCRIPT = f"""
import json, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "{V4}/32", "dev", "lo"], check=True)
v6 = subprocess.run(["ip", "-6", "addr", "add", "{V6}/128", "dev", "lo", "nodad"]).returncode == 0
from click.testing import CliRunner
from pgbatten.cli import main
from pgbatten.cluster.temp import TempCluster
from tests.conftest import SEED_HBA
with TempCluster(hba=SEED_HBA, settings={{"listen_addresses": "'*'"}}) as cluster:
    result = CliRunner().invoke(
        main, ["secure", "--pgdata", str(cluster.data_dir), "--yes", "--json", "--ca-dir", sys.argv[1]]
    )
print(json.dumps({{"v6": v6, "code": result.exit_code, "out": result.stdout, "err": result.stderr}}))
"""


def test_a_wildcard_listen_is_proved_on_every_interface_address(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace of its own")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SCRIPT, str(tmp_path / "ca")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, report["err"]
    result = json.loads(report["out"])
    expected = ["127.0.0.1", V4] + ([V6] if report["v6"] else [])
    assert set(expected) <= set(result["addresses"])
    proved = {p["what"] for p in result["proofs"] if p["ok"]}
    for address in expected:
        where = f"[{address}]" if ":" in address else address
        assert any(w.startswith("plaintext refused at ") and where in w for w in proved), (address, proved)
        assert f"verify-full by address {address}" in proved
    assert f"IP:{V4}" in result["certificate"]["sans"]
