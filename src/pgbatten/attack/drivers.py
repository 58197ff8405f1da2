"""Real PostgreSQL client drivers, driven with one client setting at a time: libpq through psql and
psycopg, PgJDBC and node-postgres (each through a small long-running client program, so a JVM or node
starts once per matrix, not once per connection).

Every driver is given the same facts (host, port, user, password, the CA file for the verifying modes, a
client certificate when the setting has one) and spells them the way its own users do: a libpq
connection string, a JDBC URL, a node-postgres connection string. None of them may read the operator's
home directory or ``PG*`` environment: each runs with an empty home and a clean environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

from pgbatten import libpq

CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
QUERY_TIMEOUT = 30.0
"""Seconds a driver gets for one connection and query before it counts as hung."""


class Variant(StrEnum):
    """What a setting adds to its sslmode."""

    PLAIN = ""
    CHANNEL_BINDING = "channel_binding=require"
    REQUIRE_AUTH = "require_auth=scram-sha-256"
    CLIENT_CERT = "client certificate"


SSLMODES: tuple[libpq.SslMode, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class Setting:
    sslmode: libpq.SslMode
    variant: Variant = Variant.PLAIN

    @property
    def label(self) -> str:
        return f"sslmode={self.sslmode}" + (f" + {self.variant}" if self.variant else "")

    @property
    def short(self) -> str:
        """The label for a table row: ``require + channel_binding``."""
        extra = {
            Variant.PLAIN: "",
            Variant.CHANNEL_BINDING: " + channel_binding",
            Variant.REQUIRE_AUTH: " + require_auth",
            Variant.CLIENT_CERT: " + client cert",
        }[self.variant]
        return self.sslmode + extra

    @property
    def verifies(self) -> bool:
        return self.sslmode in ("verify-ca", "verify-full")


@dataclass(frozen=True)
class ClientFiles:
    """A client certificate in the formats the drivers read: PEM pair (libpq, node) and PKCS#8 DER (JDBC)."""

    cert: Path
    key: Path
    pk8: Path


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a driver connects."""

    port: int
    user: str
    password: str
    ca_file: Path
    client_files: ClientFiles | None = None
    host: str = "localhost"
    hostaddr: str = "127.0.0.1"
    dbname: str = "postgres"
    application_name: str = "pgbatten-matrix"


@dataclass(frozen=True)
class Outcome:
    """What the client itself reported: the query's first value, or its error."""

    value: str | None
    error: str = ""
    unsupported: str | None = None
    """Set when the driver has no way to express the setting: nothing was run."""

    @property
    def got_rows(self) -> bool:
        return self.value is not None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line[:limit] + ("..." if len(line) > limit else "")


class Driver(ABC):
    """One client driver. ``start()`` before ``run()``, ``stop()`` after."""

    key: str
    """Its name on the command line: psql, psycopg, jdbc, node."""
    fix = "verify-full, sslrootcert"
    """The setting that stops every attack."""
    notes: tuple[str, ...] = ()
    """How the driver spells the matrix's settings, where it is not libpq's way."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / f"home-{self.key}"

    @property
    @abstractmethod
    def label(self) -> str:
        """Name and version, e.g. ``psql 15.18``."""

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why it cannot run on this machine, or None."""

    def start(self) -> None:
        self.home.mkdir(mode=0o700, exist_ok=True)

    def stop(self) -> None:  # noqa: B027 - most drivers have nothing to end
        """End whatever ``start`` began."""

    @abstractmethod
    def run(self, endpoint: Endpoint, setting: Setting, query: str) -> Outcome:
        """Connect with ``setting``, run ``query``, say what happened."""

    def environment(self) -> dict[str, str]:
        """A clean environment: no ``PG*``, an empty home."""
        keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["HOME"] = str(self.home)
        return env


# ------------------------------------------------------------------------------------------------ libpq


def libpq_params(endpoint: Endpoint, setting: Setting) -> dict[str, str]:
    extra: dict[str, str] = {}
    if setting.variant == Variant.CHANNEL_BINDING:
        extra["channel_binding"] = "require"
    elif setting.variant == Variant.REQUIRE_AUTH:
        extra["require_auth"] = "scram-sha-256"
    files = endpoint.client_files if setting.variant == Variant.CLIENT_CERT else None
    return libpq.params(
        host=endpoint.host,
        hostaddr=endpoint.hostaddr,
        port=endpoint.port,
        user=endpoint.user,
        dbname=endpoint.dbname,
        password=endpoint.password,
        sslmode=setting.sslmode,
        sslrootcert=endpoint.ca_file if setting.verifies else None,
        client_certificate=libpq.ClientCertificate(files.cert, files.key) if files is not None else None,
        connect_timeout=10,
        application_name=endpoint.application_name,
        extra=extra,
    )


_INVALID_OPTION = re.compile(r'invalid connection option "([^"]+)"')


class Psql(Driver):
    """The system's psql: libpq as most command-line tools and many applications link it."""

    key = "psql"

    @cached_property
    def exe(self) -> str | None:
        return shutil.which("psql")

    @cached_property
    def version(self) -> str:
        if self.exe is None:
            return "?"
        out = subprocess.run([self.exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"\d+(?:\.\d+)+", out)  # psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)
        return match.group(0) if match else "?"

    @property
    def label(self) -> str:
        return f"psql {self.version} (libpq)"

    def unavailable(self) -> str | None:
        return None if self.exe else "psql is not installed"

    @cached_property
    def _unknown(self) -> frozenset[str]:
        """Keywords pgbatten's libpq knows and this psql's libpq does not (``sslcertmode`` before 16)."""
        unknown: set[str] = set()
        for keyword in ("sslcertmode", "require_auth", "channel_binding"):
            probe = subprocess.run(
                [str(self.exe), "-X", "-d", f"{keyword}=x host=/nonexistent", "-c", ""],
                capture_output=True,
                text=True,
                timeout=30,
                env=self.environment(),
            )
            if f'invalid connection option "{keyword}"' in probe.stderr:
                unknown.add(keyword)
        return frozenset(unknown)

    def start(self) -> None:
        super().start()
        _ = self._unknown

    def run(self, endpoint: Endpoint, setting: Setting, query: str) -> Outcome:
        params = libpq_params(endpoint, setting)
        wanted = {"channel_binding", "require_auth"} & set(params) & self._unknown
        if wanted:
            return Outcome(None, unsupported=f"this libpq has no {', '.join(sorted(wanted))}")
        params = {k: v for k, v in params.items() if k not in self._unknown}
        try:
            result = subprocess.run(
                [str(self.exe), "-X", "-At", "-d", libpq.conninfo(params), "-c", query],
                capture_output=True,
                text=True,
                timeout=QUERY_TIMEOUT,
                env=self.environment(),
            )
        except subprocess.TimeoutExpired:
            return Outcome(None, f"no answer within {QUERY_TIMEOUT:.0f} s")
        if result.returncode == 0:
            return Outcome(result.stdout.strip())
        return Outcome(None, _one_line(result.stderr.removeprefix("psql: error: ")))


class Psycopg(Driver):
    """psycopg 3 with the libpq it ships: Python applications."""

    key = "psycopg"

    @property
    def label(self) -> str:
        import psycopg

        version = psycopg.pq.version()
        return f"psycopg {psycopg.__version__} (libpq {version // 10000}.{version % 100})"

    def unavailable(self) -> str | None:
        return None

    def run(self, endpoint: Endpoint, setting: Setting, query: str) -> Outcome:
        import psycopg

        try:
            with psycopg.connect(libpq.conninfo(libpq_params(endpoint, setting)), autocommit=True) as conn:
                row = conn.execute(query).fetchone()
        except psycopg.Error as exc:
            return Outcome(None, _one_line(str(exc)))
        return Outcome("" if row is None else str(row[0]))


# --------------------------------------------------------------------------- long-running client programs


class _Program(Driver):
    """A driver behind a client program that answers one request per line."""

    _proc: subprocess.Popen[str] | None = None

    @abstractmethod
    def command(self) -> list[str]: ...

    def start(self) -> None:
        super().start()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(),
            cwd=self.home,
        )
        ready = self._readline()
        if ready is None:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"{self.label} did not start: {_one_line(err)}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # end of input: the program ends
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream_out in (proc.stdout, proc.stderr):
            if stream_out is not None:
                stream_out.close()

    def _readline(self) -> str | None:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        return line.rstrip("\n") if line else None

    def _ask(self, request: str) -> str | None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin: IO[str] = self._proc.stdin
        try:
            stdin.write(request + "\n")
            stdin.flush()
        except OSError:
            return None
        return self._readline()


def pgjdbc_jar() -> Path | None:
    """PgJDBC: ``$PGBATTEN_PGJDBC_JAR``, the newest 42.x in the local Maven repository, or Debian's."""
    explicit = os.environ.get("PGBATTEN_PGJDBC_JAR")
    if explicit:
        return Path(explicit)
    m2 = Path.home() / ".m2" / "repository" / "org" / "postgresql" / "postgresql"
    found = sorted(
        m2.glob("42.*/postgresql-42.*.jar"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)]
    )
    found = [p for p in found if not p.name.endswith(("-sources.jar", "-javadoc.jar"))]
    if found:
        return found[-1]
    debian = Path("/usr/share/java/postgresql.jar")
    return debian if debian.exists() else None


class Jdbc(_Program):
    """PgJDBC: Java applications."""

    key = "jdbc"
    notes = (
        "settings in the JDBC URL: sslmode, sslrootcert, channelBinding, requireAuth, sslcert, sslkey (.pk8)",
    )

    @cached_property
    def jar(self) -> Path | None:
        return pgjdbc_jar()

    @property
    def label(self) -> str:
        jar = self.jar.resolve() if self.jar is not None else None
        match = re.search(r"(\d+\.\d+\.\d+)", jar.name) if jar is not None else None
        return f"PgJDBC {match.group(1) if match else '?'}"

    def unavailable(self) -> str | None:
        if shutil.which("java") is None:
            return "java is not installed"
        if self.jar is None or not self.jar.exists():
            return "no PgJDBC jar (set PGBATTEN_PGJDBC_JAR, or install libpostgresql-jdbc-java)"
        return None

    def command(self) -> list[str]:
        return [
            str(shutil.which("java")),
            f"-Duser.home={self.home}",
            "-cp",
            str(self.jar),
            str(CLIENTS_DIR / "MatrixClient.java"),
        ]

    def url(self, endpoint: Endpoint, setting: Setting) -> str:
        params = {
            "sslmode": setting.sslmode,
            "ApplicationName": endpoint.application_name,
            "connectTimeout": "10",
            "socketTimeout": "30",
            "gssEncMode": "disable",
        }
        if setting.verifies:
            params["sslrootcert"] = str(endpoint.ca_file)
        if setting.variant == Variant.CHANNEL_BINDING:
            params["channelBinding"] = "require"
        elif setting.variant == Variant.REQUIRE_AUTH:
            params["requireAuth"] = "scram-sha-256"
        elif setting.variant == Variant.CLIENT_CERT and endpoint.client_files is not None:
            params["sslcert"] = str(endpoint.client_files.cert)
            params["sslkey"] = str(endpoint.client_files.pk8)
        return f"jdbc:postgresql://{endpoint.host}:{endpoint.port}/{endpoint.dbname}?{urlencode(params)}"

    def run(self, endpoint: Endpoint, setting: Setting, query: str) -> Outcome:
        fields = (self.url(endpoint, setting), endpoint.user, endpoint.password, query)
        answer = self._ask("\t".join(fields))
        if answer is None:
            return Outcome(None, "the PgJDBC client program ended")
        status, _, text = answer.partition("\t")
        return Outcome(text) if status == "OK" else Outcome(None, _one_line(text))


def node_postgres() -> Path | None:
    """The ``pg`` package: ``$PGBATTEN_NODE_MODULES``, this checkout's tests/clients, or ``$NODE_PATH``."""
    candidates = [os.environ.get("PGBATTEN_NODE_MODULES", "")]
    candidates.append(str(Path(__file__).resolve().parents[3] / "tests" / "clients" / "node_modules"))
    candidates += os.environ.get("NODE_PATH", "").split(os.pathsep)
    for base in candidates:
        if base and (Path(base) / "pg" / "package.json").exists():
            return Path(base) / "pg"
    return None


class Node(_Program):
    """node-postgres: JavaScript applications, configured the usual way, by a connection string."""

    key = "node"
    notes = (
        "settings in the connection string (sslmode, sslrootcert, sslcert, sslkey) as pg-connection-string "
        "reads them; channel_binding: enableChannelBinding (SCRAM-SHA-256-PLUS when offered, there is no "
        "require); no require_auth",
    )

    @cached_property
    def module(self) -> Path | None:
        return node_postgres()

    @property
    def label(self) -> str:
        version = "?"
        if self.module is not None:
            version = json.loads((self.module / "package.json").read_text()).get("version", "?")
        return f"node-postgres {version}"

    def unavailable(self) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if self.module is None:
            return "node-postgres not found (set PGBATTEN_NODE_MODULES to a node_modules holding pg)"
        return None

    def command(self) -> list[str]:
        return [str(shutil.which("node")), str(CLIENTS_DIR / "matrix_client.cjs"), str(self.module)]

    def connection_string(self, endpoint: Endpoint, setting: Setting) -> str:
        params = {"sslmode": setting.sslmode, "application_name": endpoint.application_name}
        if setting.verifies:
            params["sslrootcert"] = str(endpoint.ca_file)
        if setting.variant == Variant.CLIENT_CERT and endpoint.client_files is not None:
            params["sslcert"] = str(endpoint.client_files.cert)
            params["sslkey"] = str(endpoint.client_files.key)
        user, password = quote(endpoint.user, safe=""), quote(endpoint.password, safe="")
        return f"postgresql://{user}:{password}@{endpoint.host}:{endpoint.port}/{endpoint.dbname}?{urlencode(params)}"

    def run(self, endpoint: Endpoint, setting: Setting, query: str) -> Outcome:
        if setting.variant == Variant.REQUIRE_AUTH:
            return Outcome(None, unsupported="node-postgres has no require_auth")
        request = {
            "connectionString": self.connection_string(endpoint, setting),
            # node-postgres's closest to channel_binding=require: use SCRAM-SHA-256-PLUS when offered.
            "enableChannelBinding": setting.variant == Variant.CHANNEL_BINDING,
            "query": query,
        }
        answer = self._ask(json.dumps(request))
        if answer is None:
            return Outcome(None, "the node-postgres client program ended")
        reply = json.loads(answer)
        return (
            Outcome(str(reply["value"]))
            if reply.get("ok")
            else Outcome(None, _one_line(reply.get("error", "")))
        )


DRIVERS: dict[str, type[Driver]] = {"psql": Psql, "psycopg": Psycopg, "jdbc": Jdbc, "node": Node}
