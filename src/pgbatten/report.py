"""Rendering results for people (rich) and for programs (JSON). No I/O beyond the console given."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console

from pgbatten.probe.check import CheckResult, result_to_json

_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _mark(ok: bool | None) -> str:
    if ok is None:
        return "[yellow]?[/]"
    return "[green]✓[/]" if ok else "[red]✗[/]"


def print_check(console: Console, result: CheckResult) -> None:
    """A short checklist for one target."""
    console.print(f"[bold]{result.target}[/]  grade [bold]{result.grade}[/]")
    if not result.reachable:
        console.print(f"  {_mark(False)} unreachable: {result.error}")
        return
    refused = None if result.plaintext_accepted is None else not result.plaintext_accepted
    console.print(f"  {_mark(refused)} plaintext refused")
    console.print(f"  {_mark(result.tls_supported)} TLS: {', '.join(result.protocols) or 'none'}")
    if result.cipher:
        console.print(f"      negotiated {result.cipher}")
    cert = result.certificate
    if cert is not None:
        console.print(
            f"      certificate {cert.subject or '(empty subject)'}, {cert.key_type} {cert.key_size},"
            f" issuer {cert.issuer}{' (self-signed)' if cert.self_signed else ''},"
            f" valid until {cert.not_after:%Y-%m-%d}"
        )
        if cert.sans:
            console.print(f"      SANs: {', '.join(cert.sans)}")
    for verdict in result.verify_full:
        console.print(f"  {_mark(verdict.ok)} verify-full for {verdict.host}: {verdict.why}")
    for finding in result.findings:
        style = _SEVERITY_STYLE.get(finding.severity, "")
        console.print(f"  [{style}]{finding.severity:>8}[/] {finding.title}")
        if finding.fix:
            console.print(f"           fix: {finding.fix}", markup=False)
    console.print(f"  [dim]{result.connections_used} connection(s) to the server[/]")


def check_json(results: Sequence[CheckResult]) -> str:
    """One object per target (an array), as documented in the README."""
    return json.dumps([result_to_json(r) for r in results], indent=2, sort_keys=False)
