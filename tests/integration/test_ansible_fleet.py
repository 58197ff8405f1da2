"""The pgbatten.tls collection with real Ansible (ansible-core from PyPI) against three real clusters on this
machine: one host reached over real SSH to 127.0.0.1 (an sshd of the test's own), two over the local
connection. The CA lives in the control node's directory only; each server's key is made on that server.

About 40-60 s on a shared 2-core machine: each task of each host starts the host's Python once.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CAStore
from pgbatten.probe import check_target
from pgbatten.secure.hosts import gather_machine_names
from pgbatten.secure.plan import PENDING_KEY_NAME
from tests.integration.ansible_helpers import (
    COLLECTION_SRC,
    Controller,
    Sshd,
    ansible_tool,
    build_collection,
    local_host_vars,
    running_sshd,
    ssh_host_vars,
    task_name,
    tool_env,
    write_inventory,
)

pytestmark = pytest.mark.integration

PLAYBOOK = COLLECTION_SRC / "playbooks" / "secure.yml"

# The seed's starting point, minus the shadowed hostssl rule: password logins over TCP in plaintext.
FLEET_HBA = """\
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


@pytest.fixture(scope="session")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ansible_tool("ansible-playbook")
    out = tmp_path_factory.mktemp("collection")
    return build_collection(out, tmp_path_factory.mktemp("galaxy-home"))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@dataclass
class Fleet:
    controller: Controller
    clusters: dict[str, TempCluster]
    inventory: Path
    sshd: Sshd

    def play(self, playbook: str | Path, *args: str) -> Any:
        return self.controller.playbook(playbook, self.inventory, *args)


# A server whose OpenSSL policy refuses the P-256 key pgbatten makes (security level 4 wants 192-bit keys):
# PostgreSQL loads no certificate on reload and answers SSLRequest with 'N', so the proofs fail after the
# reload. Real: crypto policies such as RHEL's FUTURE refuse keys that are fine elsewhere.
STRICT_OPENSSL = """\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherString = DEFAULT@SECLEVEL=4
"""


@pytest.fixture
def make_fleet(
    tmp_path: Path,
    isolated_environment: Path,
    collections: Path,
    sshd: Sshd,
    make_cluster: Callable[..., TempCluster],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Fleet]:
    """Three clusters (pg1 over SSH, pg2 and pg3 local) and a control node with a CA; ``strict`` names a
    host whose server runs under STRICT_OPENSSL."""

    def factory(strict: str | None = None) -> Fleet:
        controller = Controller(tmp_path / "control", isolated_environment, collections)
        CAStore(controller.ca_dir).init()
        clusters = {}
        for name in ("pg1", "pg2", "pg3"):
            cluster = make_cluster(hba=FLEET_HBA, start=False)
            if name == strict:
                conf = cluster.root / "openssl-strict.cnf"
                conf.write_text(STRICT_OPENSSL)
                os.chown(conf, cluster.owner.uid, cluster.owner.gid)
                with monkeypatch.context() as env:
                    env.setenv("OPENSSL_CONF", str(conf))  # the postmaster's environment only
                    cluster.start()
            else:
                cluster.start()
            clusters[name] = cluster
        hosts: dict[str, dict[str, Any]] = {
            "pg1": ssh_host_vars(sshd),
            "pg2": local_host_vars(),
            "pg3": local_host_vars(),
        }
        for name, cluster in clusters.items():
            hosts[name].update(postgresql_data_dir=str(cluster.data_dir), postgresql_port=cluster.port)
        inventory = write_inventory(
            controller.root / "inventory.yml",
            hosts,
            ansible_python_interpreter=sys.executable,
            pgbatten_tls_ca_dir=str(controller.ca_dir),
            # Every host here is this machine: the names it gives itself are its own.
            pgbatten_tls_allowed_hosts=list(gather_machine_names().hostnames),
        )
        return Fleet(controller, clusters, inventory, sshd)

    return factory


def snapshot(cluster: TempCluster) -> dict[str, bytes]:
    """The cluster's configuration and TLS files (backups and a pending key aside)."""
    directory = cluster.config_file.parent
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and (p.suffix == ".conf" or p.name.startswith("pgbatten-"))
        and ".pgbatten-" not in p.name and p.name != PENDING_KEY_NAME
    }  # fmt: skip


def plaintext_accepted(cluster: TempCluster) -> bool | None:
    return check_target(f"127.0.0.1:{cluster.port}", timeout=10).plaintext_accepted


def private_keys_under(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if b"PRIVATE KEY-----" in handle.read(1 << 20):
                    found.append(path)
    return found


def assert_keys_stay_where_they_belong(fleet: Fleet, key_names: tuple[str, ...]) -> None:
    """The CA key only on the control node's side; each server key only beside its own cluster."""
    assert private_keys_under(fleet.controller.root) == [fleet.controller.ca_dir / "ca.key"]
    ca_key = (fleet.controller.ca_dir / "ca.key").read_bytes()
    for cluster in fleet.clusters.values():
        keys = [p for p in private_keys_under(cluster.root) if p.name in key_names]
        assert keys, f"no server key beside {cluster.config_file}"
        for key in keys:
            info = key.stat()
            assert stat.S_IMODE(info.st_mode) == 0o600
            assert info.st_uid == cluster.owner.uid
            body = key.read_bytes()
            assert body != ca_key
            # The server key's bytes appear nowhere on the control node's side.
            for path in fleet.controller.root.rglob("*"):
                if path.is_file():
                    assert body.strip() not in path.read_bytes(), f"{key} leaked into {path}"
        assert not any(p.read_bytes() == ca_key for p in private_keys_under(cluster.root))


def test_collection_passes_ansible_lint(tmp_path: Path, isolated_environment: Path) -> None:
    lint = ansible_tool("ansible-lint")
    # A copy: ansible-lint keeps a cache (.ansible/) in the directory it checks.
    copy = tmp_path / "tls"
    shutil.copytree(COLLECTION_SRC, copy, ignore=shutil.ignore_patterns(".ansible", "*.tar.gz"))
    done = subprocess.run(
        [str(lint), "--nocolor"], cwd=copy, capture_output=True, text=True,
        env=tool_env(isolated_environment), timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stderr + done.stdout


def test_rollout_over_ssh_one_host_at_a_time(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet()
    before = {name: snapshot(c) for name, c in fleet.clusters.items()}

    # Check mode (with the diff) plans every host and changes nothing, on the hosts or the control node.
    dry = fleet.play(PLAYBOOK, "--check", "--diff")
    assert dry.returncode == 0, dry.output[-5000:]
    assert re.search(r"^\+hostnossl all,replication all +0\.0\.0\.0/0 +reject$", dry.output, re.M)  # diff
    assert {name: snapshot(c) for name, c in fleet.clusters.items()} == before
    assert all(not (c.config_file.parent / PENDING_KEY_NAME).exists() for c in fleet.clusters.values())
    assert CAStore(fleet.controller.ca_dir).entries() == []
    assert dry.result("pg2", "Install")["result"]["status"] == "dry-run"

    # The real run secures every host, one at a time, each checked from the control node before the next.
    run = fleet.play(PLAYBOOK)
    assert run.returncode == 0, run.output[-5000:]
    assert fleet.sshd.logins() >= 1  # pg1 really was reached over SSH
    order = [(r["host"], task_name(r)) for r in run.results if r["status"] == "ok"]
    checks = [order.index((h, t)) for h, t in order if t.startswith("Check the server")]
    installs = [order.index((h, t)) for h, t in order if t.startswith("Install")]
    assert len(checks) == len(installs) == 3
    assert installs[1] > checks[0] and installs[2] > checks[1]  # pg2 only after pg1 passed its check
    entries = {e.name: e for e in CAStore(fleet.controller.ca_dir).entries()}
    assert sorted(entries) == ["pg1", "pg2", "pg3"]
    for name, cluster in fleet.clusters.items():
        secured = run.result(name, "Install")["result"]
        assert secured["changed"] and secured["status"] == "applied"
        assert secured["proofs"] and all(p["ok"] for p in secured["proofs"])  # the proofs, as facts
        assert secured["certificate"]["serial"] == str(entries[name].serial)
        checked = run.result(name, "Check the server")["result"]
        assert checked["plaintext_accepted"] is False and checked["grade"] in ("A+", "A")
        assert checked["verify_full"] == {name: True}
        assert plaintext_accepted(cluster) is False
        assert not (cluster.config_file.parent / PENDING_KEY_NAME).exists()
    assert_keys_stay_where_they_belong(fleet, ("pgbatten-server.key",))

    # A second run finds nothing to do anywhere.
    again = fleet.play(PLAYBOOK)
    assert again.returncode == 0, again.output[-5000:]
    assert again.changed() == 0, again.recap
    assert len(CAStore(fleet.controller.ca_dir).entries()) == 3  # nothing signed again

    # Status as facts, usable in when: nothing is due right after securing.
    status = fleet.play(COLLECTION_SRC / "playbooks" / "status.yml")
    assert status.returncode == 0, status.output[-5000:]
    for name in fleet.clusters:
        facts = status.result(name, "Status")["result"]
        assert facts["renewal_due"] is False and facts["served_is_installed"] is True
        assert facts["server_certificate"]["serial"] == f"{entries[name].serial:#x}"


def test_a_failed_proof_stops_the_rollout_and_leaves_the_host_as_it_was(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet(strict="pg2")
    before = {name: snapshot(c) for name, c in fleet.clusters.items()}
    run = fleet.play(PLAYBOOK)
    assert run.returncode != 0
    failed = run.result("pg2", "Install")
    assert failed["status"] == "failed"
    assert "rolled back" in failed["result"]["msg"]
    # pg1 was secured and checked; pg2 was rolled back by pgbatten itself; pg3 was never touched.
    assert run.result("pg1", "Check the server")["status"] == "ok"
    assert plaintext_accepted(fleet.clusters["pg1"]) is False
    assert snapshot(fleet.clusters["pg2"]) == before["pg2"]
    assert plaintext_accepted(fleet.clusters["pg2"]) is True
    assert not [r for r in run.results if r["host"] == "pg3"]
    assert snapshot(fleet.clusters["pg3"]) == before["pg3"]
    assert not (fleet.clusters["pg3"].config_file.parent / PENDING_KEY_NAME).exists()
    assert plaintext_accepted(fleet.clusters["pg3"]) is True
