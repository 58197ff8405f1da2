"""Applying a plan without locking anyone out or losing a file.

Order of work: back up every file to be replaced (each backup written whole or not at all); write every file
atomically as the cluster's owner, through symbolic links; ask PostgreSQL itself whether it can use the new
files (pg_file_settings, pg_hba_file_rules, the certificate and key loaded as the server will) before they
take effect; reload (never restart, so no session is dropped); prove the result from outside. Any failure,
Ctrl-C or SIGTERM restores the old bytes and reloads again; a file that cannot be restored does not stop
the others from being restored. When nothing needs writing but the files on disk are not what the server
runs (a run killed before its reload), the reload and the proofs finish the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pgbatten import faults
from pgbatten.cluster.discover import Cluster
from pgbatten.cluster.osuser import needs_switch
from pgbatten.cluster.sql import OwnerSQL
from pgbatten.errors import ClusterError, FileProblem, PgBattenError, RollbackError, VerificationError
from pgbatten.fsutil import atomic_write, backup_file, read_bytes_or_none, real_path, remove_file, timestamp
from pgbatten.secure.plan import FileChange
from pgbatten.secure.validate import same_setting, validate_with_postgres
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
    """What was done: backups made (original → copy), whether the server reloaded, and the outside proofs.

    ``repaired`` is a reload with no file written: the files were right but not in effect.
    """

    backups: tuple[tuple[Path, Path], ...]
    proofs: tuple[Proof, ...]
    reloaded: bool = False
    repaired: bool = False
    notes: tuple[str, ...] = ()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while a rollback runs, so a second Ctrl-C cannot cut it short.

    The signals are delivered (and raise) as soon as the rollback is done.
    """
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Transaction:
    """The files of one plan, written with backups and undoable until committed."""

    def __init__(self, cluster: Cluster, plan: ChangeSet) -> None:
        self.cluster = cluster
        self.plan = plan
        self.written: list[_Written] = []
        self.backups: list[tuple[Path, Path]] = []
        self._backup_of: dict[Path, Path] = {}
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
        # Every backup before the first replacement: a backup that fails (full disk) changes nothing.
        for change in self.plan.changes:
            if change.old is not None:
                backup = backup_file(change.path, self.stamp)
                self.backups.append((change.path, backup))
                self._backup_of[change.path] = backup
        faults.point("backed-up")
        for index, change in enumerate(self.plan.changes):
            owner = self._owner_for(change.path)
            mode = change.mode if change.old is None else stat.S_IMODE(change.path.stat().st_mode)
            # Record before writing: a half-finished write must be undone too.
            self.written.append(_Written(change, mode, owner))
            atomic_write(change.path, change.new, mode=mode, owner=owner)
            if index == 0:
                faults.point("first-file")

    def undo(self) -> list[str]:
        """Restore every file written; go on past a file that cannot be restored. Returns the problems."""
        problems: list[str] = []
        for item in reversed(self.written):
            change = item.change
            try:
                current = read_bytes_or_none(change.path)
                if current == change.old:
                    continue  # never written (the write failed), or already restored
                if change.old is None:
                    remove_file(change.path)
                else:
                    atomic_write(change.path, change.old, mode=item.mode, owner=item.owner)
            except (PgBattenError, OSError) as exc:
                backup = self._backup_of.get(change.path)
                hint = f" (the original is in {backup})" if backup is not None else ""
                problems.append(f"{real_path(change.path)}: {exc}{hint}")
        self.written.clear()
        return problems


def reload_and_wait(sql: OwnerSQL) -> None:
    """pg_reload_conf() only signals the postmaster; wait until new sessions run on the new files.

    Each query forks a backend, so the signal goes with the first one and the first look waits a moment
    (a reload takes milliseconds): usually two backends in all.
    """
    [(before, signalled)] = sql.query("SELECT pg_conf_load_time()::text, pg_reload_conf()")
    if signalled != "t":
        raise ClusterError("pg_reload_conf() returned false")
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if sql.value("SELECT pg_conf_load_time() > :'before'::timestamptz", {"before": before or ""}) == "t":
            return
    raise ClusterError(f"the server did not reload its configuration within {RELOAD_WAIT_SECONDS:.0f} s")


def check_settings(
    sql: OwnerSQL, settings: Mapping[str, str], live: Mapping[str, str | None] | None = None
) -> list[Proof]:
    """Whether each setting is in effect, from ``pg_settings`` (or ``live``, values already read from it)."""
    if live is None:
        rows = sql.query(
            "SELECT name, setting FROM pg_settings WHERE name = ANY (string_to_array(:'names', ','))",
            {"names": ",".join(settings)},
        )
        live = {str(name): value for name, value in rows}
    wrong = [f"{n} is {live.get(n)!r}" for n, v in settings.items() if not same_setting(n, live.get(n), v)]
    return [
        Proof("settings in effect after reload", not wrong, "; ".join(wrong) or f"{len(settings)} settings")
    ]


def rollback(tx: Transaction, sql: OwnerSQL, *, reload: bool, log: Log) -> None:
    """Restore every file, then reload if the server had loaded the new ones; ``RollbackError`` if a file
    could not be restored (the server is then left on the configuration it loaded last, whole)."""
    with signals_deferred():
        problems = tx.undo()
        if problems:
            raise RollbackError(
                "the rollback could not restore every file: "
                + "; ".join(problems)
                + "; every other file was restored and the server was not reloaded, so it runs the"
                " configuration it loaded last: restore the file(s) named, then reload"
            )
        if reload:
            try:
                reload_and_wait(sql)
            except ClusterError as exc:
                log(f"the reload after restoring the files failed: {exc}")


def apply_plan(
    cluster: Cluster,
    plan: ChangeSet,
    *,
    prove: Callable[[], Sequence[Proof]],
    log: Log,
    stale: Sequence[Path] = (),
    live: Mapping[str, str | None] | None = None,
    on_commit: Callable[[], None] | None = None,
) -> ApplyResult:
    """Write, validate, reload and prove; on any failure restore every file and reload again.

    With nothing to write, ``stale`` (files changed since the server last loaded its configuration) or a
    setting not in effect means an earlier run stopped before its reload: validate, reload, and prove.
    ``live`` is ``pg_settings`` as read under the same lock, which saves asking again when nothing changes.

    The commit point is the last proof passing: ``on_commit`` runs then, with signals held, so a caller
    knows for certain whether the change stands. A signal before it rolls back; one after it does not.
    """
    cluster.require_running()
    sql = cluster.sql()
    tx = Transaction(cluster, plan)
    notes: list[str] = []
    reloaded = repaired = False
    in_effect: list[Proof] | None = None
    if plan.changed:
        # One guard from the first write to the last proof: a signal may land between any two steps, and
        # wherever it lands every file is restored (and reloaded, once the new ones may be in effect).
        loaded = committed = False
        try:
            tx.write_all()
            faults.point("written")
            log(f"wrote {len(plan.changes)} file(s); asking PostgreSQL to validate them")
            notes.extend(validate_with_postgres(sql, plan.settings, cluster.owner))
            faults.point("validated")
            loaded = True  # before the reload: one cut short may still have taken effect
            reload_and_wait(sql)
            reloaded = True
            log("reloaded (no restart: open sessions keep running)")
            faults.point("reloaded")
            proofs = [*check_settings(sql, plan.settings), *prove()]
            if all(p.ok for p in proofs):
                with signals_deferred():
                    committed = True
                    if on_commit is not None:
                        on_commit()
        except BaseException as exc:
            if committed:
                raise  # a signal after the commit: the proved change stands
            if loaded:
                log("the change could not be proved: restoring the previous files and reloading")
            _rollback_then_raise(tx, sql, exc, reload=loaded, log=log)
            raise
    else:
        pending = check_settings(sql, plan.settings, live)
        if stale or not all(p.ok for p in pending):
            why = pending[0].detail if not pending[0].ok else f"{', '.join(map(str, stale))} changed since"
            log(f"the files are in place but not in effect ({why}): validating and reloading")
            notes.extend(validate_with_postgres(sql, plan.settings, cluster.owner))
            reload_and_wait(sql)
            reloaded = repaired = True
            faults.point("reloaded")
        else:
            in_effect = pending  # the same query after no reload: no need to ask twice
        proofs = [*(in_effect or check_settings(sql, plan.settings)), *prove()]
        if all(p.ok for p in proofs) and on_commit is not None:
            on_commit()
    failed = [p for p in proofs if not p.ok]
    reasons = "; ".join(f"{p.what}: {p.detail}" for p in failed)
    if failed and plan.changed:
        log("a check failed: restoring the previous files and reloading")
        error = VerificationError(f"rolled back, the server is as before: {reasons}")
        _rollback_then_raise(tx, sql, error, reload=True, log=log)
        raise error
    if failed:
        raise VerificationError(f"nothing to change, but: {reasons}")
    faults.point("proved")
    return ApplyResult(
        backups=tuple(tx.backups),
        proofs=tuple(proofs),
        reloaded=reloaded,
        repaired=repaired,
        notes=tuple(notes),
    )


def _rollback_then_raise(
    tx: Transaction, sql: OwnerSQL, cause: BaseException, *, reload: bool, log: Log
) -> None:
    """Roll back; if that fails too, raise one error that says both what failed and what was left."""
    try:
        rollback(tx, sql, reload=reload, log=log)
    except RollbackError as exc:
        what = str(cause) if isinstance(cause, PgBattenError) else type(cause).__name__
        raise RollbackError(f"{what}; and {exc}") from cause
