"""Running a real client (psql of a given version) through a :class:`DelayRelay` and timing its first row.

Each run starts psql with a connection string built by :mod:`pgbatten.libpq`, sends ``SELECT 1`` on its
standard input and waits for the row on its standard output; the moment the row is read is the end of the
measured span, so psql's Terminate afterwards is not counted. The time is taken at the relay, from the
accepted connection to the delivery of the row, so psql's own start-up (loading libraries) is not part of
it, while everything the client does between connecting and its first row (key generation, SCRAM's hashing,
certificate checks) is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pgbatten import libpq
from pgbatten.bench.flights import RoundTrips
from pgbatten.bench.relay import DelayRelay
from pgbatten.bench.stats import Timing
from pgbatten.errors import PgBattenError

QUERY = "SELECT 1"


class BenchError(PgBattenError):
    """A measurement could not be made (the client failed, the server refused, a timeout)."""


# Asking the libpq psql really loads (not the one psycopg bundles) which keywords it knows, through
# PQconndefaults: a keyword it does not know (sslnegotiation before 17) makes it refuse the whole string.
_KEYWORDS_SCRIPT = r"""
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
class Opt(ctypes.Structure):
    _fields_ = [("keyword", ctypes.c_char_p), ("envvar", ctypes.c_char_p), ("compiled", ctypes.c_char_p),
                ("val", ctypes.c_char_p), ("label", ctypes.c_char_p), ("dispchar", ctypes.c_char_p),
                ("dispsize", ctypes.c_int)]
lib.PQconndefaults.restype = ctypes.POINTER(Opt)
lib.PQlibVersion.restype = ctypes.c_int
opts = lib.PQconndefaults()
words = []
i = 0
while opts[i].keyword:
    words.append(opts[i].keyword.decode())
    i += 1
print(json.dumps({"version": lib.PQlibVersion(), "keywords": words}))
"""


@dataclass(frozen=True)
class Psql:
    """A psql binary and facts about the libpq it loads."""

    path: Path
    libpq_version: int
    """``PQlibVersion()``: 170010 for 17.10."""
    keywords: frozenset[str]

    @property
    def libpq_major(self) -> int:
        return self.libpq_version // 10000

    @classmethod
    def at(cls, path: Path) -> Psql:
        return _inspect(path)

    def usable(self, params: Mapping[str, str]) -> dict[str, str]:
        """``params`` without the keywords this libpq does not know (pins such as ``sslcertmode``).

        A keyword that changes what is measured (``sslnegotiation``) must be checked by the caller first.
        """
        return {k: v for k, v in params.items() if k in self.keywords}


@cache
def _inspect(path: Path) -> Psql:
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"^\s*libpq\.so[.\d]*\s*=>\s*(\S+)", ldd.stdout, re.MULTILINE)
    if match is None:
        raise BenchError(f"{path}: cannot tell which libpq it loads (ldd: {ldd.stdout.strip()[:200]})")
    out = subprocess.run(
        [sys.executable, "-c", _KEYWORDS_SCRIPT, match.group(1)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"{match.group(1)}: cannot ask libpq for its keywords: {out.stderr.strip()[-200:]}")
    facts = json.loads(out.stdout)
    return Psql(path=path, libpq_version=int(facts["version"]), keywords=frozenset(facts["keywords"]))


@dataclass(frozen=True)
class ConnectCase:
    """Connect + login + first row, repeated: the round trips counted and the time at the relay."""

    label: str
    round_trips: RoundTrips
    timing: Timing
    counts: tuple[int, ...]
    """The round-trip count of every run: all equal unless something is wrong."""

    @property
    def consistent(self) -> bool:
        return len(set(self.counts)) == 1

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "round_trips": self.round_trips.as_dict(),
            "timing": self.timing.as_dict(),
            "counts": list(self.counts),
            "consistent": self.consistent,
        }


def client_environment(home: Path, openssl_conf: Path | None = None) -> dict[str, str]:
    """A minimal environment for a client: no ``PG*``, an empty home, and ``OPENSSL_CONF`` only if given."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
    }
    if openssl_conf is not None:
        env["OPENSSL_CONF"] = str(openssl_conf)
    return env


def psql_first_row(
    psql: Psql,
    params: Mapping[str, str],
    relay: DelayRelay,
    *,
    env: Mapping[str, str],
    timeout: float = 30.0,
) -> RoundTrips:
    """One psql connection through ``relay``: the round trips up to its first row, timed at the relay."""
    conninfo = libpq.conninfo(psql.usable(params))
    relay.clear()
    proc = subprocess.Popen(
        [str(psql.path), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", conninfo],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(f"{QUERY};\n".encode())
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"psql gave no row within {timeout:g} s")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace").strip()
                raise BenchError(f"psql failed: {err.splitlines()[-1] if err else 'no output'}")
            line += chunk
        had_row = time.monotonic()
        if line.strip() != b"1":
            raise BenchError(f"psql printed {line.strip()[:80]!r} instead of the row")
        proc.stdin.close()
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    traces = relay.wait_finished(1, timeout=timeout)
    if not traces:
        raise BenchError("the relay saw no connection")
    trace = traces[-1]
    if trace.error:
        raise BenchError(trace.error)
    return trace.round_trips(until=had_row)


def measure_psql(
    label: str,
    psql: Psql,
    params: Mapping[str, str],
    relay: DelayRelay,
    *,
    runs: int = 7,
    openssl_conf: Path | None = None,
    warmup: int = 1,
    timeout: float = 30.0,
) -> ConnectCase:
    """``runs`` connections (after ``warmup`` ones not counted): the median time and the round trips."""
    with tempfile.TemporaryDirectory(prefix="pgbatten-bench-home-") as home:
        env = client_environment(Path(home), openssl_conf)
        samples: list[RoundTrips] = []
        for i in range(warmup + runs):
            result = psql_first_row(psql, params, relay, env=env, timeout=timeout)
            if i >= warmup:
                samples.append(result)
    latencies = [s.latency for s in samples if s.latency is not None]
    if not latencies:
        raise BenchError("no run delivered a row")
    return ConnectCase(
        label=label,
        round_trips=samples[-1],
        timing=Timing.of(latencies),
        counts=tuple(s.count for s in samples),
    )
