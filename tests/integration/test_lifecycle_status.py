"""``pgbatten status`` on a real cluster: what is installed, what the server really serves (asked over TLS),
and exit statuses a monitoring system can act on."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgbatten.cli import main
from pgbatten.cluster.discover import discover
from pgbatten.cluster.temp import TempCluster
from pgbatten.fsutil import atomic_write
from pgbatten.pki import CAStore
from pgbatten.secure import SecureRequest, secure

pytestmark = pytest.mark.integration


def secured(make_cluster: Callable[..., TempCluster], ca_dir: Path, **options: object) -> TempCluster:
    cluster = make_cluster()
    secure(
        discover(pgdata=cluster.data_dir),
        # allow_lockout: only the cluster's superuser logs in over TCP here, and it needs no certificate.
        SecureRequest(ca_dir=ca_dir, allow_lockout=True, **options),  # type: ignore[arg-type]
    )
    return cluster


def run_status(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", *args])
    return result.exit_code, result.output


def test_status_stages_and_exit_codes(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path
) -> None:
    cluster = secured(make_cluster, ca_dir, client_auth="verify-full")
    pgdata = str(cluster.data_dir)
    prom = tmp_path / "textfile" / "pgbatten.prom"
    prom.parent.mkdir()

    code, out = run_status("--pgdata", pgdata, "--json", "--prometheus", str(prom))
    assert code == 0, out
    report = json.loads(out)
    view = report["clusters"][0]
    installed = view["server_certificate"]
    assert installed["served"] is True
    assert view["served"]["matches_installed"] is True
    assert view["ssl_ca_file"].endswith("pgbatten-ca.crt")
    assert "127.0.0.1" in installed["sans"] and "localhost" in installed["sans"]
    assert f'serial="{installed["serial"]}"' in prom.read_text()

    # A renewed file that never reached the running server: written, not reloaded.
    store = CAStore(ca_dir)
    ca = store.load()
    fresh = ca.issue_server(["localhost", "127.0.0.1", "::1"], days=365)
    owner = cluster.owner.ids if os.geteuid() == 0 else None
    atomic_write(cluster.data_dir / "pgbatten-server.crt", fresh.cert_pem(), mode=0o644, owner=owner)
    atomic_write(cluster.data_dir / "pgbatten-server.key", fresh.key_pem(), mode=0o600, owner=owner)
    code, out = run_status("--pgdata", pgdata)
    assert code == 1, out
    assert f"NO: {installed['serial']} is served" in out
    assert f"pgbatten renew --pgdata {pgdata} --ca-dir {ca_dir}" in out

    # renew puts the installed file in force (a reload and the proofs), writing nothing.
    result = CliRunner().invoke(main, ["renew", "--pgdata", pgdata, "--yes"])
    assert result.exit_code == 0, result.output
    assert "fixed by reload, no restart" in result.output
    assert run_status("--pgdata", pgdata)[0] == 0
    # Thresholds move the judgement without waiting: a year-long certificate is critical with --critical 400d.
    code, out = run_status("--pgdata", pgdata, "--warn", "400d", "--critical", "400d")
    assert code == 2, out
    assert "Status: CRITICAL (exit 2)" in out

    cluster.stop()
    code, out = run_status("--pgdata", pgdata, "--json")
    assert code == 1
    stopped = json.loads(out)["clusters"][0]
    assert stopped["running"] is False
    assert stopped["server_certificate"]["serial"] == f"{fresh.serial:#x}"
    assert "cluster-not-running" in {f["id"] for f in json.loads(out)["findings"]}


def test_status_usage_errors_are_one_line(ca_dir: Path) -> None:
    code, out = run_status("--warn", "soon")
    assert code == 2
    assert out.strip().splitlines() == [
        "pgbatten: error: invalid duration 'soon': use a number and a unit, e.g. 30d, 12h, 2w or 1d12h"
    ]
    code, out = run_status("--warn", "1d", "--critical", "2d")
    assert code == 2 and "critical threshold" in out


def test_status_without_a_ca_is_critical(ca_dir: Path) -> None:
    code, out = run_status("--json")
    assert code == 2
    assert json.loads(out)["findings"][0]["id"] == "ca-missing"


def test_debian_layout_by_cluster_name(
    make_cluster: Callable[..., TempCluster], ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgbatten.cluster.discover import CONF_ROOT_ENV

    cluster = make_cluster(config_outside_pgdata=True)
    root = tmp_path / "etc-postgresql"
    (root / str(cluster.bin.major)).mkdir(parents=True)
    (root / str(cluster.bin.major) / "main").symlink_to(cluster.conf_dir)
    monkeypatch.setenv(CONF_ROOT_ENV, str(root))
    name = f"{cluster.bin.major}/main"
    result = CliRunner().invoke(main, ["secure", "--cluster", name, "--yes"])
    assert result.exit_code == 0, result.output
    code, out = run_status("--cluster", name, "--json", "--before", "400d")
    assert code == 0, out
    view = json.loads(out)["clusters"][0]
    assert view["label"] == name and view["server_certificate"]["served"] is True
    assert view["server_certificate"]["renew_due"] is True
    renew_cmd = f"pgbatten renew --cluster {name} --ca-dir {ca_dir}"
    assert renew_cmd in [a["command"] for a in json.loads(out)["actions"]]
    before = view["server_certificate"]["serial"]
    result = CliRunner().invoke(main, ["renew", "--cluster", name, "--before", "400d", "--yes"])
    assert result.exit_code == 0, result.output
    assert (cluster.conf_dir / "pgbatten-server.crt").exists()  # renewed where the server reads it
    assert not (cluster.data_dir / "pgbatten-server.crt").exists()
    code, out = run_status("--cluster", name, "--json")
    assert code == 0 and json.loads(out)["clusters"][0]["server_certificate"]["serial"] != before
