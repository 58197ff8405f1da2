"""Shared by the attacker-tool tests: `pgbatten wiretap`/`mitm` run as a real process whose JSON lines are
read as they come, and psql with pgbatten's pinned parameters. The TLS-only server is the matrix's own
(:func:`pgbatten.attack.matrix.tls_server`)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pgbatten import libpq

PASSWORD = "s3cret-Pw-42"


@dataclass
class Tool:
    """A running `pgbatten wiretap`/`mitm --json`: its JSON lines as they arrive."""

    proc: subprocess.Popen[str]
    port: int
    lines: queue.Queue[dict[str, Any]]
    seen: list[dict[str, Any]] = field(default_factory=list)

    def wait_for(self, line_type: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The next line of type ``line_type`` whose fields equal ``match``."""
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if line.get("type") == line_type and all(line.get(k) == v for k, v in match.items()):
                self.seen.remove(line)
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {line_type} {match} within {timeout} s; seen {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line.get("type") == line_type and all(line.get(k) == v for k, v in match.items()):
                return line
            self.seen.append(line)

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, wait, and every line not taken yet."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        rest = list(self.seen)
        while not self.lines.empty():
            rest.append(self.lines.get())
        self.seen = []
        return rest


@contextmanager
def run_tool(*args: str) -> Iterator[Tool]:
    """``pgbatten ARGS --json`` in a process of its own, until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pgbatten.cli import main; main()", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    assert proc.stdout is not None

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(json.loads(raw))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        tool = Tool(proc, 0, lines)
        tool.port = tool.wait_for("listening")["port"]
        yield tool
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)


def for_psql(params: dict[str, str]) -> str:
    """pgbatten's pinned libpq parameters as a connection string the system's psql (libpq 15) accepts:
    ``sslcertmode`` is from libpq 16."""
    return libpq.conninfo({k: v for k, v in params.items() if k != "sslcertmode"})


def psql_command(params: dict[str, str], *args: str) -> list[str]:
    exe = shutil.which("psql")
    assert exe is not None, "psql is not installed"
    return [exe, "-X", "-At", "-d", for_psql(params), *args]


def psql(params: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The system's psql (libpq) with pgbatten's pinned parameters and nothing from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        psql_command(params, *args), capture_output=True, text=True, timeout=timeout, env=env
    )
