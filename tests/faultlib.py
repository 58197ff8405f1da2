"""Running a real ``pgbatten`` in a child process that can be paused at a fault point and killed there.

Shared by the fault-injection tests and ``scripts/fault_sweep.py``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgbatten.faults import PAUSE_ENV, RELEASE_ENV


class Run:
    """One ``pgbatten ARGS`` in its own process group; stderr is read as it comes."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        pause: str | None = None,
        release: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        child_env = dict(os.environ if env is None else env)
        child_env.pop(PAUSE_ENV, None)
        if pause is not None:
            child_env[PAUSE_ENV] = pause
        if release is not None:
            child_env[RELEASE_ENV] = str(release)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from pgbatten.cli import main; main()", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = 120.0) -> bool:
        """Whether a stderr line containing ``text`` came before the process ended or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            if text in line:
                return True
        return False

    def wait_for_point(self, name: str, timeout: float = 120.0) -> bool:
        return self.wait_for(f"pgbatten: fault point {name} ", timeout)

    def kill(self, sig: int, *, group: bool) -> None:
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def finish(self, timeout: float = 180.0) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) once the process ends; a signal death is ``-N``."""
        assert self.process.stdout is not None
        try:
            out = self.process.stdout.read()
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        self._reader.join(timeout=10)
        return self.process.returncode, out, "".join(self.stderr)
