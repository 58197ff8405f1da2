"""Doing the cluster's work as the cluster's OS owner.

PostgreSQL refuses to run as root, and files in PGDATA must stay owned by the cluster's owner; when pgbatten
is started as root it therefore runs server tools as that owner and hands them files it owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgbatten.errors import ClusterError, FileProblem


@dataclass(frozen=True)
class OsUser:
    """An operating-system account."""

    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def by_uid(cls, uid: int) -> OsUser:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(name=str(uid), uid=uid, gid=uid, home=Path("/"))
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir))

    @classmethod
    def by_name(cls, name: str) -> OsUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError as exc:
            raise ClusterError(f"no OS user {name!r} on this machine") from exc
        return cls(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=Path(entry.pw_dir))

    @classmethod
    def owner_of(cls, path: Path) -> OsUser:
        try:
            st = path.stat()
        except OSError as exc:
            raise FileProblem(path, exc.strerror or "cannot stat") from exc
        return cls.by_uid(st.st_uid)

    @classmethod
    def current(cls) -> OsUser:
        return cls.by_uid(os.geteuid())

    @property
    def ids(self) -> tuple[int, int]:
        return (self.uid, self.gid)


def needs_switch(user: OsUser) -> bool:
    """True when we are root acting for an unprivileged owner."""
    return os.geteuid() == 0 and user.uid != 0


def server_user() -> OsUser:
    """The account a new cluster should belong to: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return OsUser.current()
    return OsUser.by_name("postgres")


def run_as(
    user: OsUser | None,
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (switching only when we are root), capturing text output.

    The tool never sees the operator's ``PG*`` variables (``PGHOST``, ``PGPORT``, ``PGSERVICE``,
    ``PGSSLMODE``, ``PGOPTIONS``, ``PGCLIENTENCODING``, ``PGDATA``…): what psql or pg_ctl does for pgbatten
    must not depend on the shell it was started from. ``env`` adds what the caller means to pass.
    """
    full_env = tool_environment()
    kwargs: dict[str, object] = {}
    if user is not None and needs_switch(user):
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        full_env.update({"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name})
    if env:
        full_env.update(env)
    name = Path(str(argv[0])).name
    try:
        process = subprocess.Popen(  # type: ignore[call-overload]
            [str(a) for a in argv],
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            # The owner may not be able to enter our working directory (root's home, a 0700 temp dir).
            cwd="/",
            # A group of its own, so that on an interrupt we can stop the tool *and* what it started
            # (initdb's bootstrap backend would otherwise go on writing into a directory being removed).
            start_new_session=True,
            **kwargs,
        )
    except FileNotFoundError as exc:
        raise ClusterError(f"cannot run {argv[0]}: not found") from exc
    assert isinstance(process, subprocess.Popen)
    try:
        stdout, stderr = process.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(process)
        raise ClusterError(f"{name} did not finish within {timeout:.0f} s") from exc
    except BaseException:
        _kill_group(process)
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.returncode}"
        raise ClusterError(f"{name} failed: {last}")
    return result


def tool_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the variables libpq, psql and the server tools read."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(("PG", "PSQL"))}


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
