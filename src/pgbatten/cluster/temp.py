"""Throwaway clusters: initdb on a free port in a temp dir, owned by an unprivileged user.

Used by the integration tests and by ``pgbatten demo``. Everything lives under one temporary directory that
is removed on exit, also when the body raises or the user presses Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pgbatten.cluster.binaries import PgBinaries, find_binaries
from pgbatten.cluster.osuser import OsUser, run_as, server_user
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ClusterError
from pgbatten.netutil import free_port, ipv6_loopback_available


@dataclass
class TempCluster:
    """A new cluster in a temp dir. Use as a context manager; ``start()`` is called on entry."""

    hba: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    binaries: PgBinaries | None = None
    owner: OsUser = field(default_factory=server_user)
    # Debian/Ubuntu keep postgresql.conf and pg_hba.conf in /etc/postgresql/V/NAME, outside PGDATA.
    config_outside_pgdata: bool = False
    listen_ipv6: bool = field(default_factory=ipv6_loopback_available)

    def __post_init__(self) -> None:
        self.bin = self.binaries or find_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="pgbatten-"))
        os.chmod(self.root, 0o700)
        if os.geteuid() == 0:
            os.chown(self.root, self.owner.uid, self.owner.gid)
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.conf_dir = self.root / "etc" if self.config_outside_pgdata else self.data_dir
        self.log_file = self.root / "server.log"
        self.port = free_port()
        self.started = False

    @property
    def config_file(self) -> Path:
        return self.conf_dir / "postgresql.conf"

    @property
    def hba_file(self) -> Path:
        return self.conf_dir / "pg_hba.conf"

    @property
    def superuser(self) -> str:
        return self.owner.name

    @property
    def listen_addresses(self) -> str:
        return "127.0.0.1,::1" if self.listen_ipv6 else "127.0.0.1"

    def sql(self) -> OwnerSQL:
        return OwnerSQL(psql=self._psql(), socket_dir=self.socket_dir, port=self.port, owner=self.owner)

    def _psql(self) -> Path:
        candidate = self.bin.path("psql")
        if candidate.exists():
            return candidate
        found = shutil.which("psql")
        if not found:
            raise ClusterError("psql not found")
        return Path(found)

    def _as_owner(self, *argv: str | Path) -> None:
        run_as(self.owner, list(argv), check=True, timeout=180)

    def init(self) -> None:
        self._as_owner("mkdir", "-m", "0700", "-p", self.socket_dir)
        self._as_owner(
            self.bin.path("initdb"),
            "-D",
            self.data_dir,
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if self.config_outside_pgdata:
            self._as_owner("mkdir", "-m", "0755", "-p", self.conf_dir)
            for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
                self._as_owner("mv", self.data_dir / name, self.conf_dir / name)
            with self.config_file.open("a") as conf:
                conf.write(
                    f"data_directory = '{self.data_dir}'\n"
                    f"hba_file = '{self.conf_dir / 'pg_hba.conf'}'\n"
                    f"ident_file = '{self.conf_dir / 'pg_ident.conf'}'\n"
                    "include_dir = 'conf.d'\n"
                )
            self._as_owner("mkdir", "-m", "0755", "-p", self.conf_dir / "conf.d")
        extra = {
            "port": str(self.port),
            "listen_addresses": f"'{self.listen_addresses}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "log_connections": "on",
            "fsync": "off",
            "max_connections": "40",
            "shared_buffers": "16MB",
        }
        extra.update(self.settings)
        with self.config_file.open("a") as conf:
            conf.write("\n# test cluster settings\n")
            for name, value in extra.items():
                conf.write(f"{name} = {value}\n")
        if self.hba is not None:
            self.hba_file.write_text(self.hba)

    def start(self) -> None:
        config = ["-o", f"-c config_file={self.config_file}"] if self.config_outside_pgdata else []
        target = self.conf_dir if self.config_outside_pgdata else self.data_dir
        # Marked before pg_ctl returns: an interrupt during start must still lead stop() to the postmaster.
        self.started = True
        result = run_as(
            self.owner,
            [self.bin.path("pg_ctl"), "-D", target, "-l", self.log_file, "-w", "-t", "60", *config, "start"],
            timeout=120,
        )
        if result.returncode != 0:
            raise ClusterError(f"test cluster did not start: {self.log_tail()}")

    def stop(self) -> None:
        if self.started:
            run_as(
                self.owner, [self.bin.path("pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "stop"]
            )
            self.started = False

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text().strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_file.read_text()
        except OSError:
            return ""

    def cleanup(self) -> None:
        with contextlib.suppress(ClusterError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        try:
            self.init()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
