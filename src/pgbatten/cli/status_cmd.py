"""`pgbatten status`: what will expire and when, what is served, and what to do next."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console

if TYPE_CHECKING:
    import datetime as dt

    from rich.console import Console

    from pgbatten.lifecycle.views import CertificateView, ClusterView, CrlView, StatusReport

F = TypeVar("F", bound=Callable[..., Any])


def duration_option(name: str, default: str | None, help_text: str) -> Callable[[F], F]:
    return click.option(name, default=default, metavar="DURATION", show_default=True, help=help_text)


@main.command("status")
@opt.clusters
@opt.ca_dir
@opt.json_output("Print the report as JSON.")
@click.option(
    "--prometheus",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Also write node_exporter textfile metrics to FILE (atomically).",
)
@duration_option("--warn", "30d", "Warn this long before a certificate ends.")
@duration_option("--critical", "7d", "Critical this long before a certificate ends.")
@duration_option("--crl-warn", "7d", "Warn this long before a CRL's next update.")
@duration_option("--crl-critical", "2d", "Critical this long before a CRL's next update.")
@duration_option("--ca-warn", "365d", "Warn this long before the CA ends.")
@duration_option("--ca-critical", "90d", "Critical this long before the CA ends.")
@duration_option("--before", None, "Renewal due when less than this is left (default: a third of the life).")
@opt.timeout()
@click.pass_context
def status_cmd(
    ctx: click.Context,
    pgdatas: tuple[Path, ...],
    cluster_names: tuple[str, ...],
    ca_dir: Path | None,
    as_json: bool,
    prometheus: Path | None,
    warn: str,
    critical: str,
    crl_warn: str,
    crl_critical: str,
    ca_warn: str,
    ca_critical: str,
    before: str | None,
    timeout: float,
) -> None:
    """Report certificates, CRLs and the CA with their ends, and what to do next.

    Exit status: 0 all fine, 1 a warning, 2 something critical (or status could not run).
    """
    from pgbatten.lifecycle import status
    from pgbatten.lifecycle.export import report_json, write_textfile
    from pgbatten.lifecycle.timeline import Thresholds, Window, parse_duration
    from pgbatten.pki import default_ca_dir

    thresholds = Thresholds(
        certificate=Window(parse_duration(warn), parse_duration(critical)),
        crl=Window(parse_duration(crl_warn), parse_duration(crl_critical)),
        ca=Window(parse_duration(ca_warn), parse_duration(ca_critical)),
        renew_before=parse_duration(before) if before is not None else None,
    )
    refs = opt.cluster_refs(pgdatas, cluster_names)
    report = status(ca_dir or default_ca_dir(), refs, thresholds=thresholds, timeout=timeout)
    if prometheus is not None:
        write_textfile(prometheus, report)
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        print_report(make_console(), report)
    ctx.exit(report.exit_status)


def _iso_when(text: str) -> str:
    import datetime as dt

    return _when(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "never"


def _left(report: StatusReport, end: dt.datetime) -> str:
    from pgbatten.lifecycle.timeline import format_duration

    delta = end - report.generated_at
    return (
        f"{format_duration(delta)} left"
        if delta.total_seconds() > 0
        else f"ended {format_duration(-delta)} ago"
    )


def _cert_line(report: StatusReport, view: CertificateView) -> str:
    renew = ""
    if view.renew_at is not None and view.kind in ("server", "client") and view.revoked_at is None:
        renew = "; renewal due now" if view.renew_due else f"; renews from {view.renew_at:%Y-%m-%d}"
    left = _left(report, view.not_after)
    return f"{view.serial:#x} {view.state}, not after {_when(view.not_after)} ({left}){renew}"


def _crl_line(report: StatusReport, view: CrlView) -> str:
    number = f"#{view.number}, " if view.number is not None else ""
    size = f", {view.size_bytes} bytes" if view.size_bytes is not None else ""
    nxt = (
        f"next update {_when(view.next_update)} ({_left(report, view.next_update)})"
        if view.next_update is not None
        else "no next update"
    )
    resign = ""
    if view.resign_at is not None:
        resign = "; re-signing due now" if view.resign_due else f"; re-signed from {view.resign_at:%Y-%m-%d}"
    return f"{number}{view.revoked} revoked{size}, {nxt}{resign}"


def _print_cluster(out: Console, report: StatusReport, c: ClusterView) -> None:
    where = f"pid {c.pid}, port {c.port}" if c.running else "not running"
    out.print(f"Cluster {c.label} ({where}): {c.level.upper()}", markup=False)
    if c.error is not None:
        out.print(f"  error: {c.error}", markup=False)
        return
    s = c.server_certificate
    if s is not None:
        out.print(f"  server certificate {_cert_line(report, s)}", markup=False, soft_wrap=True)
        out.print(
            f"    issuer {s.issuer} ({s.authority} CA); SANs: {', '.join(s.sans) or 'none'}",
            markup=False,
            soft_wrap=True,
        )
    if c.served is not None:
        if c.served.fingerprint is None:
            served = f"unknown ({c.served.error})"
        elif c.served.matches_installed:
            served = "yes, the installed certificate"
        else:
            served = f"NO: {c.served.serial:#x} is served" if c.served.serial is not None else "NO"
        out.print(
            f"    served at {c.served.address} port {c.served.port}: {served}", markup=False, soft_wrap=True
        )
    out.print(
        f"  ssl_ca_file: {c.ssl_ca_file or 'not set'}"
        + (f" ({'; '.join(c.ca_file_subjects)})" if c.ca_file_subjects else ""),
        markup=False,
        soft_wrap=True,
    )
    out.print(f"  ssl_crl_file: {c.ssl_crl_file or 'not set'}", markup=False, soft_wrap=True)
    for crl in c.crls:
        out.print(f"    {crl.issuer}: {_crl_line(report, crl)}", markup=False, soft_wrap=True)


def print_report(out: Console, report: StatusReport) -> None:
    """The report for people: one block per part, then findings, then the next steps as commands."""
    if report.ca is not None:
        out.print(f"CA {report.ca_dir}: {report.ca.subject}", markup=False, soft_wrap=True)
        out.print(
            f"  not after {_when(report.ca.not_after)} ({_left(report, report.ca.not_after)})", markup=False
        )
    if report.crl is not None:
        out.print(f"  CRL {_crl_line(report, report.crl)}", markup=False, soft_wrap=True)
    if report.rotation is not None:
        r = report.rotation
        out.print(
            f"CA rotation: stage {r.stage}; started {_iso_when(r.started_at)}, overlap "
            f"{'ended' if r.ended else 'ends'} {_iso_when(r.planned_end)}",
            markup=False,
            soft_wrap=True,
        )
        if r.previous_ca is not None:
            out.print(
                f"  retiring CA {r.previous_ca.subject}, not after {_when(r.previous_ca.not_after)}",
                markup=False,
            )
    for cluster in report.clusters:
        _print_cluster(out, report, cluster)
    clients = [c for c in report.clients]
    if clients:
        counts: dict[str, int] = {}
        for c in clients:
            counts[str(c.state)] = counts.get(str(c.state), 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        out.print(f"Client certificates: {summary}", markup=False)
        for c in clients:
            ca = " (old CA)" if c.authority == "previous" else ""
            out.print(f"  {c.name} {_cert_line(report, c)}{ca}", markup=False, soft_wrap=True)
    notable = [f for f in report.findings if f.severity != "info"]
    if notable:
        out.print("Findings:")
        for f in notable:
            detail = f": {f.detail}" if f.detail else ""
            out.print(f"  {f.severity.upper()} {f.title}{detail}", markup=False, soft_wrap=True)
    if report.actions:
        out.print("Next:")
        for action in report.actions:
            out.print(f"  {action.title}: {action.command}", markup=False, soft_wrap=True)
    else:
        out.print("Next: nothing to do now.")
    out.print(f"Status: {report.level.upper()} (exit {report.exit_status})")
