"""``secure()``: lock, read, plan, ask, apply by reload, prove, report. Returns a result; prints nothing.

One run changes a cluster (and a CA directory) at a time: both are locked from before the files are read
until the last proof, so a concurrent ``secure`` or ``cert revoke`` can neither write a configuration
computed from files that changed under it nor undo another run's change. Whatever a killed run left
behind (temp files, its throwaway proof role, files written but never reloaded, a served certificate not
yet in the inventory) is finished or cleaned up by the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509

from pgbatten import faults
from pgbatten.certfacts import fingerprint_sha256
from pgbatten.cluster.discover import Cluster
from pgbatten.errors import ClusterError, PgBattenError, PKIError, UsageError
from pgbatten.fsutil import (
    directory_lock,
    read_bytes_or_none,
    real_path,
    remove_file,
    stale_temp_files,
)
from pgbatten.pki import (
    CACertificate,
    CAStore,
    CertificateAuthority,
    ClusterRef,
    Installation,
    InventoryEntry,
    IssuedCertificate,
    classify_host,
    default_ca_dir,
)
from pgbatten.pki.keys import load_private_key_pem
from pgbatten.pki.overlap import crl_bundle, load_rotation, trust_for
from pgbatten.secure import facts
from pgbatten.secure.apply import apply_plan
from pgbatten.secure.hosts import (
    WILDCARDS,
    listens_on_loopback,
    probe_addresses,
    split_listen_addresses,
    unproved_addresses,
)
from pgbatten.secure.lockout import CertificateNeed, certificate_needs, file_tokens, group_tokens
from pgbatten.secure.plan import (
    KEY_NAME,
    PENDING_KEY_NAME,
    AnyCA,
    CaConflict,
    ClusterState,
    SecurePlan,
    plan_secure,
)
from pgbatten.secure.provided import load_provided
from pgbatten.secure.request import SecureRequest
from pgbatten.secure.result import (
    SecurePreview,
    SecureResult,
    Status,
    client_instructions,
    issue_command,
)
from pgbatten.secure.sessions import end_sessions, plaintext_sessions
from pgbatten.secure.verify import Proof, prove_all

# What the client instructions name for a CA directory that is not on this machine (the fleet's control node).
EXTERNAL_CA_DIR = Path("CA_DIR")

Confirm = Callable[[SecurePreview], bool]
Progress = Callable[[str], None]


def _ca_files(store: CAStore) -> list[Path]:
    """Every file a new CA directory may hold (the inventory database with its journal)."""
    db = store.inventory_path
    extra = [db.with_name(db.name + suffix) for suffix in ("-journal", "-wal", "-shm")]
    return [store.ca_key_path, store.ca_cert_path, store.crl_path, db, *extra, store.legacy_inventory_path,
            store.path / ".lock"]  # fmt: skip


# A temp file in the CA directory younger than this may belong to a live `cert` command, which does not
# take our lock; older ones are what a killed run left.
_CA_TEMP_AGE = 60.0


def secure(
    cluster: Cluster,
    request: SecureRequest,
    *,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> SecureResult:
    """Make ``cluster`` TLS-only as ``request`` asks and prove it; see the README's ``secure`` section.

    ``confirm`` sees the preview (plan, lint, who will need a certificate) before anything is written and
    returns whether to apply; None applies. ``progress`` receives one line per step while applying.
    """
    log = progress or (lambda _line: None)
    if not request.dry_run:
        # Said before any plan: a change is applied by reload, which needs the server up.
        cluster.require_running()
    store = CAStore(request.ca_dir or default_ca_dir())
    with contextlib.ExitStack() as locks:
        if not request.dry_run:
            if store.path.is_dir() and not request.external_ca:
                locks.enter_context(store.lock(wait=request.lock_wait))
            locks.enter_context(
                directory_lock(cluster.data_dir, wait=request.lock_wait, what=f"cluster {cluster.label}")
            )
            faults.point("locked")
        return _secure_locked(cluster, request, store, locks, confirm, log, now or dt.datetime.now(dt.UTC))


def _secure_locked(
    cluster: Cluster,
    request: SecureRequest,
    store: CAStore,
    locks: contextlib.ExitStack,
    confirm: Confirm | None,
    log: Progress,
    now: dt.datetime,
) -> SecureResult:
    authority, new_ca, orphan_key = _authority(store, request)
    external = isinstance(authority, CACertificate)
    entries = store.entries() if not (new_ca or external) else []
    crl = request.crl if external else (read_bytes_or_none(store.crl_path) if not new_ca else None)
    server = facts.read_server(cluster)
    state = facts.read_state(cluster, server=server)
    provided, key_source = (
        load_provided(
            request.certificate,
            [state.cert_dir / PENDING_KEY_NAME, state.cert_dir / KEY_NAME],
            state.existing,
        )
        if request.certificate is not None
        else (None, None)
    )
    notes: list[str] = []
    if orphan_key:
        notes.append(
            f"{store.ca_key_path} has no {store.ca_cert_path.name} and nothing was issued with it"
            " (a `ca init` was interrupted): a new CA replaces it, the old key is kept beside it"
        )
    if not request.dry_run:
        notes.extend(_clean_up(cluster, state, None if external else store, server))
    roots: bytes | None = None
    also_ours: tuple[x509.Certificate, ...] = ()
    if isinstance(authority, CACertificate):
        also_ours = authority.others  # the roots came from the control node, the retiring one too
    elif not new_ca:
        # During a CA rotation the new CA issues with the cross certificate, and the cluster trusts (and
        # holds the CRLs of) both CAs, exactly as renew leaves it: secure must not drop the old root.
        rotation = load_rotation(store.path)
        if rotation is not None:
            trust = trust_for(store, authority)
            authority, roots, also_ours = trust.signer(), trust.roots_pem(), trust.roots[1:]
            crl = crl_bundle([store, rotation.previous]) or crl
    plan = plan_secure(
        state,
        request,
        authority,
        crl=crl,
        revoked={e.serial for e in entries if e.revoked},
        now=now,
        roots=roots,
        also_ours=also_ours,
        provided=provided,
    )
    faults.point("planned")
    if plan.ca_conflict is not None and not request.replace_ca:
        if external:
            raise PKIError(f"{plan.ca_conflict.describe()}; refusing: pass --replace-ca to switch CAs")
        raise PKIError(_ca_conflict_message(plan.ca_conflict, store, cluster))
    needs, roles_unknown = _certificate_needs(cluster, plan, entries, server, now)
    addresses = probe_addresses(state.listen_addresses, state.machine)
    port = cluster.running.port if cluster.running else _port_of(state)
    preview = SecurePreview(
        cluster=cluster.label,
        running=cluster.running is not None,
        plan=plan,
        ca_dir=EXTERNAL_CA_DIR if external else store.path,
        client=client_instructions(
            host=_client_host(request, plan, state),
            port=port,
            user=server.role if server is not None else cluster.owner.name,
            ca_path=plan.ca_path if external else store.ca_cert_path,
            ca_dir=EXTERNAL_CA_DIR if external else store.path,
            certificates_required=plan.verifies_clients,
            major=cluster.major,
        ),
        new_ca=new_ca,
        certificate_needs=needs,
        roles_unknown=roles_unknown,
        addresses=addresses,
        unproved=unproved_addresses(state.listen_addresses, state.machine),
        notes=(*notes, *plan.notes),
    )
    if request.dry_run:
        return SecureResult(preview, "dry-run")
    if not addresses:
        raise ClusterError(
            f"listen_addresses is {state.listen_addresses!r}: the server takes no TCP connections, so there"
            " is nothing to secure or prove on the network; set listen_addresses first"
        )
    _refuse_lockout(preview, request)
    if plan.changed and confirm is not None and not confirm(preview):
        return SecureResult(preview, "declined")
    committed: list[bool] = []
    created = _missing_dirs(store.path) if new_ca else None
    try:
        if new_ca and isinstance(authority, CertificateAuthority):
            _create_ca(store, authority, request, orphan_key, log)
            locks.enter_context(store.lock(wait=request.lock_wait))
            faults.point("ca-created")
        outcome = apply_plan(
            cluster,
            plan,
            prove=lambda: _prove(cluster, plan, authority, addresses, request),
            log=log,
            stale=facts.changed_since(facts.config_paths(cluster, state), server.conf_load_time)
            if server is not None
            else (),
            live=server.settings if server is not None and _owns_all(server, plan) else None,
            on_commit=lambda: committed.append(True),
        )
    except BaseException:
        if created is not None and not committed:
            # A rolled-back run leaves no new CA behind: nothing it signed is in use.
            with contextlib.suppress(PgBattenError, OSError):
                _remove_ca(store, created)
        raise
    if external:
        # The CA recorded the certificate when it signed it; the pending key is now the key in use.
        if key_source is not None and key_source.name == PENDING_KEY_NAME and plan.changed:
            with contextlib.suppress(PgBattenError):
                remove_file(key_source)
    else:
        _record_server_certificate(store, cluster, plan, state, entries)
    sessions = tuple(plaintext_sessions(cluster.sql()))
    ended = tuple(end_sessions(cluster.sql(), sessions)) if request.end_plaintext_sessions else ()
    status: Status = "applied" if plan.changed else ("repaired" if outcome.repaired else "unchanged")
    return SecureResult(preview, status, outcome, sessions, ended, outcome.notes)


def _owns_all(server: facts.ServerFacts, plan: SecurePlan) -> bool:
    # A setting missing from what was read (a name this server does not know) is asked again, by name.
    return all(name in server.settings for name in plan.settings)


def _authority(store: CAStore, request: SecureRequest) -> tuple[AnyCA, bool, bool]:
    """(the CA, whether it is new and only in memory, whether an orphan ca.key is in the way)."""
    if request.ca_certificate is not None:
        return CACertificate.from_pem(request.ca_certificate), False, False
    orphan = store.half_made()
    if store.exists() and not orphan:
        return store.load(request.ca_passphrase), False, False
    # Planned with a CA that lives in memory; it reaches the disk only once the change is confirmed, so a
    # dry run or a "no" leaves nothing behind, not even a CA directory.
    return CertificateAuthority.create(key_type=request.key_type), True, orphan


def _create_ca(
    store: CAStore, authority: CertificateAuthority, request: SecureRequest, orphan_key: bool, log: Progress
) -> None:
    """Write the CA made in memory (an orphan key moved aside, kept)."""
    aside = store.set_aside_half_made() if orphan_key else None
    if aside is not None:
        log(f"moved {store.ca_key_path.name}, left by an interrupted run, aside to {aside}")
    store.init(authority=authority, passphrase=request.ca_passphrase)
    log(f"created a CA in {store.path} (clients verify the server with {store.ca_cert_path})")


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first: what removing a new CA removes."""
    missing: list[Path] = []
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_ca(store: CAStore, created_dirs: list[Path]) -> None:
    for path in _ca_files(store):
        remove_file(path)
    for directory in created_dirs:  # deepest first
        with contextlib.suppress(OSError):
            directory.rmdir()


def _clean_up(
    cluster: Cluster, state: ClusterState, store: CAStore | None, server: facts.ServerFacts | None
) -> list[str]:
    """Remove what a killed run left: temp files beside the files we write, the throwaway proof role."""
    notes: list[str] = []
    targets: dict[Path, set[str]] = {}
    for path in [*facts.config_paths(cluster, state), *(state.cert_dir / n for n in _cert_names())]:
        real = real_path(path)
        targets.setdefault(real.parent, set()).add(real.name)
    removed = [p for d, names in targets.items() for p in stale_temp_files(d, names)]
    if store is not None and store.path.is_dir():
        cutoff = time.time() - _CA_TEMP_AGE
        names = [p.name for p in _ca_files(store)]
        removed += [p for p in stale_temp_files(store.path, names) if _mtime(p) < cutoff]
    for path in removed:
        with contextlib.suppress(PgBattenError):
            remove_file(path)
    if removed:
        notes.append(
            f"removed {len(removed)} temp file(s) an interrupted run left: {', '.join(map(str, removed))}"
        )
    if server is not None and server.leftover_roles:
        facts.drop_roles(cluster.sql(), server.leftover_roles)
        notes.append(f"dropped the proof role(s) an interrupted run left: {', '.join(server.leftover_roles)}")
    return notes


def _cert_names() -> tuple[str, ...]:
    from pgbatten.secure.plan import CA_NAME, CERT_NAME, CRL_NAME, KEY_NAME

    return (CERT_NAME, KEY_NAME, CA_NAME, CRL_NAME)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _certificate_needs(
    cluster: Cluster,
    plan: SecurePlan,
    entries: list[InventoryEntry],
    server: facts.ServerFacts | None,
    now: dt.datetime,
) -> tuple[tuple[CertificateNeed, ...], bool]:
    if not plan.cert_rules:
        return (), False
    if server is None:
        return (), True
    roles = facts.read_login_roles(cluster.sql(), group_tokens(plan.cert_rules))
    files = facts.read_user_files(cluster.hba_file, file_tokens(plan.cert_rules))
    needs = certificate_needs(
        plan.cert_rules, roles, entries, files=files, now=now, ignore=server.leftover_roles
    )
    return needs, False


LOCKOUT_LISTED = 10


def _refuse_lockout(preview: SecurePreview, request: SecureRequest) -> None:
    missing = preview.missing_certificates
    if not missing or request.allow_lockout:
        return
    shown = ", ".join(missing[:LOCKOUT_LISTED])
    more = f" and {len(missing) - LOCKOUT_LISTED} more" if len(missing) > LOCKOUT_LISTED else ""
    raise UsageError(
        f"--client-auth {request.client_auth} would lock out {len(missing)} role(s) that log in over TCP"
        f" today and have no valid certificate from the CA in {preview.ca_dir}: {shown}{more}; issue"
        f" theirs first ({issue_command(missing[0], preview.ca_dir)}, and so on), or pass --allow-lockout"
    )


def _prove(
    cluster: Cluster,
    plan: SecurePlan,
    authority: AnyCA,
    addresses: tuple[str, ...],
    request: SecureRequest,
) -> list[Proof]:
    return prove_all(
        cluster,
        addresses=addresses,
        hosts=plan.hosts,
        installed=plan.certificate,
        ca=authority,
        ca_path=plan.ca_path,
        client_auth=request.client_auth,
        timeout=request.timeout,
    )


def _record_server_certificate(
    store: CAStore, cluster: Cluster, plan: SecurePlan, state: ClusterState, entries: list[InventoryEntry]
) -> None:
    """Put the served certificate in the inventory with where it is installed, also one a killed run served
    without recording it."""
    serial = plan.certificate.serial_number
    installed = Installation(plan.cert_path, ClusterRef.of(cluster.label, cluster.data_dir))
    known = [e for e in entries if e.serial == serial]
    if known:
        if known[0].kind == "server" and known[0].installed != installed:
            with contextlib.suppress(PgBattenError):
                store.set_installed(serial, installed)
        return
    issued = plan.issued
    if issued is None:
        key_pem = state.existing.get(plan.key_path)
        if key_pem is None:
            return
        with contextlib.suppress(PgBattenError, ValueError):
            issued = IssuedCertificate(certificate=plan.certificate, key=load_private_key_pem(key_pem))
    if issued is not None:
        with contextlib.suppress(PKIError):  # "already in the inventory": a concurrent `cert` recorded it
            store.record(issued, "server", plan.hosts[0], installed=installed)


def _client_host(request: SecureRequest, plan: SecurePlan, state: ClusterState) -> str:
    """The host clients are told to use: the first --host; localhost for a server on loopback only; else
    this machine's name (a name, so verify-full checks it)."""
    if request.hosts:
        return str(classify_host(request.hosts[0]))
    listen = split_listen_addresses(state.listen_addresses)
    if (
        listen
        and "localhost" in plan.hosts
        and all(listens_on_loopback([i]) and i not in WILDCARDS for i in listen)
    ):
        return "localhost"
    names = [h for h in plan.hosts if isinstance(classify_host(h), str) and h != "localhost"]
    return names[0] if names else plan.hosts[0]


def _port_of(state: ClusterState) -> int:
    from pgbatten.pgconf import postgresql_conf as conf_mod

    source = conf_mod.effective_settings(state.conf_files).get("port")
    return int(source.value) if source is not None and source.value.isdigit() else 5432


def _ca_conflict_message(conflict: CaConflict, store: CAStore, cluster: Cluster) -> str:
    found = _find_ca_dir(conflict.installed_fingerprint, exclude=store.path, owner_home=cluster.owner.home)
    way_out = (
        f"run with --ca-dir {found} (the CA that issued them)"
        if found is not None
        else "run with the --ca-dir that holds the CA that issued them"
    )
    return (
        f"{conflict.describe()}; CA in use: {store.path}. Refusing: {way_out}, or pass --replace-ca to"
        " switch CAs deliberately (then hand every client the new root certificate and reissue client"
        " certificates)"
    )


def _find_ca_dir(fingerprint: str | None, *, exclude: Path, owner_home: Path) -> Path | None:
    """A CA directory on this machine whose ca.crt has ``fingerprint``: the default places of each user."""
    if fingerprint is None:
        return None
    homes: list[Path] = [Path.home(), owner_home]
    for name in (os.environ.get("SUDO_USER"), "root", "postgres"):
        if name:
            with contextlib.suppress(KeyError):
                homes.append(Path(pwd.getpwnam(name).pw_dir))
    candidates: Iterable[Path] = dict.fromkeys(
        [default_ca_dir(), *(home / ".local" / "share" / "pgbatten" / "ca" for home in homes)]
    )
    for candidate in candidates:
        if candidate == exclude:
            continue
        with contextlib.suppress(PgBattenError, OSError, ValueError):
            data = read_bytes_or_none(candidate / "ca.crt")
            if data is not None:
                from cryptography import x509

                if fingerprint_sha256(x509.load_pem_x509_certificate(data)) == fingerprint:
                    return candidate
    return None
