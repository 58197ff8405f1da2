"""The pgbatten.tls collection with real Ansible (ansible-core from PyPI) against three real clusters on this
machine: one host reached over real SSH to 127.0.0.1 (an sshd of the test's own), two over the local
connection. The CA lives in the control node's directory only; each server's key is made on that server.

About 40-60 s on a shared 2-core machine: each task of each host starts the host's Python once.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from pgbatten.cluster.temp import TempCluster
from pgbatten.pki import CAStore
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
    tool_env,
    write_inventory,
)

pytestmark = pytest.mark.integration

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


@pytest.fixture
def fleet(
    tmp_path: Path,
    isolated_environment: Path,
    collections: Path,
    sshd: Sshd,
    make_cluster: Callable[..., TempCluster],
) -> Fleet:
    controller = Controller(tmp_path / "control", isolated_environment, collections)
    CAStore(controller.ca_dir).init()
    clusters = {name: make_cluster(hba=FLEET_HBA) for name in ("pg1", "pg2", "pg3")}
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


CSR_PLAY = """\
- name: CSR on each host, signed on the control node
  hosts: postgres
  gather_facts: false
  tasks:
    - name: Trust
      pgbatten.tls.trust:
        ca_dir: "{{ pgbatten_tls_ca_dir }}"
      run_once: true
      register: trust
    - name: CSR
      pgbatten.tls.csr:
        pgdata: "{{ postgresql_data_dir }}"
        hosts: ["{{ inventory_hostname }}"]
        ca_certificate: "{{ trust.ca_certificate }}"
      register: request
    - name: Sign
      pgbatten.tls.sign:
        csr: "{{ request.csr }}"
        ca_dir: "{{ pgbatten_tls_ca_dir }}"
        allowed_hosts: "{{ [inventory_hostname, 'localhost', '127.0.0.1', '::1']
                           + pgbatten_tls_allowed_hosts }}"
      when: request.csr is not none
    - name: Status
      pgbatten.tls.status:
        pgdata: "{{ postgresql_data_dir }}"
        ca_certificate: "{{ trust.ca_certificate }}"
      register: tls
    - name: Check
      pgbatten.tls.check:
        port: "{{ postgresql_port }}"
        ca_dir: "{{ pgbatten_tls_ca_dir }}"
        fail_on: never
"""


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


def test_csrs_made_on_the_hosts_signed_on_the_control_node(fleet: Fleet) -> None:
    playbook = fleet.controller.root / "csr.yml"
    playbook.write_text(CSR_PLAY)
    run = fleet.play(playbook)
    assert run.returncode == 0, run.output[-4000:]
    assert fleet.sshd.logins() >= 1  # pg1 really was reached over SSH
    entries = {e.name: e for e in CAStore(fleet.controller.ca_dir).entries()}
    assert sorted(entries) == ["pg1", "pg2", "pg3"]
    for name, cluster in fleet.clusters.items():
        request = run.result(name, "CSR")["result"]
        assert request["needed"] and request["key_created"]
        assert name in request["hosts"] and "127.0.0.1" in request["hosts"]
        signed = run.result(name, "Sign")["result"]
        cert = x509.load_pem_x509_certificate(signed["certificate"].encode())
        assert cert.serial_number == entries[name].serial
        pending = Path(request["key_path"])
        assert pending == cluster.config_file.parent / PENDING_KEY_NAME
        status = run.result(name, "Status")["result"]
        assert status["ssl"] is False and status["server_certificate"] is None
        check = run.result(name, "Check")["result"]
        assert check["reachable"] and check["plaintext_accepted"] is True
    assert_keys_stay_where_they_belong(fleet, (PENDING_KEY_NAME,))

    # Run again: the pending keys are reused (nothing changes on the hosts), a new CSR is signed.
    again = fleet.play(playbook)
    assert again.returncode == 0, again.output[-4000:]
    for name in fleet.clusters:
        assert again.result(name, "CSR")["result"]["key_created"] is False
