"""Applying a plan without locking anyone out or losing a file.

Order of work: back up every file to be replaced; write every file atomically as the cluster's owner; ask
PostgreSQL itself whether it can read the new files (pg_file_settings, pg_hba_file_rules) before they take
effect; reload (never restart, so no session is dropped); prove the result from outside. Any failure
restores the old bytes and reloads again.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pgbatten.cluster.discover import Cluster
from pgbatten.cluster.osuser import needs_switch
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ClusterError, FileProblem, ValidationError, VerificationError
from pgbatten.fsutil import atomic_write, backup_file, read_bytes_or_none, timestamp
from pgbatten.secure.plan import FileChange
from pgbatten.secure.verify import Proof

Log = Callable[[str], None]
RELOAD_WAIT_SECONDS = 15.0


class ChangeSet(Protocol):
    """What ``Transaction`` and ``apply_plan`` need of a plan: ``SecurePlan`` and the CRL plan both fit."""

    @property
    def changes(self) -> tuple[FileChange, ...]: ...

    @property
    def settings(self) -> Mapping[str, str]: ...

    @property
    def changed(self) -> bool: ...


@dataclass(frozen=True)
class _Written:
    change: FileChange
    mode: int
    owner: tuple[int, int] | None


@dataclass(frozen=True)
class ApplyResult:
    """What was done: backups made (original → copy), files created, and the outside proofs."""

    backups: tuple[tuple[Path, Path], ...]
    created: tuple[Path, ...]
    proofs: tuple[Proof, ...]


class Transaction:
    """The files of one plan, written with backups and undoable until committed."""

    def __init__(self, cluster: Cluster, plan: ChangeSet, log: Log) -> None:
        self.cluster = cluster
        self.plan = plan
        self.log = log
        self.written: list[_Written] = []
        self.backups: list[tuple[Path, Path]] = []
        self.stamp = timestamp()

    def _owner_for(self, path: Path) -> tuple[int, int] | None:
        if path.exists():
            st = path.stat()
            return (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
        return self.cluster.owner.ids if needs_switch(self.cluster.owner) else None

    def write_all(self) -> None:
        for change in self.plan.changes:
            current = read_bytes_or_none(change.path)
            if current != change.old:
                raise FileProblem(change.path, "changed since the plan was made; run pgbatten again")
        for change in self.plan.changes:
            owner = self._owner_for(change.path)
            mode = change.mode
            if change.old is not None:
                mode = stat.S_IMODE(change.path.stat().st_mode)
                self.backups.append((change.path, backup_file(change.path, self.stamp)))
            # Record before writing: a half-finished write must be undone too.
            self.written.append(_Written(change, mode, owner))
            atomic_write(change.path, change.new, mode=mode, owner=owner)

    def undo(self) -> None:
        for item in reversed(self.written):
            if item.change.old is None:
                with contextlib.suppress(FileNotFoundError):
                    item.change.path.unlink()
            else:
                atomic_write(item.change.path, item.change.old, mode=item.mode, owner=item.owner)
        self.written.clear()


def validate_with_postgres(sql: OwnerSQL, settings: Mapping[str, str]) -> None:
    """Have PostgreSQL parse the files now on disk, before a reload makes them count."""
    bad_hba = sql.query("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL")
    if settings.get("ssl") == "on":
        # Checked against the running server's ssl = off; the reload turns ssl on before it reads pg_hba.
        bad_hba = [row for row in bad_hba if "SSL is disabled" not in (row[1] or "")]
    if bad_hba:
        line, error = bad_hba[0]
        raise ValidationError(f"PostgreSQL rejects the new pg_hba.conf at line {line}: {error}")
    bad_conf = sql.query(
        "SELECT sourcefile, sourceline, name, error FROM pg_file_settings WHERE error IS NOT NULL"
    )
    if bad_conf:
        source, line, name, error = bad_conf[0]
        raise ValidationError(f"PostgreSQL rejects {name} at {source}:{line}: {error}")
    rows = sql.query(
        "SELECT name, setting, sourcefile, sourceline FROM pg_file_settings"
        " WHERE applied AND name = ANY (string_to_array(:'names', ','))",
        {"names": ",".join(settings)},
    )
    applied = {row[0]: row for row in rows}
    for name, value in settings.items():
        row = applied.get(name)
        if row is None or row[1] != value:
            where = f" (PostgreSQL takes {row[1]!r} from {row[2]}:{row[3]})" if row else ""
            raise ValidationError(f"{name} = {value!r} would not take effect{where}")


def reload_and_wait(sql: OwnerSQL) -> None:
    """pg_reload_conf() only signals the postmaster; wait until new sessions run on the new files."""
    before = sql.value("SELECT pg_conf_load_time()")
    if sql.value("SELECT pg_reload_conf()") != "t":
        raise ClusterError("pg_reload_conf() returned false")
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        if sql.value("SELECT pg_conf_load_time() > :'before'::timestamptz", {"before": before or ""}) == "t":
            return
        time.sleep(0.1)
    raise ClusterError(f"the server did not reload its configuration within {RELOAD_WAIT_SECONDS:.0f} s")


def check_settings(sql: OwnerSQL, settings: Mapping[str, str]) -> list[Proof]:
    rows = sql.query(
        "SELECT name, setting FROM pg_settings WHERE name = ANY (string_to_array(:'names', ','))",
        {"names": ",".join(settings)},
    )
    live = {name: value for name, value in rows}
    wrong = [f"{n} is {live.get(n)!r}" for n, v in settings.items() if live.get(n) != v]
    return [
        Proof("settings in effect after reload", not wrong, "; ".join(wrong) or f"{len(settings)} settings")
    ]


def apply_plan(
    cluster: Cluster,
    plan: ChangeSet,
    *,
    prove: Callable[[], Sequence[Proof]],
    log: Log,
) -> ApplyResult:
    """Write, validate, reload and prove; on any failure restore every file and reload again."""
    cluster.require_running()
    sql = cluster.sql()
    tx = Transaction(cluster, plan, log)
    if plan.changed:
        try:
            tx.write_all()
            log(f"wrote {len(plan.changes)} file(s); asking PostgreSQL to validate them")
            validate_with_postgres(sql, plan.settings)
        except BaseException:
            tx.undo()
            raise
        try:
            reload_and_wait(sql)
        except BaseException:
            tx.undo()
            with contextlib.suppress(ClusterError):
                reload_and_wait(sql)
            raise
        log("reloaded (no restart: open sessions keep running)")
    try:
        proofs = [*check_settings(sql, plan.settings), *prove()]
    except BaseException:
        # A proof that cannot even run (Ctrl-C, a lost socket) proves nothing: undo as for a failed one.
        if plan.changed:
            log("the checks could not run: restoring the previous files and reloading")
            tx.undo()
            with contextlib.suppress(ClusterError):
                reload_and_wait(sql)
        raise
    failed = [p for p in proofs if not p.ok]
    if failed and plan.changed:
        log("a check failed: restoring the previous files and reloading")
        tx.undo()
        reload_and_wait(sql)
        raise VerificationError(
            "rolled back, the server is as before: " + "; ".join(f"{p.what}: {p.detail}" for p in failed)
        )
    if failed:
        raise VerificationError(
            "nothing to change, but: " + "; ".join(f"{p.what}: {p.detail}" for p in failed)
        )
    return ApplyResult(
        backups=tuple(tx.backups),
        created=tuple(c.path for c in plan.changes if c.is_new),
        proofs=tuple(proofs),
    )
