"""Rendering results for people (rich) and for programs (JSON). No I/O beyond the console given."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgbatten.findings import SEVERITY_ORDER
from pgbatten.probe.grading import GRADES
from pgbatten.probe.result import NOT_GRADED, CheckResult, result_to_json

_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _mark(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]?[/]"
    return "[green]✓[/]" if ok else "[red]✗[/]"


def print_check(console: Console, result: CheckResult) -> None:
    """A short checklist for one target."""
    # Dynamic text is escaped: an IPv6 target such as [::1]:5432 would otherwise read as markup.
    console.print(f"[bold]{escape(str(result.target))}[/]  grade [bold]{escape(result.grade)}[/]")
    if not result.reachable:
        console.print(f"  {_mark(False)} unreachable: {escape(result.error or '')}")
        return
    refused = None if result.plaintext_accepted is None else not result.plaintext_accepted
    console.print(f"  {_mark(refused)} plaintext refused")
    console.print(f"  {_mark(result.tls_supported)} TLS: {', '.join(result.protocols) or 'none'}")
    if result.cipher:
        console.print(f"      negotiated {result.cipher}")
    for protocol, suites in result.ciphers.items():
        pref = result.server_preference.get(protocol)
        order = {True: "server order", False: "client order", None: "order n/a"}[pref]
        console.print(f"      {protocol} ({order}):", markup=False)
        for suite in suites:
            console.print(f"        {suite}", markup=False)
    if result.groups:
        console.print(f"      groups: {', '.join(result.groups)}", markup=False)
    if result.direct_ssl is not None:
        console.print(f"      direct SSL (PostgreSQL 17 ALPN): {'yes' if result.direct_ssl else 'no'}")
    cert = result.certificate
    if cert is not None:
        console.print(
            f"      certificate {cert.subject or '(empty subject)'}, {cert.key_type} {cert.key_size},"
            f" {cert.signature_algorithm}, issuer {cert.issuer}"
            f"{' (self-signed)' if cert.self_signed else ''},"
            f" valid until {cert.not_after:%Y-%m-%d}",
            markup=False,
        )
        if cert.sans:
            console.print(f"      SANs: {', '.join(cert.sans)}", markup=False)
    if len(result.chain) > 1:
        console.print(
            f"      chain: {len(result.chain)} certificates,"
            f" {'in order' if result.chain_in_order else 'NOT in order'}"
            + {True: ", complete", False: ", incomplete", None: ""}[result.chain_complete]
        )
    for verdict in result.verify_full:
        console.print(f"  {_mark(verdict.ok)} verify-full for {escape(verdict.host)}: {escape(verdict.why)}")
        if verdict.old_client_name_ok is not None:
            console.print(
                f"      {_mark(verdict.old_client_ok)} with libpq before 15: "
                f"{escape(verdict.old_client_name_reason)}"
            )
    if result.buffered_plaintext_processed is not None:
        refused = not result.buffered_plaintext_processed
        console.print(f"  {_mark(refused)} plaintext sent before the TLS handshake refused (CVE-2021-23214)")
    for finding in result.findings:
        style = _SEVERITY_STYLE.get(finding.severity, "")
        console.print(f"  [{style}]{finding.severity:>8}[/] {escape(finding.title)}")
        if finding.fix:
            console.print(f"           fix: {finding.fix}", markup=False)
        if finding.cis:
            console.print(f"           {finding.cis}", markup=False, style="dim")
    console.print(
        f"  [dim]{result.connections_used} connection(s) to the server in {result.elapsed:.2f} s[/]"
    )


def severity_rank(result: CheckResult) -> tuple[int, int, int]:
    """Sort key, worst first: unreachable, then not graded, then by grade F..A+, then worst finding."""
    if not result.reachable:
        return (0, 0, 0)
    if result.grade == NOT_GRADED:
        return (1, 0, 0)
    worst = min((SEVERITY_ORDER.index(f.severity) for f in result.findings), default=len(SEVERITY_ORDER))
    return (2, len(GRADES) - GRADES.index(result.grade) if result.grade in GRADES else 0, worst)


def print_summary(console: Console, results: Sequence[CheckResult]) -> None:
    """One row per target, worst first."""
    table = Table(title="Summary (worst first)", title_justify="left")
    for column in ("target", "grade", "TLS", "plaintext", "worst finding", "conns"):
        table.add_column(column, no_wrap=column != "worst finding")
    for result in sorted(results, key=severity_rank):
        worst = result.findings[0].title if result.findings else ""
        if not result.reachable:
            worst = f"unreachable: {result.error}"
        plaintext = {True: "[red]accepted[/]", False: "refused", None: "?"}[result.plaintext_accepted]
        # Cells are markup: dynamic text (errors quote what a server sent) is escaped.
        table.add_row(
            escape(str(result.target)),
            escape(result.grade),
            escape(", ".join(p.removeprefix("TLSv") for p in result.protocols) or "-"),
            plaintext,
            escape(worst),
            str(result.connections_used),
        )
    console.print(table)


class Step(Protocol):
    """Advance a progress bar by one, showing ``description`` from now on when one is given."""

    def __call__(self, description: str | None = None, /) -> None: ...


def _no_step(description: str | None = None, /) -> None:
    pass


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool, description: str = "checking") -> Iterator[Step]:
    """A progress bar on stderr; yields a thread-safe :class:`Step`. A no-op when not ``enabled``."""
    if not enabled:
        yield _no_step
        return
    lock = threading.Lock()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(escape(description), total=total)

        def step(text: str | None = None, /) -> None:
            with lock:
                if text is None:
                    progress.advance(task)
                else:
                    progress.update(task, advance=1, description=escape(text))

        yield step


def check_json(results: Sequence[CheckResult]) -> str:
    """One object per target (an array), as documented in the README."""
    return json.dumps([result_to_json(r) for r in results], indent=2, sort_keys=False)
