"""How the attacker tools show what they saw: rich text and tables built here, printed by the CLI or the
demo. Nothing here prints."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.leaks import ConnectionSummary, Sensitivity
from pgbatten.attack.matrix import NO_ATTACK, Cell, MatrixResult

SENSITIVE = frozenset(
    {
        "StartupMessage",
        "PasswordMessage",
        "SASLInitialResponse",
        "SASLResponse",
        "Query",
        "Parse",
        "Bind",
        "DataRow",
        "CancelRequest",
        "BackendKeyData",
    }
)
"""Message kinds whose content an eavesdropper should never have read."""


def reveal(event: WireEvent) -> str:
    """The part of an event worth showing next to its name: the values, not the name again."""
    kind = event.kind
    if kind == "StartupMessage":
        return " ".join(f"{k}={v}" for k, v in event.fields if k != "protocol")
    if kind in ("Query", "Parse"):
        return event.get("query") or ""
    if kind in ("DataRow", "Bind"):
        return " | ".join(event.values("value"))
    if kind == "RowDescription":
        return ", ".join(event.values("column"))
    if kind == "PasswordMessage":
        return event.get("hash") or event.get("password") or ""
    if kind == "AuthenticationMD5Password":
        return f"salt {event.get('salt')}"
    if kind == "SSLRequest":
        return "may we switch to TLS?"
    if kind == "TLSRecord":
        return tls_detail(event)
    return "" if event.summary == kind else event.summary


def tls_detail(event: WireEvent, *, with_size: bool = True) -> str:
    """A TLS record as an eavesdropper reads it: its type, and what its cleartext handshake says."""
    details = [d for d in (event.get("handshake"), event.get("negotiated"), event.get("cipher")) if d]
    if event.get("server_name"):
        details.append(f"server name {event.get('server_name')!r}")
    if event.get("alpn"):
        details.append(f"ALPN {event.get('alpn')}")
    if event.get("certificate"):
        details.append(f"certificate {event.get('certificate')} ({event.get('certificate_sans')})")
    if event.get("client_certificate"):
        details.append(f"client certificate {event.get('client_certificate')}")
    if event.get("alert"):
        details.append(f"{event.get('alert_level')} alert {event.get('alert')}")
    what = f"TLS {event.get('content_type')}" + (f" ({', '.join(details)})" if details else "")
    return what + (f", {event.size} bytes" if with_size else "")


def event_line(conn_id: int, event: WireEvent, *, when: float | None = None) -> Text:
    """One live line: time, connection, sender, message, what it reveals."""
    stamp = time.strftime("%H:%M:%S", time.localtime(when if when is not None else time.time()))
    sender = "client" if event.direction == Direction.FRONTEND else "server"
    line = Text(f"{stamp} #{conn_id} {sender:<6} ", style="dim")
    line.append(f"{event.kind:<26}", style="bold" if event.kind in SENSITIVE else "")
    shown = reveal(event)
    if shown:
        line.append(" " + shown, style="red" if event.kind in SENSITIVE else "")
    return line


def leak_text(summary: ConnectionSummary) -> Text:
    """The leaks of one connection, secrets first and in red."""
    order = {Sensitivity.SECRET: 0, Sensitivity.DATA: 1, Sensitivity.METADATA: 2}
    style = {Sensitivity.SECRET: "bold red", Sensitivity.DATA: "red", Sensitivity.METADATA: "yellow"}
    text = Text()
    for leak in sorted(summary.leaks, key=lambda x: order[x.sensitivity]):
        if text:
            text.append("\n")
        text.append(f"{leak.what}: ", style=style[leak.sensitivity])
        text.append(leak.detail)
    return text or Text("nothing", style="green")


def transport_text(summary: ConnectionSummary) -> Text:
    if summary.encrypted:
        version = f" {summary.tls_version}" if summary.tls_version else ""
        return Text(f"{summary.transport}{version}", style="green")
    return Text(summary.transport, style="red" if summary.transport == "plaintext" else "")


def summary_table(rows: Sequence[tuple[int, str, ConnectionSummary]], *, title: str) -> Table:
    """One row per connection: number, client address, transport, what leaked."""
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("client", no_wrap=True)
    table.add_column("transport", no_wrap=True)
    table.add_column("what an eavesdropper read", overflow="fold")
    for conn_id, peer, summary in rows:
        table.add_row(str(conn_id), peer, transport_text(summary), leak_text(summary))
    return table


# ---------------------------------------------------------------------------------------------- matrix

_CELL_STYLE = {
    "read": "bold red",
    "fooled": "yellow",
    "refused": "green",
    "connects": "green",
    "fails": "red",
    "n/a": "dim",
    "no connection": "dim",
}


def _cell_text(cell: Cell) -> Text:
    word = {"read": "READ", "no connection": "-", "connects": "ok"}.get(cell.verdict, cell.verdict)
    text = Text(word, style=_CELL_STYLE.get(cell.verdict, ""))
    if "password" in cell.captured and cell.verdict in ("read", "fooled"):
        text.append(" pw", style="bold red")
    if not cell.consistent:
        text.append(" !", style="bold magenta")
    return text


def matrix_tables(result: MatrixResult) -> list[Table | Text]:
    """Per driver: a table of settings by attacks, the fix, and where it departs from libpq's docs."""
    out: list[Table | Text] = []
    for driver in result.drivers:
        if driver.unavailable is not None:
            out.append(Text(f"{driver.key}: not run ({driver.unavailable})", style="dim"))
            continue
        table = Table(title=f"{driver.label}: what each attack got", title_justify="left")
        table.add_column("sslmode", no_wrap=True)
        table.add_column(NO_ATTACK, no_wrap=True)
        for attack in result.attacks:
            table.add_column(str(attack), no_wrap=True)
        table.add_column("fix", overflow="fold")
        for setting in result.settings:
            row = {c.attack: c for c in result.row(driver.key, setting)}
            if not row:
                continue
            cells = [
                _cell_text(row[a]) if a in row else Text("") for a in (NO_ATTACK, *map(str, result.attacks))
            ]
            fooled = result.fooled_by(driver.key, setting)
            fix = Text("-", style="green") if not fooled else Text(driver.fix)
            table.add_row(setting.short, *cells, fix)
        out.append(table)
        for note in driver.notes:
            out.append(Text(f"{driver.label}: {note}", style="dim"))
        departures = result.departures(driver.key)
        if departures:
            lines = Text(f"Where {driver.label} departs from libpq's documented sslmode:\n", style="bold")
            for line in departures:
                lines.append(f"  - {line}\n")
            out.append(lines)
    out.append(
        Text(
            "READ: the attacker relayed the session and read its queries and rows; fooled: the client went "
            "on through the attack and sent its startup and credentials (a SCRAM proof allows offline "
            "guessing), but the login could not be relayed; pw: the client sent its password in cleartext; "
            "refused: the client stopped first; ok/fails: with no attacker; n/a: the driver has no such "
            "setting; !: the client's own report disagrees with the verdict.",
            style="dim",
        )
    )
    return out
