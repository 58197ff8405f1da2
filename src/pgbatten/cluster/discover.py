"""Finding a cluster from ``--pgdata DIR`` or ``--cluster VERSION/NAME`` and describing it.

A running server is asked where its files are (``SHOW config_file`` and friends): that is the only answer
that is always right, whatever wrapper started it. A stopped one is described from its files. The same
:class:`Cluster` describes a throwaway cluster (:mod:`pgbatten.cluster.temp`), which knows its files itself.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from pgbatten.cluster.binaries import (
    SUPPORTED_MAJORS,
    PgBinaries,
    binaries_in,
    not_found,
    psql_on_path,
    search_binaries,
)
from pgbatten.cluster.osuser import OsUser
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ClusterError, FileProblem, UsageError

# Debian's postgresql-common honours this variable too; tests use it to lay out a fake /etc/postgresql.
CONF_ROOT_ENV = "PG_CLUSTER_CONF_ROOT"
DEFAULT_CONF_ROOT = Path("/etc/postgresql")
_DELETED = " (deleted)"


@dataclass(frozen=True)
class PostmasterPid:
    """The fields of ``postmaster.pid`` that tell where a running server listens."""

    pid: int
    data_dir: Path
    port: int
    socket_dir: Path | None
    local: bool = True
    """False for a server in another PID namespace (a container seen from the host): ``pid`` is its own."""

    def executable(self) -> Path | None:
        """The postmaster's own executable, when this process may see it (``/proc/PID/exe``).

        Only root and the server's owner may read the link; after a package upgrade in place it names the
        replaced file, whose directory holds the same major's new binaries.
        """
        if not self.local:
            return None
        try:
            target = str(Path(f"/proc/{self.pid}/exe").readlink())
        except OSError:
            return None
        target = target.removesuffix(_DELETED)
        return Path(target) if target.startswith("/") else None


@dataclass(frozen=True)
class Cluster:
    """Where one cluster's files are, who owns it, and whether it is running."""

    label: str
    data_dir: Path
    config_file: Path
    hba_file: Path
    ident_file: Path
    major: int
    owner: OsUser
    binaries: PgBinaries | None
    """This major's server binaries; None when none were found (a stopped cluster needs none)."""
    running: PostmasterPid | None

    @property
    def auto_conf_file(self) -> Path:
        return self.data_dir / "postgresql.auto.conf"

    def require_binaries(self) -> PgBinaries:
        if self.binaries is None:
            raise not_found(self.major)
        return self.binaries

    def sql(self) -> OwnerSQL:
        """SQL as the owner over the socket; the cluster must be running with a Unix socket."""
        if self.running is None:
            raise ClusterError(f"cluster {self.label} is not running")
        if self.running.socket_dir is None:
            raise ClusterError(f"cluster {self.label} has no Unix socket (unix_socket_directories is empty)")
        return OwnerSQL(
            psql=self.binaries.psql() if self.binaries is not None else psql_on_path(),
            socket_dir=self.running.socket_dir,
            port=self.running.port,
            owner=self.owner,
            role=self._role(),
        )

    def _role(self) -> str | None:
        # psql logs in as the OS user's name by default. An owner without a name here is a container's (the
        # official image's uid 999, seen from the host): inside, that uid is called postgres, the image's
        # superuser, and its local rules are trust or peer, so that is the role to ask for.
        return "postgres" if self.owner.name == str(self.owner.uid) else None

    def require_running(self) -> PostmasterPid:
        if self.running is None:
            raise ClusterError(
                f"cluster {self.label} is not running; start it first (pgbatten applies changes by reload)"
            )
        return self.running


def read_postmaster_pid(data_dir: Path) -> PostmasterPid | None:
    """Parse ``postmaster.pid`` if the process it names is alive; None for a stopped cluster."""
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileProblem(pid_file, exc.strerror or "cannot read") from exc
    try:
        pid = int(lines[0])
        port = int(lines[3])
    except (IndexError, ValueError):
        return None
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].strip() else None
    if _is_postmaster(pid):
        return PostmasterPid(pid=pid, data_dir=data_dir, port=port, socket_dir=socket_dir)
    # No such postmaster here. Either the file is stale (a crash, a container killed), or the server runs in
    # another PID namespace, a container whose data directory and socket are mounted here: only then does
    # its socket answer.
    if socket_dir is not None and _socket_answers(socket_dir / f".s.PGSQL.{port}"):
        return PostmasterPid(pid=pid, data_dir=data_dir, port=port, socket_dir=socket_dir, local=False)
    return None


def _is_postmaster(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but not ours to signal
    try:
        # The kernel's name for the process is its executable's, whatever title PostgreSQL displays.
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return False  # gone meanwhile
    except OSError:
        return True  # no /proc to ask: alive is all we can know
    return name in ("postgres", "postmaster")


def _socket_answers(path: Path) -> bool:
    """Whether a server accepts on this Unix socket (costs one backend fork only in this rare case)."""
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def read_major(data_dir: Path) -> int:
    """The major version a data directory was made by (``PG_VERSION``), refused unless supported."""
    version_file = data_dir / "PG_VERSION"
    try:
        text = version_file.read_text().strip()
    except FileNotFoundError as exc:
        raise ClusterError(f"{data_dir} is not a PostgreSQL data directory (no PG_VERSION)") from exc
    except PermissionError as exc:
        raise FileProblem(version_file, "permission denied (run as the cluster's owner or root)") from exc
    match = re.fullmatch(r"(\d+)(?:\.\d+)?", text)
    if not match:
        raise ClusterError(f"{version_file}: unexpected content {text!r}")
    major = int(match.group(1))
    if major not in SUPPORTED_MAJORS:
        raise ClusterError(f"PostgreSQL {text} in {data_dir} is not supported (pgbatten supports 12 to 18)")
    return major


def binaries_for(
    major: int, running: PostmasterPid | None, pg_bindir: Path | None = None
) -> PgBinaries | None:
    """The binaries to drive a cluster of ``major`` with; None when there are none.

    ``pg_bindir`` (the user's word) must hold that major. Otherwise the running postmaster's own directory
    comes first (the one answer that is right for a server started from a tarball, a wheel or a custom
    prefix), then PATH, ``pg_config`` and Debian's directories.
    """
    if pg_bindir is not None:
        given = binaries_in(pg_bindir)
        if given is None:
            raise UsageError(
                f"--pg-bindir {pg_bindir}: no PostgreSQL server binaries there (postgres, initdb, pg_ctl)"
            )
        if given.major != major:
            raise UsageError(
                f"--pg-bindir {pg_bindir} holds PostgreSQL {given.major}, the cluster is PostgreSQL {major}"
            )
        return given
    exe = running.executable() if running is not None else None
    return search_binaries(major, first=[exe.parent] if exe is not None else [])


def _setting_from_file(conf: Path, name: str) -> str | None:
    """The last active value of ``name`` in ``conf`` (the main file only; enough to find PGDATA)."""
    # pgconf reads the bytes as they are: a comment in Latin-1 is no reason to fail.
    from pgbatten.pgconf.postgresql_conf import load_conf

    setting = load_conf(conf).get(name)
    return setting.value if setting is not None else None


def discover(
    *, pgdata: Path | None = None, cluster: str | None = None, pg_bindir: Path | None = None
) -> Cluster:
    """Describe the cluster named by exactly one of ``pgdata`` or ``cluster`` ("15/main")."""
    if (pgdata is None) == (cluster is None):
        raise UsageError("give exactly one of --pgdata DIR or --cluster VERSION/NAME")
    if cluster is not None:
        match = re.fullmatch(r"(\d+)/([A-Za-z0-9_.-]+)", cluster)
        if not match:
            raise UsageError(f"--cluster wants VERSION/NAME such as 15/main, not {cluster!r}")
        root = Path(os.environ.get(CONF_ROOT_ENV, str(DEFAULT_CONF_ROOT)))
        conf_dir = root / match.group(1) / match.group(2)
        config_file = conf_dir / "postgresql.conf"
        if not config_file.exists():
            raise ClusterError(f"no cluster {cluster}: {config_file} does not exist")
        configured = _setting_from_file(config_file, "data_directory")
        data_dir = Path(configured) if configured else Path("/var/lib/postgresql") / cluster
        label = cluster
    else:
        assert pgdata is not None
        data_dir = pgdata.expanduser().absolute()
        if not data_dir.is_dir():
            raise ClusterError(f"{data_dir} does not exist or is not a directory")
        config_file = data_dir / "postgresql.conf"
        label = str(data_dir)
    major = read_major(data_dir)
    running = read_postmaster_pid(data_dir)
    hba_file, ident_file = _file_locations(config_file, data_dir)
    described = Cluster(
        label=label,
        data_dir=data_dir,
        config_file=config_file,
        hba_file=hba_file,
        ident_file=ident_file,
        major=major,
        owner=OsUser.owner_of(data_dir),
        binaries=binaries_for(major, running, pg_bindir),
        running=running,
    )
    if running is None or running.socket_dir is None:
        return described
    # The server knows best where its files are, whatever wrapper started it.
    cfg, hba, ident = described.sql().query(
        "SELECT current_setting('config_file'), current_setting('hba_file'), current_setting('ident_file')"
    )[0]
    assert cfg is not None and hba is not None and ident is not None
    return replace(described, config_file=Path(cfg), hba_file=Path(hba), ident_file=Path(ident))


def _file_locations(config_file: Path, data_dir: Path) -> tuple[Path, Path]:
    """hba_file and ident_file of a stopped cluster, as its postgresql.conf sets them."""
    found = []
    for name, default in (("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")):
        configured = _setting_from_file(config_file, name) if config_file.exists() else None
        path = Path(configured) if configured else Path(default)
        found.append(path if path.is_absolute() else data_dir / path)
    return found[0], found[1]
