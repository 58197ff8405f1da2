"""``pgbatten renew``: re-issue what is due and put it in force the way ``secure`` changes a cluster.

For each cluster: a pure plan (:mod:`.renew_plan`), the diff, then ``secure``'s own apply — backups, atomic
writes as the owner, validation by PostgreSQL, a **reload** (never a restart: no session is dropped) — and
proofs from outside (:mod:`.renew_proof`): the new certificate is the one served, ``verify-full`` works by
name and by address with real libpq (during a CA rotation with the old root alone, the new root alone and
both), plaintext is still refused. Any failed proof restores every file and reloads again, so the old
certificate keeps serving.

The CA side comes first: replaced client certificates whose grace period is over are revoked, client
certificates that are due are re-issued into fresh bundles, and a CRL that is due is re-signed, so the
cluster plans install the current CRL. Nothing due: nothing is written, not even a backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from pgbatten.cluster.discover import Cluster
from pgbatten.errors import PgBattenError, UsageError
from pgbatten.fsutil import directory_lock, read_bytes_or_none
from pgbatten.lifecycle.clients import (
    BUNDLES_DIR,
    ClientDue,
    ClientRenewal,
    Replacement,
    clients_due,
    load_replacements,
    pending_handover,
    reissue,
    revocations_due,
)
from pgbatten.lifecycle.facts import ask_server
from pgbatten.lifecycle.renew_plan import RenewPlan, RenewRequest, ServerFiles, plan_server_renewal
from pgbatten.lifecycle.renew_proof import prove_renewal, render_changes
from pgbatten.lifecycle.sessions import end_sessions, report_line
from pgbatten.lifecycle.timeline import Validity, crl_resign_due
from pgbatten.pki import CAStore, ClusterRef, KeyType
from pgbatten.pki.operations import open_store, refresh_crl
from pgbatten.pki.overlap import crl_bundle, load_rotation, trust_for
from pgbatten.pki.trust import Trust
from pgbatten.secure.apply import apply_plan, reload_and_wait
from pgbatten.secure.hosts import gather_machine_names, probe_addresses
from pgbatten.secure.plan import CRL_NAME, FileChange
from pgbatten.secure.verify import Proof

Log = Callable[[str], None]
PATH_SETTINGS = ("ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file")


@dataclass(frozen=True)
class RenewOptions:
    """Everything ``pgbatten renew`` takes from the command line."""

    clusters: tuple[ClusterRef, ...] = ()
    clients: tuple[str, ...] = ()
    all_clients: bool = False
    before: dt.timedelta | None = None
    days: int = 365
    client_days: int = 365
    crl_days: int = 30
    grace: dt.timedelta | None = None
    out_dir: Path | None = None
    key_type: KeyType = KeyType.ECDSA_P256
    p12_password: bytes | None = field(default=None, repr=False)
    dry_run: bool = False
    yes: bool = False
    ca_passphrase: bytes | None = field(default=None, repr=False)
    timeout: float = 5.0
    lock_wait: float = 15.0
    """Seconds to wait for another pgbatten run on the same CA directory or cluster."""
    now: dt.datetime | None = None
    """Judge "due" as of this time (tests move the clock); certificates are issued from the real one."""


@dataclass(frozen=True)
class ClusterOutcome:
    """What happened to one cluster."""

    label: str
    plan: RenewPlan
    applied: bool = False
    proofs: tuple[Proof, ...] = ()
    backups: tuple[tuple[Path, Path], ...] = ()
    error: str | None = None
    rolled_back: bool = True
    """After an error: whether files were written and the old ones restored, so the old certificate keeps
    serving (False when only a reload was done, or when the run was refused before writing anything)."""
    sessions_ended: int = 0
    """Sessions ended because they authenticated with a certificate revoked by this run."""


@dataclass(frozen=True)
class CrlOutcome:
    """A CRL re-signed in the CA directory."""

    ca_dir: Path
    reason: str
    number: int | None = None
    next_update: dt.datetime | None = None


@dataclass(frozen=True)
class RenewResult:
    """Everything ``renew`` did, or would do with ``--dry-run``."""

    clusters: tuple[ClusterOutcome, ...]
    clients: tuple[ClientRenewal, ...]
    clients_due: tuple[ClientDue, ...]
    revoked: tuple[Replacement, ...]
    handover: tuple[Replacement, ...]
    crls: tuple[CrlOutcome, ...]
    dry_run: bool

    @property
    def failed(self) -> tuple[ClusterOutcome, ...]:
        return tuple(c for c in self.clusters if c.error is not None)

    @property
    def nothing_due(self) -> bool:
        due_clients = [d for d in self.clients_due if d.reasons]
        return not (
            any(c.plan.due for c in self.clusters) or due_clients or self.revoked or self.crls or self.clients
        )


# -- reading a cluster ---------------------------------------------------------------------------------------


def read_server_files(cluster: Cluster, stores: Sequence[CAStore], *, timeout: float) -> ServerFiles:
    """The TLS settings the running server uses, the bytes of their files, and the certificate it serves."""
    running = cluster.require_running()
    rows = cluster.sql().query(
        "SELECT name, setting, source FROM pg_settings WHERE name = ANY (string_to_array(:'names', ','))",
        {"names": ",".join(("ssl", "listen_addresses", *PATH_SETTINGS))},
    )
    live = {str(r[0]): r[1] or "" for r in rows}
    source = {str(r[0]): r[2] or "" for r in rows}
    paths: dict[str, Path | None] = {}
    for name in PATH_SETTINGS:
        value = live.get(name, "")
        path = Path(value) if value else None
        paths[name] = path if path is None or path.is_absolute() else cluster.data_dir / path
    existing: dict[Path, bytes] = {}
    for path in paths.values():
        if path is not None:
            data = read_bytes_or_none(path)
            if data is not None:
                existing[path] = data
    served = ask_server(live.get("listen_addresses", ""), running.port, timeout=timeout)
    revoked = frozenset(e.serial for s in stores for e in s.entries() if e.revoked)
    return ServerFiles(
        label=cluster.label,
        cert_path=paths["ssl_cert_file"],
        key_path=paths["ssl_key_file"],
        ca_path=paths["ssl_ca_file"],
        crl_path=paths["ssl_crl_file"],
        existing=existing,
        # Settings made in a configuration file are proved still in effect after the reload; one given on
        # the server's command line is not in pg_file_settings, where apply_plan's validation looks.
        settings={n: live[n] for n in PATH_SETTINGS if live.get(n) and source.get(n) == "configuration file"},
        served_fingerprint=served.leaf_fingerprint,
        ssl_on=live.get("ssl", "off") == "on",
        revoked_serials=revoked,
    )


# -- CRLs ----------------------------------------------------------------------------------------------------


def crl_reason(store: CAStore, now: dt.datetime, *, needed: bool) -> str | None:
    """Why ``store``'s CRL must be signed now, or None. ``needed``: some server checks this CA's CRL."""
    crl = store.load_crl()
    revoked = [e for e in store.entries() if e.revoked and e.not_after > now]
    if crl is None:
        if revoked:
            return "certificates are revoked but no CRL was signed"
        return "a server checks CRLs and this CA has none yet" if needed else None
    if crl.next_update_utc is not None and crl_resign_due(
        Validity(crl.last_update_utc, crl.next_update_utc), now
    ):
        return (
            f"less than half of its validity is left (next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC)"
        )
    listed = {r.serial_number for r in crl}
    cutoff = crl.last_update_utc - dt.timedelta(minutes=5)
    if any(e.serial not in listed and e.not_after >= cutoff for e in revoked):
        return "revocations are missing from it"
    return None


# -- the run -------------------------------------------------------------------------------------------------


def _crl_change(files: ServerFiles, crl: bytes) -> FileChange | None:
    path = files.crl_path
    if path is None or path.name != CRL_NAME or files.content(path) == crl:
        return None
    return FileChange(path, files.content(path), crl, 0o644, purpose="CRL")


def with_crl(plan: RenewPlan, files: ServerFiles, crl: bytes | None) -> RenewPlan:
    """The plan with the CRL file brought to ``crl`` (a CRL per CA in force), when the server has one."""
    if plan.skipped is not None or crl is None:
        return plan
    change = _crl_change(files, crl)
    if change is None:
        return plan
    kept = tuple(c for c in plan.changes if c.purpose != "CRL")
    reasons = (
        plan.reasons if plan.changes else (*plan.reasons, "the installed CRL is not the CA's current one")
    )
    return replace(plan, changes=(*kept, change), reasons=reasons, reload=False)


def _apply(
    cluster: Cluster,
    files: ServerFiles,
    plan: RenewPlan,
    trust: Trust,
    store: CAStore,
    options: RenewOptions,
    log: Log,
) -> ClusterOutcome:
    listen = cluster.sql().value("SELECT current_setting('listen_addresses')") or ""
    addresses = probe_addresses(listen, gather_machine_names(listen))
    if not addresses:
        # Refused before anything was written: there is nothing to restore.
        return ClusterOutcome(
            plan.label, plan, error="listen_addresses has no TCP address to prove from", rolled_back=False
        )

    def prove() -> list[Proof]:
        return prove_renewal(
            cluster,
            plan,
            trust,
            addresses=addresses,
            client_auth=files.ca_path is not None,
            timeout=options.timeout,
        )

    if plan.issued is not None:
        # Recorded before it is served, so no served certificate is ever missing from the inventory.
        store.record(plan.issued, "server", plan.hosts[0])
    try:
        if plan.changed:
            outcome = apply_plan(cluster, plan, prove=prove, log=log)
            return ClusterOutcome(plan.label, plan, True, outcome.proofs, outcome.backups)
        log(f"{plan.label}: the files are right but not in effect; reloading")
        sql = cluster.sql()
        reload_and_wait(sql)
        proofs = prove()
        failed = [p for p in proofs if not p.ok]
        if failed:
            # Nothing was written, so there is nothing to restore: the installed files are now in force.
            detail = "; ".join(f"{p.what}: {p.detail}" for p in failed)
            return ClusterOutcome(
                plan.label,
                plan,
                True,
                tuple(proofs),
                error=f"reloaded, so the installed certificate is served now, but: {detail}",
                rolled_back=False,
            )
        return ClusterOutcome(plan.label, plan, True, tuple(proofs))
    except PgBattenError as exc:
        if plan.issued is not None:
            with contextlib.suppress(PgBattenError):
                store.forget(plan.issued.serial)
        return ClusterOutcome(plan.label, plan, error=str(exc))


def _subject(store: CAStore) -> x509.Name:
    return x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes()).subject


def _idle(label: str) -> RenewPlan:
    return RenewPlan(label=label, changes=(), settings={}, certificate=None)


def _not_running(cluster: Cluster) -> str:
    return f"cluster {cluster.label} is not running; start it (renew puts certificates in force by reload)"


def renew(
    ca_dir: Path,
    options: RenewOptions,
    *,
    log: Log,
    confirm: Callable[[str], bool] | None = None,
) -> RenewResult:
    """Renew everything due for the clusters and clients named; see the module docstring."""
    store = open_store(ca_dir)
    discovered = [ref.discover() for ref in options.clusters]  # a wrong name stops everything here
    with contextlib.ExitStack() as locks:
        if not options.dry_run:
            # One run changes a CA directory and a cluster at a time (secure takes the same locks), from the
            # decision to the proof, so a concurrent secure or cert revoke cannot undo what this one does.
            locks.enter_context(store.lock(wait=options.lock_wait))
            for cluster in discovered:
                locks.enter_context(
                    directory_lock(cluster.data_dir, wait=options.lock_wait, what=f"cluster {cluster.label}")
                )
        return _renew_locked(store, discovered, options, log=log, confirm=confirm)


def _renew_locked(
    store: CAStore,
    discovered: Sequence[Cluster],
    options: RenewOptions,
    *,
    log: Log,
    confirm: Callable[[str], bool] | None,
) -> RenewResult:
    now = options.now or dt.datetime.now(dt.UTC)
    rotation = load_rotation(store.path)
    stores: list[CAStore] = [store, *([rotation.previous] if rotation is not None else [])]
    # A stopped cluster fails on its own; the others are still renewed (a schedule covers several).
    stopped = [
        # Nothing written and nothing served: "rolled back, the old certificate keeps serving" would be false.
        ClusterOutcome(c.label, _idle(c.label), error=_not_running(c), rolled_back=False)
        for c in discovered
        if c.running is None
    ]
    clusters = [c for c in discovered if c.running is not None]
    read = [read_server_files(c, stores, timeout=options.timeout) for c in clusters]

    # What is due on the CA side (no key needed to decide).
    dues: list[ClientDue] = []
    if options.clients or options.all_clients:
        pairs = [(store, False), *([(rotation.previous, True)] if rotation is not None else [])]
        dues = clients_due(pairs, options.clients, every=options.all_clients, now=now, before=options.before)
    replacements = {s.path: load_replacements(s) for s in stores[:1]}
    revoked_now = {e.serial for s in stores for e in s.entries() if e.revoked}
    grace_over = revocations_due(replacements[store.path], revoked_now, now)
    uses_crl = any(f.crl_path is not None and f.crl_path.name == CRL_NAME for f in read)
    crl_reasons: dict[Path, str] = {}
    for s in stores:
        reason = crl_reason(s, now, needed=uses_crl)
        if s is store and grace_over:
            reason = f"{len(grace_over)} replaced certificate(s) are revoked after their grace period"
        if reason is not None:
            crl_reasons[s.path] = reason

    # What is due is decided from the certificates alone; the key is loaded only when something is, so a
    # run with nothing due needs no passphrase.
    due_clients = [d for d in dues if d.reasons]
    request = RenewRequest(now=now, before=options.before, days=options.days)
    current_crl = crl_bundle(stores)
    trust = trust_for(store)
    plans = [
        with_crl(plan_server_renewal(f, trust, replace(request, dry=True)), f, current_crl) for f in read
    ]
    if any(p.due for p in plans) or due_clients or grace_over or crl_reasons:
        trust = trust_for(store, store.load(options.ca_passphrase))
        plans = [with_crl(plan_server_renewal(f, trust, request), f, current_crl) for f in read]

    for plan in plans:
        if plan.skipped is not None:
            log(f"{plan.label}: skipped: {plan.skipped}")
        elif plan.due:
            log(f"{plan.label}: due: {'; '.join(plan.reasons)}")
            if plan.changes:
                log(render_changes(plan.changes).rstrip("\n"))
        else:
            log(f"{plan.label}: nothing due")
    for d in dues:
        log(
            f"client {d.user} ({d.entry.serial:#x}): "
            + ("due: " + "; ".join(d.reasons) if d.reasons else f"not due before {d.renew_at:%Y-%m-%d}")
        )
    for r in grace_over:
        log(f"client {r.user}: revoke {r.old_serial:#x}, replaced by {r.new_serial:#x}, grace period over")
    for path, reason in crl_reasons.items():
        log(f"CRL of {path}: re-sign: {reason}")

    anything = any(p.due for p in plans) or due_clients or grace_over or crl_reasons
    handover = pending_handover(replacements[store.path], revoked_now)
    if options.dry_run or not anything:
        return RenewResult(
            clusters=(*stopped, *(ClusterOutcome(p.label, p) for p in plans)),
            clients=(),
            clients_due=tuple(dues),
            revoked=tuple(grace_over) if options.dry_run else (),
            handover=tuple(handover),
            crls=tuple(CrlOutcome(Path(p), r) for p, r in crl_reasons.items()) if options.dry_run else (),
            dry_run=options.dry_run,
        )
    if not options.yes and confirm is not None and not confirm("Renew these?"):
        raise UsageError("nothing was renewed (not confirmed)")
    authority = trust.signer()

    # The CA side: revocations after grace, client bundles, CRLs.
    for r in grace_over:
        # The replaced certificate may be the retiring CA's (re-issued during an overlap).
        holder = next((s for s in stores if any(e.serial == r.old_serial for e in s.entries())), None)
        if holder is not None:
            holder.revoke(f"{r.old_serial:#x}", now=dt.datetime.now(dt.UTC))
            if holder is not store:
                crl_reasons.setdefault(
                    holder.path, "a replaced certificate is revoked after its grace period"
                )
    renewed: list[ClientRenewal] = []
    port = clusters[0].require_running().port if clusters else 5432
    base_dir = options.out_dir or store.path / BUNDLES_DIR
    for d in due_clients:
        renewed.append(
            reissue(
                store,
                trust,
                d,
                base_dir=base_dir,
                days=options.client_days,
                key_type=options.key_type,
                port=port,
                server_host=None,
                p12_password=options.p12_password,
                grace=options.grace,
                now=dt.datetime.now(dt.UTC),
            )
        )
    crls: list[CrlOutcome] = []
    for s in stores:
        if s.path not in crl_reasons:
            continue
        signer = authority if s is store else s.load(options.ca_passphrase)
        signed = refresh_crl(s, signer, crl_days=options.crl_days)
        number = _crl_number(signed.crl)
        crls.append(CrlOutcome(s.path, crl_reasons[s.path], number, signed.crl.next_update_utc))
    new_crl = crl_bundle(stores)
    plans = [with_crl(p, f, new_crl) for p, f in zip(plans, read, strict=True)]

    outcomes: list[ClusterOutcome] = []
    for cluster, files, plan in zip(clusters, read, plans, strict=True):
        if not plan.due or plan.skipped is not None:
            outcomes.append(ClusterOutcome(plan.label, plan))
            continue
        outcome = _apply(cluster, files, plan, trust, store, options, log)
        if grace_over and outcome.error is None and any(c.purpose == "CRL" for c in plan.changes):
            # The CRL with the replaced certificates is in force here: their sessions end too.
            issuers = {e.serial: s for s in stores for e in s.entries()}
            revoked = [
                (r.old_serial, _subject(issuers[r.old_serial])) for r in grace_over if r.old_serial in issuers
            ]
            ended = end_sessions(cluster.sql(), revoked)
            if ended.count:
                log(f"{plan.label}: {report_line(ended)}")
            outcome = replace(outcome, sessions_ended=ended.count)
        outcomes.append(outcome)
    revoked_after = {e.serial for s in stores for e in s.entries() if e.revoked}
    return RenewResult(
        clusters=(*stopped, *outcomes),
        clients=tuple(renewed),
        clients_due=tuple(dues),
        revoked=tuple(grace_over),
        handover=tuple(pending_handover(load_replacements(store), revoked_after)),
        crls=tuple(crls),
        dry_run=False,
    )


def _crl_number(crl: object) -> int | None:
    from cryptography import x509

    assert isinstance(crl, x509.CertificateRevocationList)
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


__all__ = [
    "ClusterOutcome",
    "CrlOutcome",
    "RenewOptions",
    "RenewPlan",
    "RenewResult",
    "crl_reason",
    "plan_server_renewal",
    "read_server_files",
    "renew",
    "with_crl",
]
