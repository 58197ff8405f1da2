"""``pgbatten schedule``: a systemd service and timer (or a cron line) that runs ``pgbatten renew`` daily.

Pure rendering plus the few facts it needs (which executable runs, who owns the CA key and the clusters).
The command line holds real, absolute paths and every option ``renew`` needs, so the job never depends on
a home directory, a working directory or a ``PG*`` variable; its output goes to the journal.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbatten.cluster.osuser import OsUser
from pgbatten.errors import UsageError

UNIT_NAME = "pgbatten-renew"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def pgbatten_command() -> list[str]:
    """How to start the pgbatten that is running now: its console script, else ``python -m pgbatten``."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "pgbatten" and script.exists():
        return [str(script.absolute())]
    found = shutil.which("pgbatten")
    if found is not None and Path(sys.executable).parent == Path(found).parent:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "pgbatten"]


@dataclass(frozen=True)
class Job:
    """What the scheduled job runs, and as whom."""

    argv: tuple[str, ...]
    user: OsUser
    description: str


def run_as_user(ca_key_owner: OsUser, cluster_owners: Sequence[OsUser]) -> OsUser:
    """Who must run ``renew``: it reads the CA key and writes the clusters' files as their owner.

    The owner of the CA key when that account also owns every cluster (a CA kept by ``postgres``), else
    root, which writes as each cluster's owner. Anyone else could not do both.
    """
    owners = {o.uid for o in cluster_owners}
    if ca_key_owner.uid == 0 or owners <= {ca_key_owner.uid}:
        return ca_key_owner
    names = ", ".join(sorted({o.name for o in cluster_owners}))
    raise UsageError(
        f"the CA key belongs to {ca_key_owner.name} but the cluster(s) to {names}: renew must read the one "
        "and write as the other; keep the CA as root or as the clusters' owner"
    )


def systemd_quote(arg: str) -> str:
    """One ExecStart argument as systemd parses it (specifiers and variables escaped)."""
    if "\n" in arg or "\r" in arg:
        raise UsageError(f"a path with a line break cannot go into a unit file: {arg!r}")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _SAFE.fullmatch(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unquote(line: str) -> list[str]:
    """The argv systemd runs for an ExecStart value written by :func:`systemd_quote` (for tests, verify)."""
    return [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(line)]


def service_unit(job: Job, *, system: bool = True) -> str:
    """The oneshot service: ``renew --yes`` as the right user, output to the journal.

    A user unit (``system=False``) runs as its own user and must not name one.
    """
    named = system and job.user.uid != 0
    user = f"User={job.user.name}\nGroup={_group_name(job.user)}\n" if named else ""
    exec_start = " ".join(systemd_quote(a) for a in job.argv)
    return (
        "# Written by pgbatten schedule. Re-issues what is due (certificates, CRLs) and proves it.\n"
        "[Unit]\n"
        f"Description=pgbatten renew: {job.description}\n"
        "After=network-online.target postgresql.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"{user}"
        f"ExecStart={exec_start}\n"
        "UMask=0077\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        f"SyslogIdentifier={UNIT_NAME}\n"
    )


def timer_unit(job: Job, on_calendar: str = "daily") -> str:
    """Daily, at a random time within the hour (many servers do not all renew at midnight), catching up a
    run missed while the machine was off."""
    return (
        "# Written by pgbatten schedule.\n"
        "[Unit]\n"
        f"Description=Daily pgbatten renew: {job.description}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={on_calendar}\n"
        "RandomizedDelaySec=1h\n"
        "Persistent=true\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def unit_paths(unit_dir: Path, name: str = UNIT_NAME) -> tuple[Path, Path]:
    return unit_dir / f"{name}.service", unit_dir / f"{name}.timer"


def cron_line(job: Job, *, with_user: bool = True, logger: str | None = None) -> str:
    """A line for /etc/cron.d (with the user field) or a crontab (``with_user=False``), logging to the
    journal through systemd-cat (which keeps renew's exit status), else to syslog through logger."""
    digest = int(hashlib.sha256(" ".join(job.argv).encode()).hexdigest(), 16)
    minute, hour = digest % 60, 1 + (digest // 60) % 5  # between 01:00 and 05:59, stable per job
    command = " ".join(shlex.quote(a) for a in job.argv)
    # A user's crontab has no user field; /etc/cron.d does.
    if logger is None:
        logger = "systemd-cat" if shutil.which("systemd-cat") else "logger"
    wrapped = (
        f"systemd-cat -t {UNIT_NAME} {command}"
        if logger == "systemd-cat"
        else f"{command} 2>&1 | logger -t {UNIT_NAME}"
    )
    # cron turns an unescaped % into a line break.
    wrapped = wrapped.replace("%", "\\%")
    user = f"{job.user.name} " if with_user else ""
    return f"{minute} {hour} * * * {user}{wrapped}"


def _group_name(user: OsUser) -> str:
    import grp

    try:
        return grp.getgrgid(user.gid).gr_name
    except KeyError:
        return str(user.gid)


def renew_argv(
    base: Sequence[str],
    cluster_options: Sequence[str],
    ca_dir: Path,
    *,
    passphrase_file: Path | None = None,
    extra: Sequence[str] = (),
) -> tuple[str, ...]:
    """``pgbatten renew`` with every path absolute and ``--yes`` (nobody answers a question at night)."""
    argv = [*base, "renew", *cluster_options, "--ca-dir", str(ca_dir.absolute())]
    if passphrase_file is not None:
        argv += ["--ca-passphrase-file", str(passphrase_file.absolute())]
    return (*argv, *extra, "--yes")


def ca_key_owner(ca_dir: Path) -> OsUser:
    key = ca_dir / "ca.key"
    try:
        st = key.stat()
    except OSError as exc:
        raise UsageError(f"no CA key at {key}: create the CA first (pgbatten ca init or secure)") from exc
    return OsUser.by_uid(st.st_uid)


def default_unit_dir() -> Path:
    """/etc/systemd/system for root; a user's own unit directory otherwise."""
    if os.geteuid() == 0:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"
