"""`pgbatten demo` killed with SIGTERM (kill, timeout, a CI runner), SIGHUP (a closed terminal) or Ctrl-C
still removes everything it made, and exits as every command does: 128 + the signal, 130 for Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def leftovers(tmp: Path) -> set[str]:
    return {p.name for p in tmp.iterdir() if p.name.startswith("pgbatten-")}


def demo_servers(tmp: Path) -> set[int]:
    """PIDs of servers running from a pgbatten dir in ``tmp`` (the demo's postmaster and its children)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        # The server itself, not a tool that mentions it (psql -h …/sock -d postgres).
        argv0 = cmdline.split(b"\0", 1)[0]
        if f"{tmp}/pgbatten-".encode() in cmdline and argv0.rsplit(b"/", 1)[-1] == b"postgres":
            found.add(int(proc.name))
    return found


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A TMPDIR of the demo's own: other tests on this machine make and remove pgbatten dirs in /tmp too."""
    path = Path(tempfile.mkdtemp(prefix="pgbatten-sigterm-"))
    path.chmod(0o755)  # the cluster's OS user must reach the demo's directory inside
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [
        pytest.param(signal.SIGTERM, 143, "pgbatten: terminated by signal 15", id="sigterm"),
        pytest.param(signal.SIGHUP, 129, "pgbatten: terminated by signal 1", id="sighup"),
        pytest.param(signal.SIGINT, 130, "pgbatten: interrupted", id="ctrl-c"),
    ],
)
def test_a_signal_mid_demo_cleans_up(private_tmp: Path, sig: signal.Signals, code: int, said: str) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-c", "from pgbatten.cli import main; main()", "demo"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    # Wait until the demo's server runs, so the signal lands while there is most to undo. The first sight
    # of a server process may be initdb's bootstrap backend or a postmaster that has not yet written
    # postmaster.pid: the cleanup must end those too.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not demo_servers(private_tmp) and demo.poll() is None:
        time.sleep(0.05)
    assert demo_servers(private_tmp), "the demo's server was never seen running"
    assert leftovers(private_tmp)
    os.kill(demo.pid, sig)
    _, err = demo.communicate(timeout=180)
    assert demo.returncode == code, err
    assert err.strip().splitlines()[-1] == said
    assert "Traceback" not in err
    # Whatever the demo started has ended by the time it exits: nothing to wait for.
    assert leftovers(private_tmp) == set()
    assert demo_servers(private_tmp) == set()
