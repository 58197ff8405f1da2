"""`pgbatten cert revoke` and `pgbatten crl refresh`: revoke, sign the CRL, put it in force on a cluster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import make_console, read_secret_file
from pgbatten.cli.cert_cmd import (
    cert,
    crl,
    hex_serial,
    named_cluster,
    open_ca,
    print_json,
    size_text,
    tag,
    write_lines,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from pgbatten.lifecycle.revoke import CrlInstalled
    from pgbatten.pki import CAStore, InventoryEntry
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
    from pgbatten.lifecycle.revoke import revoke_and_install
    from pgbatten.pki import hints

    store = open_ca(ca_dir)
    cluster = named_cluster(pgdata, cluster_name, pg_bindir)
    out = make_console()

    def revoked(entries: tuple[InventoryEntry, ...], summary: CrlSummary) -> None:
        # The CA side is done: say so before the cluster's side prints its progress.
        if not as_json and cluster is not None:
            write_lines(out, _revoked_lines(entries, summary))

    run = revoke_and_install(
        store,
        target,
        passphrase=read_secret_file(ca_passphrase_file),
        cluster=cluster,
        crl_days=crl_days,
        timeout=timeout,
        allow_served=allow_served,
        keep_sessions=keep_sessions,
        progress=revoked,
        log=None if as_json else (lambda message: write_lines(out, [message])),
    )
    warnings = [
        f"server certificate {hex_serial(e.serial)} is revoked but {where} still serves it; "
        f"replace it: {_secure_hint(store, e, run.view)}"
        for e, where in run.still_served
    ]
    if as_json:
        print_json(
            {
                "schema": "pgbatten.cert-revoke/1",
                "ca_dir": str(store.path),
                "revoked": [{**e.to_json(), "serial_hex": hex_serial(e.serial)} for e in run.revoked],
                "crl": run.crl.to_json(),
                "cluster": run.installed.to_json() if run.installed is not None else None,
                "warnings": warnings,
            }
        )
        return
    if run.installed is None:
        lines = _revoked_lines(run.revoked, run.crl)
        lines.append(
            f"{tag(out, 'The servers do not know yet:', 'yellow')} install the CRL with: "
            + hints.crl_refresh_hint(store)
        )
    else:
        lines = _installed_lines(out, run.installed)
        if run.installed.sessions is not None:
            from pgbatten.lifecycle.sessions import report_line

            lines.append(report_line(run.installed.sessions))
    write_lines(out, lines)
    if run.view is not None:
        _remind_refresh(out, store, run.view, run.crl.next_update)
    write_lines(out, [tag(out, "warning:", "yellow") + " " + w for w in warnings])


def _revoked_lines(revoked: Sequence[InventoryEntry], summary: CrlSummary) -> list[str]:
    lines = [f"Revoked {e.kind} certificate {hex_serial(e.serial)} of {e.name}" for e in revoked]
    lines.append(_crl_line(summary, "CRL"))
    return lines


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


def _installed_lines(out: Console, installed: CrlInstalled) -> list[str]:
    """What was put in force on the cluster and what proved it."""
    lines = [
        f"Installed the CRL on {installed.label} as ssl_crl_file = {installed.crl_file} (reload, no restart)"
        if installed.changed
        else f"The CRL on {installed.label} was already current ({installed.crl_file})"
    ]
    ok, failed = tag(out, "ok", "green"), tag(out, "FAILED", "red")
    lines += [f"  {ok if p.ok else failed} {p.what}: {p.detail}" for p in installed.proofs]
    lines += [f"backup of {original}: {backup}" for original, backup in installed.backups]
    return lines


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
    from pgbatten.lifecycle.revoke import refresh_and_install

    store = open_ca(ca_dir)
    cluster = named_cluster(pgdata, cluster_name, pg_bindir)
    out = make_console()

    def signed(summary: CrlSummary) -> None:
        if not as_json:
            write_lines(out, [_crl_line(summary, "Signed CRL")])

    run = refresh_and_install(
        store,
        passphrase=read_secret_file(ca_passphrase_file),
        cluster=cluster,
        crl_days=crl_days,
        timeout=timeout,
        progress=signed,
        log=None if as_json else (lambda message: write_lines(out, [message])),
    )
    if as_json:
        print_json(
            {
                "schema": "pgbatten.crl-refresh/1",
                "ca_dir": str(store.path),
                "crl": run.crl.to_json(),
                "cluster": run.installed.to_json() if run.installed is not None else None,
            }
        )
        return
    if run.installed is not None:
        write_lines(out, _installed_lines(out, run.installed))
    if run.view is not None:
        _remind_refresh(out, store, run.view, run.crl.next_update)
