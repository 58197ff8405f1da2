"""Throwaway clusters: initdb on a free port in a temp dir, owned by an unprivileged user.

Used by the integration tests and by ``pgbatten demo``. Everything lives under one temporary directory that
is removed on exit, also when the body raises or the user presses Ctrl-C. A :class:`TempCluster` owns that
directory and the server's lifecycle; what the cluster *is* (its files, owner, binaries, whether it runs,
SQL as its owner) is the same :class:`~pgbatten.cluster.discover.Cluster` that ``discover`` returns for a
real one, handed out by :attr:`TempCluster.cluster`.

initdb is the expensive part (a bootstrap backend writing ~40 MB); a :class:`ClusterTemplate` runs it once
and each TempCluster made from it starts from a copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pgbatten.cluster.binaries import PgBinaries, find_binaries
from pgbatten.cluster.discover import Cluster, read_postmaster_pid
from pgbatten.cluster.osuser import OsUser, run_as, server_user
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ClusterError
from pgbatten.netutil import free_port, ipv6_loopback_available


def _private_root(owner: OsUser, prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o700)
    if os.geteuid() == 0:
        os.chown(root, owner.uid, owner.gid)
    return root


def processes_naming(root: Path) -> list[int]:
    """PIDs of live processes whose command line names a path under ``root`` (from /proc; none elsewhere).

    A throwaway cluster's server and initdb's bootstrap backend carry their data directory on their command
    line (a running server's backends do not, and end with their postmaster). Zombies have none.
    """
    needle = f"{root}/".encode()
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:  # ended meanwhile
                continue
            if any(needle in arg + b"/" for arg in cmdline.split(b"\0")):
                found.append(int(entry.name))
    return found


def end_processes_naming(root: Path, *, grace: float = 15.0) -> None:
    """End what still runs from ``root`` and wait until it has: SIGQUIT (PostgreSQL's immediate shutdown,
    which also removes its shared memory), then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGQUIT, grace), (signal.SIGKILL, 5.0)):
        pids = processes_naming(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while processes_naming(root) and time.monotonic() < deadline:
            time.sleep(0.02)


def _as_owner(owner: OsUser, *argv: str | Path) -> None:
    run_as(owner, list(argv), check=True, timeout=180)


def initdb(binaries: PgBinaries, owner: OsUser, data_dir: Path, *extra: str) -> None:
    """A new data directory, the way every throwaway cluster starts (``extra`` initdb options last)."""
    _as_owner(
        owner,
        binaries.path("initdb"),
        "-D",
        data_dir,
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        *extra,
    )


@dataclass
class ClusterTemplate:
    """A data directory made by initdb once, for many :class:`TempCluster` s to copy. A context manager."""

    binaries: PgBinaries
    owner: OsUser = field(default_factory=server_user)

    def __post_init__(self) -> None:
        self.root = _private_root(self.owner, "pgbatten-template-")
        self.data_dir = self.root / "data"
        try:
            initdb(self.binaries, self.owner, self.data_dir)
        except BaseException:
            self.cleanup()
            raise

    def copy_to(self, data_dir: Path) -> None:
        # As the owner, so every file keeps its owner and mode (PostgreSQL insists on 0700/0600).
        _as_owner(self.owner, "cp", "-a", self.data_dir, data_dir)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClusterTemplate:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


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
    # Copied instead of running initdb when it matches these binaries and owner.
    template: ClusterTemplate | None = None

    def __post_init__(self) -> None:
        self.bin = self.binaries or (self.template.binaries if self.template else find_binaries())
        self.root = _private_root(self.owner, "pgbatten-")
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
    def ident_file(self) -> Path:
        return self.conf_dir / "pg_ident.conf"

    @property
    def superuser(self) -> str:
        return self.owner.name

    @property
    def major(self) -> int:
        return self.bin.major

    @property
    def listen_addresses(self) -> str:
        return "127.0.0.1,::1" if self.listen_ipv6 else "127.0.0.1"

    @property
    def cluster(self) -> Cluster:
        """This cluster as pgbatten describes any cluster, read afresh (whether it runs changes)."""
        return Cluster(
            label=str(self.data_dir),
            data_dir=self.data_dir,
            config_file=self.config_file,
            hba_file=self.hba_file,
            ident_file=self.ident_file,
            major=self.bin.major,
            owner=self.owner,
            binaries=self.bin,
            running=read_postmaster_pid(self.data_dir),
        )

    def sql(self) -> OwnerSQL:
        return self.cluster.sql()

    def _make_data_dir(self) -> None:
        template = self.template
        if template is not None and template.binaries == self.bin and template.owner == self.owner:
            template.copy_to(self.data_dir)
        else:
            initdb(self.bin, self.owner, self.data_dir)

    def init(self) -> None:
        _as_owner(self.owner, "mkdir", "-m", "0700", "-p", self.socket_dir)
        self._make_data_dir()
        if self.config_outside_pgdata:
            _as_owner(self.owner, "mkdir", "-m", "0755", "-p", self.conf_dir)
            for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
                _as_owner(self.owner, "mv", self.data_dir / name, self.conf_dir / name)
            with self.config_file.open("a") as conf:
                conf.write(
                    f"data_directory = '{self.data_dir}'\n"
                    f"hba_file = '{self.hba_file}'\n"
                    f"ident_file = '{self.ident_file}'\n"
                    "include_dir = 'conf.d'\n"
                )
            _as_owner(self.owner, "mkdir", "-m", "0755", "-p", self.conf_dir / "conf.d")
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
        # Whatever this object believes: pg_ctl may have been interrupted after launching the server, and a
        # file left by a killed server names a PID that may be anyone's now, not to be signalled.
        running = read_postmaster_pid(self.data_dir)
        if running is not None and running.local:
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
        # An interrupt can leave a server that pg_ctl cannot stop: one launched by an interrupted
        # ``pg_ctl start`` that has not written postmaster.pid yet, or initdb's bootstrap backend ending
        # after its group was killed. The directory goes only once nothing runs from it any more.
        end_processes_naming(self.root)
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
