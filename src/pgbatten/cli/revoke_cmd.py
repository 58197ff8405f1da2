"""`pgbatten cert revoke` and `pgbatten crl refresh`: revoke, sign the CRL, put it in force on a cluster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import make_console, read_secret_file
from pgbatten.cli.cert_cmd import (
    cert,
    crl,
    hex_serial,
    learn,
    named_cluster,
    open_ca,
    print_json,
    size_text,
    tag,
    view_of_cluster,
    write_lines,
)

if TYPE_CHECKING:
    from rich.console import Console

    from pgbatten.cluster.discover import Cluster
    from pgbatten.pki import CAStore, CertificateAuthority, InventoryEntry
    from pgbatten.pki.listing import CrlSummary
    from pgbatten.pki.served import ClusterView

CRL_DAYS_HELP = "Days until the CRL's nextUpdate; re-sign it before then with 'pgbatten crl refresh'."


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

    store = open_ca(ca_dir)
    # One run at a time from the decision to the last proof: a concurrent secure, renew or revoke cannot
    # sign a CRL in between, or install one computed before this revocation.
    with store.lock():
        cluster = named_cluster(pgdata, cluster_name, pg_bindir)
        view = view_of_cluster(cluster, store)
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
        learn(store, view)
        still_served = [e for e in result.revoked if e.serial in served]
        warnings = [
            f"server certificate {hex_serial(e.serial)} is revoked but {served[e.serial]} still serves it; "
            f"replace it: {_secure_hint(store, e, view)}"
            for e in still_served
        ]
        out = make_console()
        lines = [f"Revoked {e.kind} certificate {hex_serial(e.serial)} of {e.name}" for e in result.revoked]
        summary = result.crl.summary()
        lines.append(_crl_line(summary, "CRL"))
        installed: dict[str, Any] | None = None
        if cluster is None:
            hint = hints.crl_refresh_hint(store)
            if not as_json:
                lines.append(
                    f"{tag(out, 'The servers do not know yet:', 'yellow')} install the CRL with: {hint}"
                )
        else:
            if not as_json:
                write_lines(out, lines)
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
            print_json(
                {
                    "schema": "pgbatten.cert-revoke/1",
                    "ca_dir": str(store.path),
                    "revoked": [{**e.to_json(), "serial_hex": hex_serial(e.serial)} for e in result.revoked],
                    "crl": summary.to_json(),
                    "cluster": installed,
                    "warnings": warnings,
                }
            )
            return
        write_lines(out, lines)
        if view is not None:
            _remind_refresh(out, store, view, summary.next_update)
        write_lines(out, [tag(out, "warning:", "yellow") + " " + w for w in warnings])


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
        f"{label} {summary.path}: {summary.entries} revoked, {size_text(summary.size_bytes)}, "
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
    from pgbatten.secure.crl import install_crl

    def log(message: str) -> None:
        if not quiet:
            write_lines(out, [message])

    try:
        plan, outcome = install_crl(cluster, store, authority, refuse=serials, log=log, timeout=timeout)
    except PgBattenError as exc:
        # Keep it one line, but say what did happen: the CA side is done, only the server lags.
        exc.message = f"{exc.message} (the CA inventory and {store.crl_path} are {after}; the cluster is not)"
        raise
    if not quiet:
        lines = [
            f"Installed the CRL on {cluster.label} as ssl_crl_file = {plan.crl_path} (reload, no restart)"
            if plan.changed
            else f"The CRL on {cluster.label} was already current ({plan.crl_path})"
        ]
        ok, failed = tag(out, "ok", "green"), tag(out, "FAILED", "red")
        lines += [f"  {ok if p.ok else failed} {p.what}: {p.detail}" for p in outcome.proofs]
        lines += [f"backup of {original}: {backup}" for original, backup in outcome.backups]
        write_lines(out, lines)
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
        write_lines(
            out,
            [
                f"Re-sign it before {next_update:%Y-%m-%d} (a CRL past its next update makes "
                "PostgreSQL refuse every client certificate), e.g. daily from cron: "
                + hints.crl_refresh(store, view.ref)
            ],
        )


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

    store = open_ca(ca_dir)
    # Held from signing to the last proof, as cert revoke holds it.
    with store.lock():
        authority = store.load(read_secret_file(ca_passphrase_file))
        cluster = named_cluster(pgdata, cluster_name, pg_bindir)
        view = view_of_cluster(cluster, store)
        if cluster is not None:
            from pgbatten.secure.crl import preflight

            preflight(cluster, authority)
        result = refresh_crl(store, authority, crl_days=crl_days)
        learn(store, view)
        summary = result.summary()
        out = make_console()
        if not as_json:
            write_lines(out, [_crl_line(summary, "Signed CRL")])
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
            print_json(
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
