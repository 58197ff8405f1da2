"""`pgbatten cert` and `pgbatten crl`: client certificates, their bundles, revocation and the CRL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file

if TYPE_CHECKING:
    from rich.console import Console

    from pgbatten.cluster.discover import Cluster
    from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry
    from pgbatten.pki.listing import CrlSummary
    from pgbatten.pki.served import ClusterView

F = TypeVar("F", bound=Callable[..., Any])


CRL_DAYS_HELP = "Days until the CRL's nextUpdate; re-sign it before then with 'pgbatten crl refresh'."


def _store(ca_dir: Path | None) -> CAStore:
    from pgbatten.pki import default_ca_dir
    from pgbatten.pki.operations import open_store

    return open_store(ca_dir or default_ca_dir())


def _hex(serial: int) -> str:
    return f"{serial:#x}"


def _cluster(pgdata: Path | None, cluster_name: str | None, pg_bindir: Path | None) -> Cluster | None:
    if pgdata is None and cluster_name is None:
        return None
    from pgbatten.cluster.discover import discover

    return discover(pgdata=pgdata, cluster=cluster_name, pg_bindir=pg_bindir)


@main.group()
def cert() -> None:
    """Client certificates: issue bundles, revoke, list."""


@main.group()
def crl() -> None:
    """The certificate revocation list (CRL)."""


# -- cert client ------------------------------------------------------------------------------------------


@cert.command("client")
@click.argument("user")
@opt.ca_dir
@opt.ca_passphrase
@click.option(
    "--out",
    "out_dir",
    # No file_okay=False: click would answer a file in the way with a multi-line usage error, before
    # the library can say it in one line.
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle directory (default: ./USER).",
)
@opt.days()
@opt.key_type
@opt.file(
    "--p12-password-file",
    "File holding the PKCS#12 password (first line); default: generate one and print it once.",
)
@opt.cluster
@click.option(
    "--server-host",
    default=None,
    metavar="NAME",
    help="Server name for INSTALL.md (default: from the cluster's certificate, else the CA's newest one).",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Server port for INSTALL.md (default: the cluster's; required without --pgdata/--cluster).",
)
@click.option("--dbname", default="postgres", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing bundle directory.")
@opt.json_output()
def cert_client(
    user: str,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    out_dir: Path | None,
    days: int,
    key_type: str,
    p12_password_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    server_host: str | None,
    port: int | None,
    dbname: str,
    force: bool,
    as_json: bool,
) -> None:
    """Issue a client certificate for USER (CN = USER) and write a bundle every driver can use."""
    from pgbatten.pki import hints
    from pgbatten.pki.operations import issue_client_bundle, prepare_client_bundle

    store = _store(ca_dir)
    cluster = _cluster(pgdata, cluster_name, pg_bindir)
    view = _view(cluster, store)
    request = prepare_client_bundle(
        store,
        user,
        out_dir=out_dir,
        key_type=key_type,
        days=days,
        server_host=server_host,
        port=port,
        dbname=dbname,
        force=force,
        p12_password=read_secret_file(p12_password_file),
        cluster=view,
    )
    authority = store.load(read_secret_file(ca_passphrase_file))
    result = issue_client_bundle(store, authority, request)
    _learn(store, view)
    if as_json:
        _print_json(result.to_json())
        return

    out = make_console()
    entry, bundle = result.entry, result.bundle
    lines = [
        f"Issued a client certificate for {user} (serial {_hex(entry.serial)})",
        f"  valid until {entry.not_after:%Y-%m-%d %H:%M} UTC, signed by the CA in {store.path}",
        f"  INSTALL.md connects to host={request.server_host} port={request.port} dbname={request.dbname}",
        f"Bundle in {bundle.directory}:",
    ]
    for path, what in (
        (bundle.cert_path, "certificate (PEM)"),
        (bundle.key_path, "private key (PEM, 0600)"),
        (bundle.root_cert_path, "CA certificate, the sslrootcert"),
        (bundle.pk8_path, "private key as PKCS#8 DER for PgJDBC (0600)"),
        (bundle.p12_path, "PKCS#12 for PgJDBC, .NET, Windows (0600)"),
        (bundle.install_md_path, "where the files go, settings for each driver"),
    ):
        lines.append(f"  {path.name:<16} {what}")
    if result.password_generated:
        lines.append("PKCS#12 password (shown once, stored nowhere; hand it over separately):")
        lines.append(f"  {result.p12_password.decode()}")
    # Role names and paths are data, not markup: "[red]bob" or "x[/]" print as written, never as rich
    # markup (and cannot crash here, after the certificate is issued, before its password is shown).
    _write(out, lines)
    notes = [
        f"{user}'s earlier certificate {_hex(e.serial)} stays valid until {e.not_after:%Y-%m-%d}; "
        f"revoke it with: {hints.command('cert', 'revoke', _hex(e.serial), '--ca-dir', str(store.path))}"
        for e in result.earlier
    ]
    _write(out, [_tag(out, "note:", "yellow") + " " + n for n in notes])
    _write(out, [_tag(out, "warning:", "yellow") + " " + w for w in result.warnings])


def _view(cluster: Cluster | None, store: CAStore) -> ClusterView | None:
    """What ``cluster`` does with this CA's certificates (read only: a refusal must change nothing)."""
    if cluster is None:
        return None
    from cryptography import x509

    from pgbatten.pki.served import inspect_cluster

    try:
        ca_cert: x509.Certificate | None = x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes())
    except (OSError, ValueError):
        ca_cert = None  # load() reports a broken CA when the key is needed
    return inspect_cluster(cluster, ca_cert)


def _learn(store: CAStore, view: ClusterView | None) -> None:
    """After a command succeeded: remember which of this CA's server certificates the cluster serves."""
    if view is not None:
        from pgbatten.pki.served import learn_installation

        learn_installation(store, view)


def _tag(out: Console, text: str, colour: str) -> str:
    if out.is_terminal and not out.no_color:
        code = {"yellow": 33, "green": 32, "red": 31}[colour]
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def _write(out: Console, lines: list[str]) -> None:
    """Plain lines at once: no markup, no wrapping (commands stay on one line to be copied)."""
    if lines:
        out.file.write("\n".join(lines) + "\n")
        out.file.flush()


# -- cert revoke ------------------------------------------------------------------------------------------


@cert.command("revoke")
@click.argument("target", metavar="USER|SERIAL")
@opt.ca_dir
@opt.ca_passphrase
@opt.cluster
@opt.crl_days(CRL_DAYS_HELP)
@opt.timeout()
@click.option(
    "--allow-served",
    is_flag=True,
    help="Revoke a server certificate even though a cluster serves it (a leaked key); re-issue it after.",
)
@click.option(
    "--keep-sessions",
    is_flag=True,
    help="Leave open the sessions that authenticated with the revoked certificate (default: end them).",
)
@opt.json_output()
def cert_revoke(
    target: str,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    crl_days: int,
    timeout: float,
    allow_served: bool,
    keep_sessions: bool,
    as_json: bool,
) -> None:
    """Revoke USER's certificates (or one by SERIAL), write the CRL, and install it on a cluster."""
    from pgbatten.pki import hints, operations
    from pgbatten.pki.served import served_certificates

    store = _store(ca_dir)
    # One run at a time from the decision to the last proof: a concurrent secure, renew or revoke cannot
    # sign a CRL in between, or install one computed before this revocation.
    with store.lock():
        cluster = _cluster(pgdata, cluster_name, pg_bindir)
        view = _view(cluster, store)
        served = served_certificates(store, view)
        operations.select_revocation(
            store,
            target,
            refresh_hint=hints.crl_refresh(store, view.ref) if view is not None else None,
            served=served,
            allow_served=allow_served,
        )
        authority = store.load(read_secret_file(ca_passphrase_file))
        if cluster is not None:
            from pgbatten.secure.crl import preflight

            preflight(cluster, authority)  # refuse before the inventory changes

        result = operations.revoke(store, authority, target, crl_days=crl_days)
        _learn(store, view)
        still_served = [e for e in result.revoked if e.serial in served]
        warnings = [
            f"server certificate {_hex(e.serial)} is revoked but {served[e.serial]} still serves it; "
            f"replace it: {_secure_hint(store, e, view)}"
            for e in still_served
        ]
        out = make_console()
        lines = [f"Revoked {e.kind} certificate {_hex(e.serial)} of {e.name}" for e in result.revoked]
        summary = result.crl.summary()
        lines.append(_crl_line(summary, "CRL"))
        installed: dict[str, Any] | None = None
        if cluster is None:
            hint = hints.crl_refresh_hint(store)
            if not as_json:
                lines.append(
                    f"{_tag(out, 'The servers do not know yet:', 'yellow')} install the CRL with: {hint}"
                )
        else:
            if not as_json:
                _write(out, lines)
                lines = []
            installed = _install(
                out,
                cluster,
                store,
                authority,
                list(result.proof_serials),
                timeout,
                after="revoked",
                quiet=as_json,
            )
            # The CRL is in force now: a client whose session is ended cannot come back with the certificate.
            from pgbatten.lifecycle.sessions import end_sessions, report_line

            sessions = end_sessions(
                cluster.sql(),
                [(e.serial, authority.certificate.subject) for e in result.revoked],
                keep=keep_sessions,
            )
            if installed is not None:
                installed["sessions"] = sessions.to_json()
            if not as_json:
                lines.append(report_line(sessions))
        if as_json:
            _print_json(
                {
                    "schema": "pgbatten.cert-revoke/1",
                    "ca_dir": str(store.path),
                    "revoked": [{**e.to_json(), "serial_hex": _hex(e.serial)} for e in result.revoked],
                    "crl": summary.to_json(),
                    "cluster": installed,
                    "warnings": warnings,
                }
            )
            return
        _write(out, lines)
        if view is not None:
            _remind_refresh(out, store, view, summary.next_update)
        _write(out, [_tag(out, "warning:", "yellow") + " " + w for w in warnings])


def _secure_hint(store: CAStore, entry: InventoryEntry, view: ClusterView | None) -> str:
    from pgbatten.pki import hints

    if entry.installed is not None and entry.installed.cluster is not None:
        ref = entry.installed.cluster
    elif view is not None:
        ref = view.ref
    else:
        return "pgbatten secure on that cluster"
    return hints.command("secure", "--ca-dir", str(store.path), *ref.args())


def _crl_line(summary: CrlSummary, label: str) -> str:
    next_update = f"{summary.next_update:%Y-%m-%d %H:%M} UTC" if summary.next_update else "none"
    return (
        f"{label} {summary.path}: {summary.entries} revoked, {_size(summary.size_bytes)}, "
        f"next update {next_update}"
    )


def _install(
    out: Console,
    cluster: Cluster,
    store: CAStore,
    authority: CertificateAuthority,
    serials: list[int],
    timeout: float,
    *,
    after: str,
    quiet: bool,
) -> dict[str, Any]:
    """Install the CRL on ``cluster`` (secure.crl), print what was proved, return it for ``--json``."""
    from pgbatten.errors import PgBattenError
    from pgbatten.pki import ClusterRef
    from pgbatten.secure.crl import install_crl

    def log(message: str) -> None:
        if not quiet:
            _write(out, [message])

    try:
        plan, outcome = install_crl(cluster, store, authority, refuse=serials, log=log, timeout=timeout)
    except PgBattenError as exc:
        # Keep it one line, but say what did happen: the CA side is done, only the server lags.
        exc.message = f"{exc.message} (the CA inventory and {store.crl_path} are {after}; the cluster is not)"
        raise
    store.note_crl_install(ClusterRef.of(cluster.label, cluster.data_dir), plan.crl_path)
    if not quiet:
        lines = [
            f"Installed the CRL on {cluster.label} as ssl_crl_file = {plan.crl_path} (reload, no restart)"
            if plan.changed
            else f"The CRL on {cluster.label} was already current ({plan.crl_path})"
        ]
        ok, failed = _tag(out, "ok", "green"), _tag(out, "FAILED", "red")
        lines += [f"  {ok if p.ok else failed} {p.what}: {p.detail}" for p in outcome.proofs]
        lines += [f"backup of {original}: {backup}" for original, backup in outcome.backups]
        _write(out, lines)
    return {
        "label": cluster.label,
        "changed": plan.changed,
        "crl_file": str(plan.crl_path),
        "proofs": [{"what": p.what, "ok": p.ok, "detail": p.detail} for p in outcome.proofs],
        "backups": [{"original": str(o), "backup": str(b)} for o, b in outcome.backups],
    }


def _remind_refresh(out: Console, store: CAStore, view: ClusterView, next_update: dt.datetime | None) -> None:
    from pgbatten.pki import hints

    if next_update is not None:
        _write(
            out,
            [
                f"Re-sign it before {next_update:%Y-%m-%d} (a CRL past its next update makes "
                "PostgreSQL refuse every client certificate), e.g. daily from cron: "
                + hints.crl_refresh(store, view.ref)
            ],
        )


# -- cert list --------------------------------------------------------------------------------------------

# Past this many warnings of one kind, cert list prints a count instead (--json still holds every one).
WARNINGS_SHOWN = 20


@cert.command("list")
@opt.ca_dir
@opt.json_output()
def cert_list(ca_dir: Path | None, as_json: bool) -> None:
    """Every certificate the CA issued, the CRL's size and next update, and what ends soon."""
    from pgbatten.pki.listing import list_inventory

    listing = list_inventory(_store(ca_dir))
    if as_json:
        _print_json(listing.to_json())
        return
    out = make_console()
    lines: list[str] = []
    if listing.entries:
        # Plain columns rather than a table: serials stay whole and copyable, and the output greps. One
        # write for all rows: 100,000 certificates list in well under a second.
        rows = [("KIND", "NAME", "SERIAL", "NOT AFTER (UTC)", "STATUS")]
        status = listing.status
        # isoformat is several times faster than strftime; "YYYY-MM-DD HH:MM" is its first 16 characters.
        rows += [
            (e.kind, e.name, f"{e.serial:#x}", e.not_after.isoformat(" ")[:16], status(e))
            for e in listing.entries
        ]
        w1 = max(len(row[1]) for row in rows)
        w2 = max(len(row[2]) for row in rows)
        lines += [f"{a:<6}  {b:<{w1}}  {c:<{w2}}  {d:<16}  {e}" for a, b, c, d, e in rows]
    else:
        lines.append(f"No certificates issued yet by the CA in {listing.ca_dir}")
    crl_obj = listing.crl
    if crl_obj is None:
        lines.append("CRL: none written yet")
    else:
        next_update = f"{crl_obj.next_update:%Y-%m-%d %H:%M} UTC" if crl_obj.next_update else "none"
        lines.append(
            f"CRL {crl_obj.path}: {crl_obj.entries} revoked, {_size(crl_obj.size_bytes)}, last update "
            f"{crl_obj.last_update:%Y-%m-%d %H:%M} UTC, next update {next_update}"
        )
    prefix = "\x1b[33mwarning:\x1b[0m" if out.is_terminal and not out.no_color else "warning:"
    shown: dict[str, int] = {}
    for warning in listing.warnings:
        shown[warning.code] = shown.get(warning.code, 0) + 1
        if shown[warning.code] <= WARNINGS_SHOWN:
            lines.append(f"{prefix} {warning.message}")
    for code, count in shown.items():
        if count > WARNINGS_SHOWN:
            lines.append(
                f"{prefix} ... and {count - WARNINGS_SHOWN} more like that ({code}); "
                "'pgbatten cert list --json' lists every one"
            )
    out.file.write("\n".join(lines) + "\n")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _print_json(document: object) -> None:
    import json

    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


# -- crl refresh ------------------------------------------------------------------------------------------


@crl.command("refresh")
@opt.ca_dir
@opt.ca_passphrase
@opt.cluster
@opt.crl_days(CRL_DAYS_HELP)
@opt.timeout()
@opt.json_output()
def crl_refresh(
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    crl_days: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Re-sign the CRL with a new next update, and install it on a cluster by reload."""
    from pgbatten.pki.operations import refresh_crl

    store = _store(ca_dir)
    # Held from signing to the last proof, as cert revoke holds it.
    with store.lock():
        authority = store.load(read_secret_file(ca_passphrase_file))
        cluster = _cluster(pgdata, cluster_name, pg_bindir)
        view = _view(cluster, store)
        if cluster is not None:
            from pgbatten.secure.crl import preflight

            preflight(cluster, authority)
        result = refresh_crl(store, authority, crl_days=crl_days)
        _learn(store, view)
        summary = result.summary()
        out = make_console()
        if not as_json:
            _write(out, [_crl_line(summary, "Signed CRL")])
        installed = None
        if cluster is not None:
            # Prove with the newest revocations of certificates that could still be presented.
            installed = _install(
                out,
                cluster,
                store,
                authority,
                list(result.newest_serials),
                timeout,
                after="refreshed",
                quiet=as_json,
            )
        if as_json:
            _print_json(
                {
                    "schema": "pgbatten.crl-refresh/1",
                    "ca_dir": str(store.path),
                    "crl": summary.to_json(),
                    "cluster": installed,
                }
            )
            return
        if view is not None:
            _remind_refresh(out, store, view, summary.next_update)
