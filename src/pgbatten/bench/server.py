"""``pgbatten bench``: what each way of connecting costs on a user's own server.

For each way the server allows (plaintext if it still does, TLS 1.2, TLS 1.3, direct SSL), in this order:

1. one connection made directly: is this way allowed, which protocol and cipher did it get;
2. one connection through an in-process relay on loopback (no delay): its round trips, counted exactly up
   to the first row (see :mod:`pgbatten.bench.flights`);
3. up to ``connections`` new connections, one after another, each up to the row of ``SELECT 1``: latency
   (p50, p95) and the rate of new connections;
4. one connection running ``SELECT 1`` for ``seconds``: the steady-state query rate;
5. one read-only transaction streaming ``COPY (SELECT … FROM generate_series(…)) TO STDOUT``: bulk transfer.

Every phase is bounded by ``seconds`` (and each connection by its ``connect_timeout``); nothing is written
to the user's tables (the only statements are ``SELECT 1``, ``SET LOCAL`` and a ``COPY … TO STDOUT`` of
generated rows in a ``READ ONLY`` transaction); every connection is closed on the way out. Connections are
built from the caller's libpq parameters (:func:`pgbatten.libpq.user_params` of a DSN, or
:func:`pgbatten.libpq.params`), never from formatted strings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import psycopg
from psycopg import sql

from pgbatten import libpq
from pgbatten.bench.clients import BenchError
from pgbatten.bench.flights import RoundTrips
from pgbatten.bench.relay import DelayRelay
from pgbatten.bench.stats import Timing
from pgbatten.keyshare import OPENSSL_CONF_NAME, client_openssl_conf

BULK_ROW = 1000
"""Bytes of text per generated row of the bulk transfer (plus a newline)."""
DEFAULT_BULK_BYTES = 32 * 1024 * 1024
MAX_QUERIES = 1_000_000
BULK_BACKSTOP = 10.0
"""Seconds past ``--seconds`` after which the server itself stops a bulk transfer that sent nothing."""

Progress = Callable[[str], None]
"""Called once as each phase of each mode ends, with a short description of the next."""


class Mode(StrEnum):
    """A way of connecting."""

    PLAINTEXT = "plaintext"
    TLS12 = "tls1.2"
    TLS13 = "tls1.3"
    DIRECT = "direct"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Mode.PLAINTEXT: "plaintext",
    Mode.TLS12: "TLS 1.2",
    Mode.TLS13: "TLS 1.3",
    Mode.DIRECT: "direct TLS 1.3",
}
ALL_MODES = (Mode.PLAINTEXT, Mode.TLS12, Mode.TLS13, Mode.DIRECT)
PHASES = 5


@dataclass(frozen=True)
class BenchOptions:
    """How much to measure. Every bound is per mode and phase."""

    connections: int = 20
    seconds: float = 3.0
    bulk_bytes: int = DEFAULT_BULK_BYTES
    modes: tuple[Mode, ...] = ALL_MODES
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        from pgbatten.errors import UsageError

        if not 1 <= self.connections <= 10_000:
            raise UsageError(f"--connections must be between 1 and 10000, not {self.connections}")
        if not 0.1 <= self.seconds <= 3600:
            raise UsageError(f"--seconds must be between 0.1 and 3600, not {self.seconds:g}")


@dataclass(frozen=True)
class ModeResult:
    """What one way of connecting costs, or why it could not be measured."""

    mode: Mode
    allowed: bool
    reason: str | None = None
    """Why the way is not allowed (the server's or libpq's one line), or what went wrong in a phase."""
    protocol: str | None = None
    cipher: str | None = None
    round_trips: RoundTrips | None = None
    round_trips_p256: RoundTrips | None = None
    """When the server asked again for the key share: the count with pgbatten's client OpenSSL
    configuration (P-256 first), the one round trip a client can save."""
    connect: Timing | None = None
    """Seconds from connect() to the row of ``SELECT 1``, per new connection."""
    connections_per_second: float | None = None
    queries_per_second: float | None = None
    bulk_bytes: int | None = None
    bulk_seconds: float | None = None
    bulk_complete: bool = True
    """False when the bulk transfer was cut short by the time bound (the rate is still measured)."""

    @property
    def bulk_mib_per_second(self) -> float | None:
        if self.bulk_bytes is None or not self.bulk_seconds:
            return None
        return self.bulk_bytes / self.bulk_seconds / (1024 * 1024)

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "allowed": self.allowed,
            "reason": self.reason,
            "protocol": self.protocol,
            "cipher": self.cipher,
            "round_trips": self.round_trips.as_dict() if self.round_trips else None,
            "round_trips_p256_first": self.round_trips_p256.as_dict() if self.round_trips_p256 else None,
            "connect": self.connect.as_dict() if self.connect else None,
            "connections_per_second": self.connections_per_second,
            "queries_per_second": self.queries_per_second,
            "bulk_bytes": self.bulk_bytes,
            "bulk_seconds": self.bulk_seconds,
            "bulk_mib_per_second": self.bulk_mib_per_second,
            "bulk_complete": self.bulk_complete,
        }


@dataclass(frozen=True)
class BenchReport:
    """Every mode measured against one server."""

    target: str
    server_version: int | None
    libpq_version: int
    modes: tuple[ModeResult, ...]
    elapsed: float
    options: BenchOptions = field(default_factory=BenchOptions)

    def get(self, mode: Mode) -> ModeResult | None:
        return next((m for m in self.modes if m.mode is mode), None)

    @property
    def allowed(self) -> tuple[ModeResult, ...]:
        return tuple(m for m in self.modes if m.allowed)

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "server_version": self.server_version,
            "libpq_version": self.libpq_version,
            "elapsed_seconds": self.elapsed,
            "connections": self.options.connections,
            "seconds": self.options.seconds,
            "modes": [m.as_dict() for m in self.modes],
        }


# ------------------------------------------------------------------------------------- parameters


_STRONG = ("require", "verify-ca", "verify-full")


def mode_params(base: Mapping[str, str], mode: Mode) -> dict[str, str] | str:
    """``base`` set up for ``mode``; a string says why this libpq cannot connect that way.

    TLS modes keep the caller's ``sslmode`` when it already insists on TLS (so ``verify-full`` and its
    root certificate still apply) and use ``require`` otherwise: a ``prefer`` connection that fell back to
    plaintext must never be measured as TLS.
    """
    out = dict(base)
    negotiation = libpq.libpq_knows("sslnegotiation")
    if mode is Mode.PLAINTEXT:
        out["sslmode"] = "disable"
        out.pop("sslnegotiation", None)
        return out
    if out.get("sslmode") not in _STRONG:
        out["sslmode"] = "require"
    version = "TLSv1.2" if mode is Mode.TLS12 else "TLSv1.3"
    out["ssl_min_protocol_version"] = version
    out["ssl_max_protocol_version"] = version
    if mode is Mode.DIRECT:
        if not negotiation:
            return "this libpq has no direct SSL (sslnegotiation needs libpq 17)"
        out["sslnegotiation"] = "direct"
    elif negotiation:
        out["sslnegotiation"] = "postgres"
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


# ------------------------------------------------------------------------------------------- I/O


def _connect(params: Mapping[str, str]) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(libpq.conninfo(params), autocommit=True)


def _first_row(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute("SELECT 1").fetchone()
    if row is None or row[0] != 1:
        raise BenchError(f"SELECT 1 returned {row!r}")


@dataclass(frozen=True)
class _Target:
    hostaddr: str
    port: int


@dataclass(frozen=True)
class _Probe:
    target: _Target
    server_version: int
    protocol: str | None
    cipher: str | None


def _probe(params: Mapping[str, str], mode: Mode) -> _Probe | ModeResult:
    """The direct connection of phase 1: what it got, or why the mode is not allowed."""
    try:
        conn = _connect(params)
    except psycopg.Error as exc:
        return ModeResult(mode=mode, allowed=False, reason=_one_line(exc))
    with conn:
        info = conn.info
        if info.host.startswith("/") or not info.hostaddr:
            raise BenchError(f"connected over the Unix socket {info.host}: bench measures TCP (give host=)")
        in_tls = bool(conn.pgconn.ssl_in_use)
        if in_tls == (mode is Mode.PLAINTEXT):
            got = "TLS" if in_tls else "plaintext"
            return ModeResult(mode=mode, allowed=False, reason=f"libpq connected with {got}")
        row = conn.execute("SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        protocol, cipher = (
            (str(row[0]), str(row[1])) if row is not None and row[0] is not None else (None, None)
        )
        return _Probe(
            target=_Target(hostaddr=info.hostaddr, port=int(info.port)),
            server_version=info.server_version,
            protocol=protocol,
            cipher=cipher,
        )


def _round_trips(params: Mapping[str, str], target: _Target, timeout: float) -> RoundTrips:
    with DelayRelay((target.hostaddr, target.port), delay=0.0, model_tcp_handshake=False) as relay:
        relayed = {**params, "hostaddr": relay.host, "port": str(relay.port)}
        with _connect(relayed) as conn:
            _first_row(conn)
            had_row = time.monotonic()
        traces = relay.wait_finished(1, timeout=timeout)
    if not traces:
        raise BenchError("the relay saw no connection")
    if traces[-1].error:
        raise BenchError(traces[-1].error)
    return traces[-1].round_trips(until=had_row)


_CHILD = """
import sys, psycopg
conn = psycopg.connect(sys.stdin.readline().rstrip("\\n"), autocommit=True)
row = conn.execute("SELECT 1").fetchone()
print("row" if row == (1,) else f"bad {row!r}", flush=True)
sys.stdin.read()
conn.close()
"""


def _round_trips_p256(params: Mapping[str, str], target: _Target, timeout: float) -> RoundTrips:
    """The same count from a child process that loads pgbatten's client OpenSSL configuration.

    OpenSSL reads ``OPENSSL_CONF`` once per process, so the configuration cannot be tried in this one. The
    connection string goes to the child on its standard input, never on a command line others can read.
    """
    with tempfile.TemporaryDirectory(prefix="pgbatten-bench-") as tmp:
        conf = Path(tmp) / OPENSSL_CONF_NAME
        conf.write_text(client_openssl_conf())
        env = {**os.environ, "OPENSSL_CONF": str(conf)}
        with DelayRelay((target.hostaddr, target.port), delay=0.0, model_tcp_handshake=False) as relay:
            relayed = {**params, "hostaddr": relay.host, "port": str(relay.port)}
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
            )
            assert child.stdin is not None and child.stdout is not None and child.stderr is not None
            try:
                child.stdin.write(libpq.conninfo(relayed) + "\n")
                child.stdin.flush()
                line = child.stdout.readline().strip()
                had_row = time.monotonic()
                child.stdin.close()
                err = child.stderr.read()
                child.wait(timeout=timeout)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
                for stream in (child.stdin, child.stdout, child.stderr):
                    stream.close()
            if line != "row":
                tail = err.strip().splitlines()[-1] if err and err.strip() else line or "no output"
                raise BenchError(f"the connection with the P-256 key share failed: {tail}")
            traces = relay.wait_finished(1, timeout=timeout)
    if not traces:
        raise BenchError("the relay saw no connection")
    return traces[-1].round_trips(until=had_row)


def _connect_latency(params: Mapping[str, str], count: int, seconds: float) -> tuple[Timing, float]:
    samples: list[float] = []
    started = time.monotonic()
    deadline = started + seconds
    while len(samples) < count and (not samples or time.monotonic() < deadline):
        t0 = time.monotonic()
        conn = _connect(params)
        try:
            _first_row(conn)
            samples.append(time.monotonic() - t0)
        finally:
            conn.close()
    return Timing.of(samples), len(samples) / (time.monotonic() - started)


def _query_rate(params: Mapping[str, str], seconds: float) -> float:
    with _connect(params) as conn:
        _first_row(conn)  # the connection's own start is not part of the steady state
        done = 0
        started = time.monotonic()
        deadline = started + seconds
        # At least one query, however late the clock says it is: a starved machine measures slowly, not 0.
        while done == 0 or (done < MAX_QUERIES and time.monotonic() < deadline):
            conn.execute("SELECT 1").fetchone()
            done += 1
        return done / (time.monotonic() - started)


def _bulk(params: Mapping[str, str], total: int, seconds: float) -> tuple[int, float, bool]:
    rows = max(1, total // (BULK_ROW + 1))
    query = sql.SQL("COPY (SELECT repeat('x', {}) FROM generate_series(1, {})) TO STDOUT").format(
        sql.Literal(BULK_ROW), sql.Literal(rows)
    )
    received = 0
    complete = True
    with _connect(params) as conn:
        conn.autocommit = False
        conn.read_only = True
        started = ended = time.monotonic()
        try:
            with conn.cursor() as cur:
                # A backstop only: a server that sends nothing at all is stopped some seconds after the time.
                limit = sql.Literal(f"{int((seconds + BULK_BACKSTOP) * 1000)}ms")
                cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(limit))
                started = time.monotonic()
                deadline = started + seconds
                with cur.copy(query) as copy:
                    for chunk in copy:
                        received += len(chunk)
                        ended = time.monotonic()
                        # The clock ends the transfer, but never before its first chunk: a machine too busy
                        # to start within the time measures a slow transfer, not none (psycopg cancels the
                        # rest of the COPY when its block is left by an exception).
                        if ended >= deadline:
                            raise _TimeUp
                ended = time.monotonic()
        except _TimeUp:
            complete = False
        except psycopg.errors.QueryCanceled:
            complete = False
            ended = time.monotonic()
        conn.rollback()
    return received, ended - started, complete


class _TimeUp(Exception):
    """The bulk transfer's time is up (raised inside the COPY block so that psycopg cancels the rest)."""


def _measure(
    mode: Mode, params: Mapping[str, str], options: BenchOptions, step: Progress
) -> tuple[ModeResult, int | None]:
    probe = _probe(params, mode)
    step(f"{mode.label}: round trips")
    if isinstance(probe, ModeResult):
        for _ in range(PHASES - 1):
            step(f"{mode.label}: not allowed")
        return probe, None
    try:
        trips = _round_trips(params, probe.target, options.connect_timeout)
        p256 = _round_trips_p256(params, probe.target, options.connect_timeout) if trips.hello_retry else None
        step(f"{mode.label}: {options.connections} new connections")
        connect, rate = _connect_latency(params, options.connections, options.seconds)
        step(f"{mode.label}: queries over one connection")
        qps = _query_rate(params, options.seconds)
        step(f"{mode.label}: bulk transfer")
        nbytes, elapsed, complete = _bulk(params, options.bulk_bytes, options.seconds)
        step(f"{mode.label}: done")
    except (psycopg.Error, BenchError) as exc:
        failed = ModeResult(mode=mode, allowed=True, reason=_one_line(exc), protocol=probe.protocol)
        return failed, probe.server_version
    result = ModeResult(
        mode=mode,
        allowed=True,
        protocol=probe.protocol,
        cipher=probe.cipher,
        round_trips=trips,
        round_trips_p256=p256,
        connect=connect,
        connections_per_second=rate,
        queries_per_second=qps,
        bulk_bytes=nbytes,
        bulk_seconds=elapsed,
        bulk_complete=complete,
    )
    return result, probe.server_version


def run_bench(
    base: Mapping[str, str],
    options: BenchOptions | None = None,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Measure every mode in ``options.modes`` against the server ``base`` (libpq parameters) names.

    Raises :class:`BenchError` when no mode can connect at all (with the first mode's reason), or when
    the connection goes over a Unix socket.
    """
    options = options or BenchOptions()
    step = progress or (lambda _text: None)
    params = {"connect_timeout": str(max(1, int(options.connect_timeout))), **base}
    params.setdefault("application_name", "pgbatten-bench")
    started = time.monotonic()
    results: list[ModeResult] = []
    server_version: int | None = None
    for mode in options.modes:
        prepared = mode_params(params, mode)
        if isinstance(prepared, str):
            results.append(ModeResult(mode=mode, allowed=False, reason=prepared))
            for _ in range(PHASES):
                step(f"{mode.label}: not supported")
            continue
        result, version = _measure(mode, prepared, options, step)
        server_version = server_version or version
        results.append(result)
    if server_version is not None and server_version < 170000:
        # Say why rather than quote libpq's "unexpected eof": the server closes on a ClientHello it reads as
        # a startup packet.
        results = [
            replace(r, reason=f"PostgreSQL {server_version // 10000} has no direct SSL (it needs 17)")
            if r.mode is Mode.DIRECT and not r.allowed
            else r
            for r in results
        ]
    if not any(r.allowed for r in results):
        first = next((r.reason for r in results if r.reason), "no connection")
        raise BenchError(f"cannot connect in any way: {first}")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return BenchReport(
        target=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        server_version=server_version,
        libpq_version=psycopg.pq.version(),
        modes=tuple(results),
        elapsed=time.monotonic() - started,
        options=options,
    )
