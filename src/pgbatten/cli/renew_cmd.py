"""`pgbatten renew`: re-issue what is due, by reload, proved from outside."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file

if TYPE_CHECKING:
    from rich.console import Console

    from pgbatten.lifecycle.renew import ClusterOutcome, RenewResult


def _confirm(question: str) -> bool:
    if sys.stdin is None or not sys.stdin.isatty():
        from pgbatten.errors import UsageError

        raise UsageError("no terminal to confirm on; pass --yes to renew, or --dry-run to only show the plan")
    return click.confirm(question, default=False)


@main.command("renew")
@opt.clusters
@click.option(
    "--client", "clients", multiple=True, metavar="USER", help="Renew USER's client certificate if due."
)
@click.option("--all", "all_clients", is_flag=True, help="Renew every user's client certificate that is due.")
@click.option(
    "--before",
    default=None,
    metavar="DURATION",
    help="Due when less than this is left (default: a third of the life).",
)
@opt.ca_dir
@opt.ca_passphrase
@opt.days("Server certificate validity.")
@opt.days("Client certificate validity.", name="--client-days")
@opt.crl_days("CRL validity.")
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    help="Revoke a replaced client certificate once this has passed "
    "(default: you revoke it once the new bundle is handed out).",
)
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where new client bundles go, one directory each (default: CA_DIR/bundles).",
)
@opt.key_type
@opt.file(
    "--p12-password-file",
    "PKCS#12 password for new client bundles (default: generated, saved in the bundle).",
)
@opt.timeout()
@opt.lock_wait("cluster or CA directory")
@opt.json_output("Print the result as JSON (progress goes to stderr).")
@opt.dry_run("Show what is due and the plan; write nothing.")
@opt.yes("Renew without asking.")
def renew_cmd(
    pgdatas: tuple[Path, ...],
    cluster_names: tuple[str, ...],
    clients: tuple[str, ...],
    all_clients: bool,
    before: str | None,
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    days: int,
    client_days: int,
    crl_days: int,
    grace: str | None,
    out_dir: Path | None,
    key_type: str,
    p12_password_file: Path | None,
    timeout: float,
    lock_wait: float,
    as_json: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Re-issue the server and client certificates and CRLs that are due, without dropping a session."""
    from pgbatten.errors import UsageError, VerificationError
    from pgbatten.lifecycle.renew import RenewOptions, renew
    from pgbatten.lifecycle.timeline import parse_duration
    from pgbatten.pki import KeyType, check_role_name, default_ca_dir

    for user in clients:
        check_role_name(user)
    refs = opt.cluster_refs(pgdatas, cluster_names)
    if not refs and not clients and not all_clients:
        raise UsageError(
            "nothing to renew: name clusters (--pgdata DIR, --cluster V/N), --client USER or --all"
        )
    options = RenewOptions(
        clusters=tuple(refs),
        clients=clients,
        all_clients=all_clients,
        before=parse_duration(before) if before is not None else None,
        days=days,
        client_days=client_days,
        crl_days=crl_days,
        grace=parse_duration(grace) if grace is not None else None,
        out_dir=out_dir,
        key_type=KeyType.parse(key_type),
        p12_password=read_secret_file(p12_password_file),
        dry_run=dry_run,
        yes=yes,
        ca_passphrase=read_secret_file(ca_passphrase_file),
        timeout=timeout,
        lock_wait=lock_wait,
    )
    out = make_console(stderr=as_json)
    ca = ca_dir or default_ca_dir()
    result = renew(
        ca,
        options,
        log=lambda msg: out.print(msg, markup=False, soft_wrap=True, highlight=False),
        confirm=_confirm,
    )
    if as_json:
        import json

        from pgbatten.lifecycle.export import renew_json

        click.echo(json.dumps(renew_json(result), indent=2))
    else:
        print_result(out, result, ca, refs_option=[o for r in refs for o in r.args()])
    if result.failed:
        raise VerificationError("; ".join(failure_line(c) for c in result.failed))


def failure_line(outcome: ClusterOutcome) -> str:
    if outcome.rolled_back:
        return (
            f"renewal of {outcome.label} failed and was rolled back, the old certificate keeps serving: "
            f"{outcome.error}"
        )
    return f"{outcome.label}: {outcome.error}"


def print_result(out: Console, result: RenewResult, ca_dir: Path, *, refs_option: list[str]) -> None:
    """What was renewed, the proofs, and what is left to the operator."""
    import shlex

    from rich.markup import escape

    if result.nothing_due:
        out.print("Nothing is due: nothing was written.")
        return
    if result.dry_run:
        out.print("Dry run: nothing was written.")
        return
    for crl in result.crls:
        nxt = f", next update {crl.next_update:%Y-%m-%d %H:%M} UTC" if crl.next_update else ""
        out.print(
            f"Re-signed the CRL of {crl.ca_dir} (#{crl.number}{nxt}): {crl.reason}",
            markup=False,
            soft_wrap=True,
        )
    for r in result.revoked:
        out.print(
            f"Revoked {r.user}'s replaced certificate {r.old_serial:#x} (grace period over)", markup=False
        )
    for c in result.clients:
        out.print(
            f"Re-issued {c.user}'s client certificate: {c.new_serial:#x} (replaces {c.old_serial:#x}), "
            f"valid until {c.not_after:%Y-%m-%d}",
            markup=False,
            soft_wrap=True,
        )
        out.print(f"  new bundle: {c.bundle_dir}", markup=False, soft_wrap=True)
        if c.password_file is not None:
            out.print(f"  PKCS#12 password in {c.password_file}", markup=False, soft_wrap=True)
        if c.revoke_after is not None:
            out.print(
                f"  the old certificate is revoked by the first renew after "
                f"{c.revoke_after:%Y-%m-%d %H:%M} UTC",
                markup=False,
            )
    for outcome in result.clusters:
        plan = outcome.plan
        if outcome.error is not None:
            out.print(f"[red]FAILED[/] {escape(outcome.label)}: {escape(outcome.error)}", soft_wrap=True)
            continue
        if not outcome.applied:
            continue
        if plan.issued is not None and plan.replaced_serial is not None:
            out.print(
                f"{outcome.label}: now serving {plan.issued.serial:#x} (was {plan.replaced_serial:#x}), "
                f"valid until {plan.issued.not_after:%Y-%m-%d}; reloaded, no restart",
                markup=False,
                soft_wrap=True,
            )
        else:
            out.print(
                f"{outcome.label}: {'; '.join(plan.reasons)}: fixed by reload, no restart",
                markup=False,
                soft_wrap=True,
            )
        for proof in outcome.proofs:
            mark = "[green]ok[/]" if proof.ok else "[red]FAILED[/]"
            out.print(f"  {mark} {escape(proof.what)}: {escape(proof.detail)}", soft_wrap=True)
        for original, backup in outcome.backups:
            out.print(f"  backup of {original}: {backup}", markup=False, soft_wrap=True)
    for r in result.handover:
        cmd = shlex.join(
            ["pgbatten", "cert", "revoke", f"{r.old_serial:#x}", "--ca-dir", str(ca_dir), *refs_option[:2]]
        )
        out.print(
            f"{r.user}'s earlier certificate {r.old_serial:#x} stays valid until you revoke it; once the new "
            f"bundle ({r.bundle}) is handed out: {cmd}",
            markup=False,
            soft_wrap=True,
        )
