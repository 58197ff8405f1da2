"""`pgbatten secure`: make a cluster TLS-only. Parses, asks and prints; the work is ``pgbatten.secure``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file
from pgbatten.errors import UsageError
from pgbatten.findings import Finding, severity_rank

if TYPE_CHECKING:
    from collections.abc import Callable

    from pgbatten.bench.server import BenchReport
    from pgbatten.cluster.discover import Cluster
    from pgbatten.secure import SecurePreview, SecureRequest, SecureResult
    from pgbatten.secure.changes import FileChange
    from pgbatten.secure.sessions import PlaintextSession

# One rich row per finding made printing half of a 100,000-rule dry run; past this many the table stops
# and a count per severity follows (--json has every finding).
LINT_ROWS = 20


@main.command("secure")
@opt.cluster
@click.option(
    "--host", "hosts", multiple=True, metavar="NAME", help="Name or address clients use (repeatable)."
)
@opt.ca_dir
@opt.ca_passphrase
@opt.file(
    "--ca-certificate",
    "The CA's certificate(s), for a CA whose key is on another machine (no --ca-dir here).",
)
@opt.file(
    "--certificate", "Install this certificate (with its chain), signed for the key `pgbatten csr` made here."
)
@opt.file(
    "--crl",
    "With --ca-certificate: the CA's CRL, installed when client certificates are verified.",
    dest="crl_file",
)
@click.option("--tls-min", type=click.Choice(["1.2", "1.3"]), default="1.2", show_default=True)
@click.option(
    "--client-auth",
    type=click.Choice(["none", "verify-full", "cert"]),
    default="none",
    show_default=True,
    help="verify-full: password plus client certificate; cert: the certificate alone.",
)
@click.option("--cert-map", default=None, metavar="NAME", help="pg_ident map for --client-auth cert.")
@opt.key_type
@opt.days("Server cert validity.")
@click.option(
    "--legacy-ip-sans",
    is_flag=True,
    help="Also write each IP address as a DNS name, for libpq before 15 connecting by address.",
)
@click.option(
    "--replace-ca",
    is_flag=True,
    help="Replace a server certificate issued by another CA (breaks its clients).",
)
@click.option(
    "--allow-lockout",
    is_flag=True,
    help="Require client certificates even though some roles have none from this CA yet.",
)
@click.option(
    "--end-plaintext-sessions",
    is_flag=True,
    help="Terminate the TCP sessions still unencrypted once the server is TLS-only.",
)
@opt.timeout("Seconds per proof.", minimum=0.5)
@opt.lock_wait("cluster or CA")
@opt.dry_run("Show the plan and exit without touching anything.", short=True)
@opt.yes("Apply without asking.")
@opt.json_output("Print the result as JSON (schema pgbatten.secure/1).")
@click.option("--bench", is_flag=True, help="Measure connection cost before and after; print the TLS tax.")
def secure_cmd(
    pgdata: Path | None,
    cluster_name: str | None,
    pg_bindir: Path | None,
    hosts: tuple[str, ...],
    ca_dir: Path | None,
    ca_passphrase_file: Path | None,
    ca_certificate: Path | None,
    certificate: Path | None,
    crl_file: Path | None,
    tls_min: str,
    client_auth: str,
    cert_map: str | None,
    key_type: str,
    days: int,
    legacy_ip_sans: bool,
    replace_ca: bool,
    allow_lockout: bool,
    end_plaintext_sessions: bool,
    timeout: float,
    lock_wait: float,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    bench: bool,
) -> None:
    """Make a running cluster TLS-only, by reload, and prove it from outside."""
    from pgbatten.cluster.discover import discover
    from pgbatten.pki import KeyType
    from pgbatten.secure import SecureRequest, secure

    request = SecureRequest(  # rejects bad --host values before looking at the cluster
        hosts=hosts,
        ca_dir=ca_dir,
        tls_min="1.3" if tls_min == "1.3" else "1.2",
        client_auth=client_auth,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        cert_map=cert_map,
        key_type=KeyType.parse(key_type),
        days=days,
        ca_passphrase=read_secret_file(ca_passphrase_file),
        timeout=timeout,
        dry_run=dry_run,
        replace_ca=replace_ca,
        allow_lockout=allow_lockout,
        end_plaintext_sessions=end_plaintext_sessions,
        legacy_ip_sans=legacy_ip_sans,
        lock_wait=lock_wait,
        ca_certificate=_read_file(ca_certificate),
        certificate=_read_file(certificate),
        crl=_read_file(crl_file),
    )
    cluster = discover(pgdata=pgdata, cluster=cluster_name, pg_bindir=pg_bindir)
    # With --json the report goes to stderr and stdout holds only the JSON document.
    out = make_console(stderr=as_json)
    shown: list[bool] = []

    def confirm(preview: SecurePreview) -> bool:
        print_preview(out, preview)
        shown.append(True)
        if yes:
            return True
        if sys.stdin is None or not sys.stdin.isatty():
            raise UsageError(
                "no terminal to confirm on; pass --yes to apply, or --dry-run to only show the plan"
            )
        return click.confirm("Apply these changes?", default=False, err=as_json)

    measure = _bench(out, cluster, request) if bench else None
    before = measure("before") if measure is not None else None
    result = secure(
        cluster, request, confirm=confirm, progress=lambda line: out.print(f"[dim]{escape(line)}[/]")
    )
    if not shown:
        print_preview(out, result.preview)
    print_outcome(out, result)
    if measure is not None and before is not None and result.applied:
        after = measure("after")
        if after is not None:
            from pgbatten.cli.bench_cmd import print_tax

            print_tax(out, before, after)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))


def _bench(out: Console, cluster: Cluster, request: SecureRequest) -> Callable[[str], BenchReport | None]:
    """``--bench``: the connection cost measured the same way before the plan and after the proofs."""
    from pgbatten.cli.bench_cmd import bench_for_secure

    def measure(when: str) -> BenchReport | None:
        return bench_for_secure(
            cluster,
            ca_dir=request.ca_dir,
            ca_passphrase=request.ca_passphrase,
            client_auth=request.client_auth,
            when=when,
            console=out,
        )

    return measure


def print_preview(out: Console, preview: SecurePreview) -> None:
    """Everything before the question: server state, lint, notes, the diff, who needs certificates."""
    plan = preview.plan
    if not preview.running:
        out.print(
            f"[yellow]note:[/] cluster {escape(preview.cluster)} is not running: this plan is read from its"
            " files; start it to apply the change (pgbatten applies by reload) and to prove it"
        )
    if preview.new_ca:
        out.print(f"[dim]no CA in {escape(str(preview.ca_dir))}: a new one will be created[/]")
    print_lint(out, plan.lint_before, preview.lint_remaining)
    for note in preview.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
    if not plan.changed:
        out.print("[green]Nothing to change:[/] the cluster is already TLS-only with the planned settings.")
    else:
        out.print(f"[bold]Plan for {escape(preview.cluster)}[/] ({len(plan.changes)} file(s)):")
        print_diff(out, plan.changes)
    _print_certificate_needs(out, preview)
    if preview.unproved:
        out.print(
            "[yellow]note:[/] the server also listens on "
            + escape(", ".join(preview.unproved))
            + " (link-local), which the proofs cannot reach: those addresses are not proved"
        )


def print_diff(out: Console, changes: Sequence[FileChange]) -> None:
    """The diff as plain text, straight to the console's stream, as rich printed it (see ``as_printed``):
    through rich a diff of 100,000 rules took seconds and several times its size in memory."""
    from pgbatten.secure.changes import iter_diff

    stream = out.file
    for piece in iter_diff(changes):
        stream.write(as_printed(piece))
    stream.flush()


# rich drops these control characters (BEL, BS, VT, FF, CR) from what it prints; so does the diff.
_DROPPED = dict.fromkeys((7, 8, 11, 12, 13))


def as_printed(text: str) -> str:
    """``text`` as ``Console.out`` printed it: those control characters dropped, tabs expanded to every
    eighth terminal cell."""
    text = text.translate(_DROPPED)
    if "\t" not in text:
        return text
    from rich.cells import cell_len

    lines = []
    for line in text.split("\n"):
        if "\t" in line:
            parts = line.split("\t")
            column = 0
            for k, part in enumerate(parts[:-1]):
                column += cell_len(part) + 1
                pad = -column % 8
                parts[k] = part + " " * (1 + pad)
                column += pad
            line = "".join(parts)
        lines.append(line)
    return "\n".join(lines)


def print_lint(out: Console, before: Sequence[Finding], remaining: Sequence[Finding]) -> None:
    """The pg_hba.conf findings as one table, worst first, summarised past ``LINT_ROWS``."""
    if not before:
        return
    ordered = sorted(before, key=lambda f: (severity_rank(f.severity), f.lineno or 0))
    table = Table(title="pg_hba.conf today", title_justify="left", show_header=True, header_style="bold")
    table.add_column("line", justify="right")
    table.add_column("severity")
    table.add_column("finding", overflow="fold")
    for finding in ordered[:LINT_ROWS]:
        table.add_row(
            str(finding.lineno or ""),
            Text(finding.severity, style=_colour(finding.severity)),
            Text(finding.title),
        )
    out.print(table)
    if len(ordered) > LINT_ROWS:
        out.print(f"  … and {_counted(ordered[LINT_ROWS:])} more (--json lists every finding)")
    if remaining:
        lines = ", ".join(str(f.lineno) for f in remaining[:LINT_ROWS] if f.lineno is not None)
        out.print(f"  [yellow]after secure, still:[/] {_counted(remaining)} (line {escape(lines)})")


def _counted(findings: Sequence[Finding]) -> str:
    counts = Counter(f.severity for f in findings)
    parts = [f"{counts[s]} {s}" for s in sorted(counts, key=severity_rank)]
    return f"{len(findings)} finding(s): " + ", ".join(parts)


def _colour(severity: str) -> str:
    return {"critical": "red", "high": "red", "medium": "yellow"}.get(severity, "cyan")


def _print_certificate_needs(out: Console, preview: SecurePreview) -> None:
    from pgbatten.secure.result import issue_command

    if preview.roles_unknown:
        out.print(
            "[yellow]note:[/] TCP logins will need a client certificate; the roles that log in today cannot"
            " be listed while the server is stopped"
        )
    if not preview.certificate_needs:
        return
    out.print("[bold]After this change every TCP login of these roles needs a client certificate[/]:")
    for need in preview.certificate_needs:
        if need.certificate is not None:
            cert = need.certificate
            state = f"[green]has one[/] (serial {cert.serial:#x}, until {cert.not_after:%Y-%m-%d})"
        else:
            state = "[red]has none[/]: " + escape(issue_command(need.role, preview.ca_dir))
        out.print(f"  {escape(need.role)}: {state}")
    missing = preview.missing_certificates
    if missing:
        out.print(
            f"[yellow]{len(missing)} role(s) would be locked out over TCP:[/] issue their certificates"
            " first, or pass --allow-lockout"
        )


def print_outcome(out: Console, result: SecureResult) -> None:
    """What happened, the proofs, backups, plaintext sessions and what clients need."""
    if result.status == "dry-run":
        out.print("Dry run: nothing was written.")
        return
    if result.status == "declined":
        out.print("Nothing was written.")
        return
    if result.status == "repaired":
        out.print("The files were in place but not in effect: validated and reloaded.")
    _print_proofs(out, result)
    for original, backup in result.backups:
        out.print(f"backup of {original}: {backup}", markup=False, soft_wrap=True)
    _print_sessions(out, result.plaintext_sessions, result.ended_sessions)
    client = result.client
    out.print()
    out.print("[bold]For clients[/]: hand out the CA certificate and connect with verify-full:")
    # soft_wrap: a line to paste must never be folded at the terminal's width.
    out.print(f"  sslrootcert: {client.sslrootcert}", markup=False, soft_wrap=True)
    if client.issue_command is not None:
        out.print(
            f"  every TCP login needs a client certificate from this CA; issue one per role ({client.user}"
            " here, writes ./ROLE/):",
            markup=False,
        )
        out.print(f"  {client.issue_command}", markup=False, soft_wrap=True)
    out.print(f"  {client.psql_command}", markup=False, soft_wrap=True)
    if client.direct_psql_command is not None:
        out.print("With libpq 17 or newer on the client, TLS can start at once (one round trip less):")
        out.print(f"  {client.direct_psql_command}", markup=False, soft_wrap=True)


def _print_proofs(out: Console, result: SecureResult) -> None:
    table = Table(title="Proved from outside", show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for proof in result.proofs:
        # Text, not markup: details quote server messages and addresses such as [::1].
        table.add_row(Text(proof.what), "[green]ok[/]" if proof.ok else "[red]FAILED[/]", Text(proof.detail))
    out.print(table)


def _print_sessions(out: Console, sessions: Sequence[PlaintextSession], ended: Sequence[int]) -> None:
    if not sessions:
        return
    table = Table(
        title=f"{len(sessions)} session(s) still in plaintext over TCP (connected before; reloads keep them)",
        title_justify="left",
        header_style="bold",
    )
    for column in ("pid", "user", "database", "client", "since", "state"):
        table.add_column(column)
    for s in sessions:
        state = "ended" if s.pid in ended else "running"
        table.add_row(str(s.pid), Text(s.user), Text(s.database), Text(s.client), s.backend_start, state)
    out.print(table)
    if not ended:
        out.print(
            "  end them with --end-plaintext-sessions (or SELECT pg_terminate_backend(PID) as superuser)"
        )


def _read_file(path: Path | None) -> bytes | None:
    if path is None:
        return None
    from pgbatten.errors import FileProblem

    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileProblem(path, exc.strerror or "cannot read") from exc
