"""How the demo shows each scene: rich tables and lines built from what the relay, the man in the middle
and ``check`` found. Nothing here decides anything."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.mitm_connection import MitmConnection
from pgbatten.attack.render import reveal, tls_detail
from pgbatten.probe.check import CheckResult

SENSITIVE = {"StartupMessage", "PasswordMessage", "SASLInitialResponse", "Query", "Parse", "Bind", "DataRow"}
LEARNS = {
    "StartupMessage": "who logs in, to which database",
    "PasswordMessage": "the password's md5 hash: with the salt, enough for offline guessing",
    "AuthenticationMD5Password": "the salt for that hash",
    "Query": "the SQL text",
    "Parse": "the SQL text",
    "DataRow": "the data itself",
}


# -------------------------------------------------------------------------------------------- output


def section(console: Console, number: int, title: str) -> None:
    console.print()
    console.rule(Text(f"{number}. {title}", style="bold"), align="left")


def ok(flag: bool) -> Text:
    return Text("yes", style="green") if flag else Text("no", style="red")


def group_parameter_status(events: Sequence[WireEvent]) -> Iterator[tuple[WireEvent, int]]:
    """Fold runs of ParameterStatus into one row: a dozen server settings are noise here."""
    i = 0
    while i < len(events):
        j = i
        if events[i].kind == "ParameterStatus":
            while j + 1 < len(events) and events[j + 1].kind == "ParameterStatus":
                j += 1
        yield events[i], j - i + 1
        i = j + 1


def eavesdropper_table(title: str, events: Sequence[WireEvent]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("from", no_wrap=True)
    table.add_column("message", no_wrap=True)
    table.add_column("what the eavesdropper reads", overflow="fold")
    for event, count in group_parameter_status(events):
        sender = "client" if event.direction == Direction.FRONTEND else "server"
        if count > 1:
            table.add_row(sender, f"ParameterStatus x{count}", Text("server version, encoding, time zone..."))
            continue
        cell = Text(reveal(event), style="bold red" if event.kind in SENSITIVE else "")
        if LEARNS.get(event.kind):
            cell.append(f"\n{LEARNS[event.kind]}", style="dim")
        table.add_row(sender, event.kind, cell)
    return table


def tls_table(title: str, events: Sequence[WireEvent], limit: int = 24) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("from", no_wrap=True)
    table.add_column("what the eavesdropper reads")
    table.add_column("bytes", justify="right")
    shown = list(events)
    for event in shown[:limit]:
        sender = "client" if event.direction == Direction.FRONTEND else "server"
        what = tls_detail(event, with_size=False) if event.kind == "TLSRecord" else event.summary
        size = str(event.size)
        table.add_row(sender, Text(what), size)
    if len(shown) > limit:
        table.add_row("", Text(f"... {len(shown) - limit} more records"), "")
    return table


def check_table(result: CheckResult, target: str) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    grade_style = "green bold" if result.grade.startswith("A") else "red bold"
    table.add_row("target", target)
    table.add_row("grade", Text(result.grade, style=grade_style))
    accepted = result.plaintext_accepted
    table.add_row(
        "plaintext login",
        Text("accepted", style="red")
        if accepted
        else Text("refused", style="green")
        if accepted is False
        else Text("unknown"),
    )
    table.add_row("TLS versions", ", ".join(result.protocols) or Text("none", style="red"))
    for finding in result.findings:
        if finding.severity in ("critical", "high", "medium"):
            table.add_row(finding.severity, Text(finding.title))
    return table


def hba_diff(old: bytes, new: bytes) -> Table:
    """pg_hba.conf lines removed and added: the heart of the change."""
    table = Table(title="pg_hba.conf", title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    old_lines = old.decode("utf-8", errors="replace").splitlines()
    new_lines = new.decode("utf-8", errors="replace").splitlines()
    for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        style = "green" if line.startswith("+") else "red"
        table.add_row(Text(line[:1], style=style), Text(line[1:], style=style))
    return table


def mitm_table(conn: MitmConnection, rows: Sequence[WireEvent]) -> Table:
    table = Table(
        title="What the man in the middle got (sslmode=require)", title_justify="left", show_header=False
    )
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("the client accepted", Text(f"his certificate ({conn.client_tls or 'TLS'})"))
    table.add_row(
        "user, database", Text(f"{conn.startup.get('user')}, {conn.startup.get('database')}", style="red")
    )
    table.add_row("password (cleartext)", Text(conn.password or "-", style="bold red"))
    table.add_row("his login to the server", Text(conn.upstream_login or "not tried"))
    for query in conn.queries:
        table.add_row("the SQL", Text(query, style="red"))
    for row in rows:
        table.add_row("a row", Text(" | ".join(row.values("value")), style="bold red"))
    return table


def absent(leaks: Sequence[str]) -> Text:
    return (
        Text("absent", style="green") if not leaks else Text("FOUND: " + ", ".join(leaks), style="red bold")
    )
