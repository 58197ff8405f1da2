"""Real Ansible against real clusters: the collection built and installed from ``ansible/``, an OpenSSH server
of the test's own on a free loopback port, and ``ansible-playbook`` run as a subprocess.

The sshd is started from a config file in the test's temp dir (throwaway host key, one authorized client
key, loopback only, no passwords, no PAM); the system's sshd, its config and port 22 are never touched. The
only thing created outside the temp dir is ``/run/sshd``, the privilege separation directory OpenSSH needs
(what its own service unit creates). Hosts reached over SSH run the modules in this checkout's
``.venv/bin/python``, as a managed host runs them in its own Python with pgbatten installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pgbatten.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
COLLECTION_SRC = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")

RECORDER = '''\
"""Test-only callback: every task result as one JSON line, for the tests to read."""
import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, status, result):
        with open(os.environ["PGBATTEN_TEST_RECORD"], "a") as out:
            out.write(json.dumps({
                "status": status,
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "result": result._result,
            }, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)
'''


def ansible_tool(name: str) -> Path:
    """``ansible-playbook`` and friends from this environment, or skip saying how to get them."""
    path = VENV_BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (pip install -e '.[test]' brings ansible-core)")
        path = Path(found)
    return path


def tool_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(home)
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def build_collection(out_dir: Path, home: Path) -> Path:
    """``ansible-galaxy collection build`` then install the tarball: the collection as users get it."""
    galaxy = ansible_tool("ansible-galaxy")
    env = tool_env(home)
    built = subprocess.run(
        [str(galaxy), "collection", "build", str(COLLECTION_SRC), "--output-path", str(out_dir), "--force"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    tarballs = sorted(out_dir.glob("pgbatten-tls-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    collections = out_dir / "collections"
    installed = subprocess.run(
        [str(galaxy), "collection", "install", str(tarballs[0]), "-p", str(collections), "--force"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (collections / "ansible_collections" / "pgbatten" / "tls" / "MANIFEST.json").exists()
    return collections


@dataclass
class Sshd:
    """An OpenSSH server of the test's own on 127.0.0.1:port, reachable with one throwaway client key."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def start(self) -> None:
        if not SSHD.exists():
            pytest.skip(
                "openssh-server is not installed (scripts/test installs it: apt-get install openssh-server)"
            )
        if os.geteuid() != 0:
            pytest.skip("sshd logging in as the test's own user needs root here")
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pgbatten-test-{name}", "-f",
                 str(self.root / name)],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
        shutil.copy(self.root / "client_key.pub", self.root / "authorized_keys")
        host_pub = " ".join((self.root / "host_key.pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        config = self.root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.root / 'host_key'}\n"
            f"PidFile {self.root / 'sshd.pid'}\nAuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nMaxStartups 30:30:60\n"
            "Subsystem sftp internal-sftp\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = (self.root / "sshd.log").open("wb")
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise AssertionError("sshd did not listen within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)

    def logins(self) -> int:
        """How many sessions sshd accepted (its log says so for each)."""
        return (self.root / "sshd.log").read_text(errors="replace").count("Accepted publickey")


@dataclass(frozen=True)
class Run:
    """One ansible-playbook run: exit status, output, the recap per host and every task result."""

    returncode: int
    output: str
    recap: Mapping[str, Mapping[str, int]]
    results: list[dict[str, Any]]

    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())

    def result(self, host: str, task_start: str) -> dict[str, Any]:
        found = [r for r in self.results if r["host"] == host and task_name(r).startswith(task_start)]
        assert found, f"no result of {task_start!r} for {host}:\n{self.output[-3000:]}"
        return found[-1]


def task_name(record: Mapping[str, Any]) -> str:
    """The task's own name, without the ``role : `` Ansible puts before a role's tasks."""
    return str(record["task"]).split(" : ", 1)[-1]


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


@dataclass
class Controller:
    """The control node's side: ansible.cfg, inventory, the CA directory, and how to run a playbook."""

    root: Path
    home: Path
    collections: Path

    def __post_init__(self) -> None:
        (self.root / "callback").mkdir(parents=True, exist_ok=True)
        (self.root / "callback" / "record.py").write_text(RECORDER)
        self.config = self.root / "ansible.cfg"
        self.config.write_text(
            "[defaults]\n"
            f"collections_path = {self.collections}\n"
            f"local_tmp = {self.root / 'tmp-local'}\n"
            f"remote_tmp = {self.root / 'tmp-remote'}\n"
            f"callback_plugins = {self.root / 'callback'}\n"
            "callbacks_enabled = record\n"
            "host_key_checking = True\n"
            "retry_files_enabled = False\n"
            "forks = 3\n"
            "nocows = 1\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"control_path_dir = {self.root / 'cp'}\n"
            # One connection per task, no master process left behind once the test ends.
            "ssh_args = -o ControlMaster=no -o ControlPersist=no\n"
        )

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    def playbook(self, path: Path | str, inventory: Path, *args: str, timeout: float = 600) -> Run:
        record = self.root / f"record-{time.monotonic_ns()}.jsonl"
        env = tool_env(self.home)
        env.update({"ANSIBLE_CONFIG": str(self.config), "PGBATTEN_TEST_RECORD": str(record)})
        done = subprocess.run(
            [str(ansible_tool("ansible-playbook")), "-i", str(inventory), str(path), *args],
            capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=self.root,
        )  # fmt: skip
        output = done.stdout + done.stderr
        # Kept beside the record, for a look after a failure (pytest keeps the last temp dirs).
        record.with_suffix(".out").write_text(output)
        recap = {
            m.group(1): {k: int(v) for k, v in (kv.split("=") for kv in m.group(2).split())}
            for m in _RECAP.finditer(done.stdout)
        }
        results = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        return Run(done.returncode, output, recap, results)


def write_inventory(path: Path, hosts: Mapping[str, Mapping[str, Any]], **group_vars: Any) -> Path:
    """A YAML inventory (JSON is YAML) with every host in the ``postgres`` group."""
    path.write_text(json.dumps({"all": {"children": {"postgres": {"hosts": hosts, "vars": group_vars}}}}))
    return path


def ssh_host_vars(sshd: Sshd) -> dict[str, Any]:
    return {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": sshd.port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(sshd.client_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
            " -o BatchMode=yes"
        ),
    }


def local_host_vars() -> dict[str, Any]:
    return {"ansible_connection": "local", "ansible_host": "127.0.0.1"}


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[Sshd]:
    sshd = Sshd(root)
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()
