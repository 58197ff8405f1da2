"""`pgbatten demo` killed with SIGTERM (kill, timeout, a CI runner) still removes everything it made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("pgbatten-")}


def demo_servers() -> set[int]:
    """PIDs of processes started from a pgbatten temp dir (the demo's postmaster and its children)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"/pgbatten-" in cmdline and b"postgres" in cmdline:
            found.add(int(proc.name))
    return found


def test_sigterm_mid_demo_cleans_up() -> None:
    before = leftovers()
    servers_before = demo_servers()
    demo = subprocess.Popen(
        [sys.executable, "-c", "from pgbatten.cli import main; main()", "demo"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the demo's server runs, so the signal lands while there is most to undo.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (demo_servers() - servers_before) and demo.poll() is None:
        time.sleep(0.05)
    assert demo_servers() - servers_before, "the demo's server was never seen running"
    assert leftovers() != before
    os.kill(demo.pid, signal.SIGTERM)
    _, err = demo.communicate(timeout=120)
    assert demo.returncode in (130, 0), err
    assert leftovers() == before
    assert demo_servers() <= servers_before
