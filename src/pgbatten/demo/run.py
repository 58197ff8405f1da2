"""``pgbatten demo``: a throwaway server set up the way most self-hosted ones are, an eavesdropper reading a
card number off the wire, ``pgbatten secure``, and the same eavesdropper left with nothing but TLS records.

Everything it makes (a cluster in a temp dir, a demo CA in another, a relay thread) is removed on the way
out, also on an error or Ctrl-C. Nothing touches the user's real CA or any existing server.
"""

from __future__ import annotations

import difflib
import io
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.relay import Capture, Relay
from pgbatten.cluster.temp import TempCluster
from pgbatten.errors import ClusterError, ProbeError
from pgbatten.probe.check import CheckResult, check_target

ROLE = "app"
DATABASE = "shop"
QUERY = "SELECT holder, card_number FROM payments"
# Payment-network test numbers (Visa, Mastercard): they pass the Luhn check and belong to nobody.
CARDS = (("Alice Example", "4111 1111 1111 1111"), ("Bob Example", "5555 5555 5555 4444"))
CARD_NUMBER = CARDS[0][1]

# The typical self-hosted starting point: peer for the owner on the socket, md5 passwords over TCP.
DEMO_HBA = """\
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 peer
host    all       all   127.0.0.1/32  md5
host    all       all   ::1/128       md5
"""
DEMO_SETTINGS = {"ssl": "off", "password_encryption": "md5"}

CONNECT_TIMEOUT = 10
CHECK_TIMEOUT = 5.0

_SENSITIVE = {"StartupMessage", "PasswordMessage", "SASLInitialResponse", "Query", "Parse", "Bind", "DataRow"}
_LEARNS = {
    "StartupMessage": "who logs in, to which database",
    "PasswordMessage": "the password's md5 hash: with the salt, enough for offline guessing",
    "AuthenticationMD5Password": "the salt for that hash",
    "Query": "the SQL text",
    "Parse": "the SQL text",
    "DataRow": "the data itself",
}


@dataclass(frozen=True)
class DemoOutcome:
    """What the demo proved. ``exit_code`` is 0 only when the after-state is proven."""

    before: Capture
    after: Capture | None
    refused: Capture | None
    card_seen_before: bool
    leaks_after: tuple[str, ...]
    tls_only_after: bool
    plaintext_refused: bool
    refusal: str
    before_check: CheckResult | None
    after_check: CheckResult | None
    workdirs: tuple[Path, ...] = ()
    """The temp dirs the demo made: removed when it returns, unless ``keep``."""

    @property
    def proven(self) -> bool:
        return (
            self.card_seen_before
            and self.after is not None
            and not self.leaks_after
            and self.tls_only_after
            and self.plaintext_refused
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.proven else 1


# -------------------------------------------------------------------------------------------- output


def _section(console: Console, number: int, title: str) -> None:
    console.print()
    console.rule(Text(f"{number}. {title}", style="bold"), align="left")


def _ok(flag: bool) -> Text:
    return Text("yes", style="green") if flag else Text("no", style="red")


def _group_parameter_status(events: Sequence[WireEvent]) -> Iterator[tuple[WireEvent, int]]:
    """Fold runs of ParameterStatus into one row: a dozen server settings are noise here."""
    i = 0
    while i < len(events):
        j = i
        if events[i].kind == "ParameterStatus":
            while j + 1 < len(events) and events[j + 1].kind == "ParameterStatus":
                j += 1
        yield events[i], j - i + 1
        i = j + 1


def _reveal(event: WireEvent) -> str:
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
    return "" if event.summary == kind else event.summary


def _eavesdropper_table(title: str, events: Sequence[WireEvent]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("from", no_wrap=True)
    table.add_column("message", no_wrap=True)
    table.add_column("what the eavesdropper reads", overflow="fold")
    for event, count in _group_parameter_status(events):
        sender = "client" if event.direction == Direction.FRONTEND else "server"
        if count > 1:
            table.add_row(sender, f"ParameterStatus x{count}", Text("server version, encoding, time zone..."))
            continue
        cell = Text(_reveal(event), style="bold red" if event.kind in _SENSITIVE else "")
        if _LEARNS.get(event.kind):
            cell.append(f"\n{_LEARNS[event.kind]}", style="dim")
        table.add_row(sender, event.kind, cell)
    return table


def _tls_table(title: str, events: Sequence[WireEvent], limit: int = 24) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("from", no_wrap=True)
    table.add_column("what the eavesdropper reads")
    table.add_column("bytes", justify="right")
    shown = list(events)
    for event in shown[:limit]:
        sender = "client" if event.direction == Direction.FRONTEND else "server"
        if event.kind == "TLSRecord":
            details = [d for d in (event.get("handshake"), event.get("negotiated")) if d]
            if event.get("server_name"):
                details.append(f"server name {event.get('server_name')!r}")
            what = f"TLS record: {event.get('content_type')}" + (
                f" ({', '.join(details)})" if details else ""
            )
            size = str(event.size)
        else:
            what, size = event.summary, str(event.size)
        table.add_row(sender, Text(what), size)
    if len(shown) > limit:
        table.add_row("", Text(f"... {len(shown) - limit} more records"), "")
    return table


def _check_table(result: CheckResult, target: str) -> Table:
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


# ---------------------------------------------------------------------------------------------- steps


def _make_cluster(password: str) -> TempCluster:
    cluster = TempCluster(hba=DEMO_HBA, settings=dict(DEMO_SETTINGS))
    try:
        cluster.init()
        cluster.start()
        sql = cluster.sql()
        sql.query(f"CREATE ROLE {ROLE} LOGIN PASSWORD :'pw'", {"pw": password})
        sql.query(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        shop = replace(sql, dbname=DATABASE)
        rows = ", ".join(f"({i}, :'holder{i}', :'card{i}')" for i in range(len(CARDS)))
        params = {f"holder{i}": holder for i, (holder, _) in enumerate(CARDS)}
        params |= {f"card{i}": card for i, (_, card) in enumerate(CARDS)}
        # Only psql variable names are formatted in; the values travel as variables.
        insert = f"INSERT INTO payments VALUES {rows};"  # noqa: S608
        shop.query(
            "CREATE TABLE payments (id int PRIMARY KEY, holder text NOT NULL, card_number text NOT NULL);"
            f"{insert} GRANT SELECT ON payments TO {ROLE};",
            params,
        )
    except BaseException:
        _remove_cluster(cluster)
        raise
    return cluster


def _remove_cluster(cluster: TempCluster) -> None:
    """Stop and delete the demo cluster, also when interrupted halfway through starting it."""
    # Ctrl-C during ``pg_ctl start -w`` kills pg_ctl after it has launched a detached postmaster, before
    # TempCluster marks itself started: a postmaster.pid on disk is the sign that a server needs stopping.
    if (cluster.data_dir / "postmaster.pid").exists():
        cluster.started = True
    cluster.cleanup()


def _client_query(**params: Any) -> list[tuple[Any, ...]]:
    """Connect with libpq ``params``, run the query, return its rows."""
    with psycopg.connect(
        # Autocommit: no BEGIN/COMMIT around the query, so the eavesdropper's view stays short.
        autocommit=True,
        dbname=DATABASE,
        user=ROLE,
        connect_timeout=CONNECT_TIMEOUT,
        # A Kerberos ticket on the machine would make libpq try GSSAPI encryption first; keep it out.
        gssencmode="disable",
        application_name="pgbatten-demo",
        **params,
    ) as conn:
        return conn.execute(QUERY).fetchall()


def _must_query(port: int, **params: Any) -> list[tuple[Any, ...]]:
    """:func:`_client_query` for a step that must work: a failure ends the demo with a one-line error."""
    try:
        return _client_query(port=port, **params)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()
        raise ProbeError(
            str(params.get("host", "127.0.0.1")),
            port,
            f"the demo client could not run its query ({params.get('sslmode')}): "
            + (reason[-1] if reason else type(exc).__name__),
        ) from exc


def _last_capture(relay: Relay) -> Capture:
    relay.wait_connections(timeout=CONNECT_TIMEOUT)
    captures = relay.captures()
    if not captures:
        raise ClusterError("the relay saw no connection")
    return captures[-1]


def _secrets() -> dict[str, bytes]:
    found = {"query text": QUERY.encode(), "table name": b"payments"}
    for holder, card in CARDS:
        found[f"card {card}"] = card.encode()
        found[f"card {card} (digits)"] = card.replace(" ", "").encode()
        found[f"holder {holder}"] = holder.encode()
    return found


def _run_secure(console: Console, cluster: TempCluster, ca_dir: Path) -> tuple[Path, str]:
    """Secure the demo cluster as ``pgbatten secure --yes`` would; return the CA cert path and conninfo.

    secure's own report (plan, full diffs, proofs) fills a page; the demo shows its gist and replays the
    whole report only when secure fails, where every line may matter.
    """
    from pgbatten.secure import SecureOptions, secure

    described = cluster.cluster  # the demo made it, so it knows its files: no rediscovery
    report = io.StringIO()
    quiet = Console(file=report, width=console.width, color_system=None)
    try:
        result = secure(
            described, SecureOptions(hosts=("localhost",), ca_dir=ca_dir, yes=True), console=quiet
        )
    except Exception:
        console.print(Text(report.getvalue()))
        raise
    plan = result.plan
    console.print(
        Text.assemble(
            "Wrote ",
            (", ".join(c.path.name for c in plan.changes), "bold"),
            f"; certificate for {', '.join(plan.hosts)} signed by a demo CA; ",
            ("ssl = on", "bold"),
            f", {plan.settings.get('ssl_min_protocol_version', 'TLS?')} or newer; reloaded, no restart.",
        )
    )
    for change in plan.changes:
        if change.purpose == "pg_hba":
            console.print(_hba_diff(change.old or b"", change.new))
    proofs = result.proofs
    passed = sum(1 for p in proofs if p.ok)
    console.print(
        Text.assemble(
            "Proved from outside by secure itself: ",
            (f"{passed} of {len(proofs)} checks ok", "green" if proofs and passed == len(proofs) else "red"),
        )
    )
    return result.ca_cert_path, result.conninfo


def _hba_diff(old: bytes, new: bytes) -> Table:
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


def _check(console: Console, target: str, ca: Sequence[x509.Certificate] | None = None) -> CheckResult:
    result = check_target(target, ca=ca, timeout=CHECK_TIMEOUT)
    console.print(_check_table(result, f"pgbatten check {target}" + (" --ca ca.crt" if ca else "")))
    return result


# ------------------------------------------------------------------------------------------------ flow


def demonstrate(console: Console, *, keep: bool = False) -> DemoOutcome:
    """Run the whole demo, printing to ``console``; return what it proved. Cleans up unless ``keep``."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="pgbatten-demo-"))  # 0700: holds the demo CA's private key
    cluster: TempCluster | None = None
    succeeded = False
    try:
        password = secrets.token_urlsafe(12)
        _section(console, 1, "A typical self-hosted PostgreSQL")
        cluster = _make_cluster(password)
        console.print(
            f"PostgreSQL {cluster.bin.major} on 127.0.0.1:{cluster.port}: [bold]ssl = off[/], md5 passwords "
            f"over TCP, role [bold]{ROLE}[/] with a password, table [bold]payments[/] holding the test "
            f"card number [bold]{CARD_NUMBER}[/]."
        )
        with Relay("127.0.0.1", cluster.port) as relay:
            outcome = replace(
                _flow(console, cluster, relay, password, root / "ca"), workdirs=(cluster.root, root)
            )
        succeeded = True
        _section(console, 6, "Verdict")
        if outcome.proven:
            console.print(
                "[green bold]Proven:[/] before, the eavesdropper read the card number; after, it saw only "
                "TLS records, and the server refused a plaintext login."
            )
        else:
            console.print("[red bold]Not proven[/]: see the red items above.")
        if keep:
            as_owner = f"sudo -u {cluster.owner.name} " if os.geteuid() == 0 else ""
            console.print(
                Text(
                    f"Kept for you to explore: the cluster in {cluster.data_dir} (port {cluster.port}, still "
                    f"running), the demo CA in {root / 'ca'}. When done:\n"
                    f"  {as_owner}{cluster.bin.path('pg_ctl')} -D {cluster.data_dir} stop\n"
                    f"  rm -rf {cluster.root} {root}"
                )
            )
        console.print(f"[dim]Demo took {time.monotonic() - started:.1f} s.[/]")
        return outcome
    finally:
        if not (keep and succeeded):
            if cluster is not None:
                _remove_cluster(cluster)
            shutil.rmtree(root, ignore_errors=True)


def _flow(console: Console, cluster: TempCluster, relay: Relay, password: str, ca_dir: Path) -> DemoOutcome:
    _section(console, 2, f"An eavesdropper on 127.0.0.1:{relay.port}, and a client with default settings")
    console.print(
        f"The client connects through the eavesdropper (a relay that forwards to port {cluster.port} and "
        "records every byte) with libpq's default [bold]sslmode=prefer[/] and runs:"
    )
    console.print(Text(f"    {QUERY}", style="cyan"))
    rows = _must_query(relay.port, host="127.0.0.1", password=password, sslmode="prefer")
    before = _last_capture(relay)
    console.print(_eavesdropper_table("What the eavesdropper decoded (sslmode=prefer)", before.timeline()))
    card_seen = before.contains(CARD_NUMBER.encode())
    console.print(
        Panel(
            Text.assemble(
                "The server said no to TLS ('N'), so libpq went on in plaintext: ",
                ("prefer", "bold"),
                " never protects against an eavesdropper.\n"
                "The md5 hash cannot simply be replayed (the server picks a new salt each login), but with "
                "its salt it allows offline password guessing, and md5 is fast to compute.\n",
                (f"Card number {CARD_NUMBER} in the capture: ", "bold"),
                ("yes" if card_seen else "no", "red bold" if card_seen else "green"),
                f"  (the client got {len(rows)} rows)",
            ),
            title="What this means",
            title_align="left",
        )
    )
    before_check = _check(console, f"127.0.0.1:{cluster.port}")

    _section(console, 3, "pgbatten secure")
    ca_cert, conninfo = _run_secure(console, cluster, ca_dir)
    console.print(Text(f"What secure tells clients to use: {conninfo}", style="dim"))

    _section(console, 4, "The same query through the same eavesdropper, sslmode=verify-full")
    # The relay is plain TCP: the client still checks the certificate against the name "localhost", while
    # hostaddr pins the address so that libpq does not try ::1 around the relay.
    rows = _must_query(
        relay.port,
        host="localhost",
        hostaddr="127.0.0.1",
        password=password,
        sslmode="verify-full",
        sslrootcert=str(ca_cert),
    )
    after = _last_capture(relay)
    timeline = after.timeline()
    protocol = next((v for e in timeline if (v := e.get("negotiated"))), "no TLS")
    console.print(_tls_table(f"What the eavesdropper saw ({protocol})", timeline))
    counts = Counter(e.get("content_type") for e in timeline if e.kind == "TLSRecord")
    leaks = tuple(name for name, needle in _secrets().items() if after.contains(needle))
    tls_only = all(e.kind in ("SSLRequest", "SSLAnswer", "TLSRecord") for e in timeline) and bool(counts)
    lines = Table.grid(padding=(0, 2))
    lines.add_row(
        "TLS records", Text(", ".join(f"{name} x{n}" for name, n in counts.items() if name) or "none")
    )
    lines.add_row("only SSLRequest, 'S' and TLS records", _ok(tls_only))
    lines.add_row(f"client got its {len(rows)} rows", _ok(len(rows) == len(CARDS)))
    lines.add_row(
        f"card number {CARD_NUMBER} in the capture", _absent([n for n in leaks if n.startswith("card")])
    )
    lines.add_row(
        "query text, table name, holders in the capture",
        _absent([n for n in leaks if not n.startswith("card")]),
    )
    console.print(lines)

    console.print("\nA client that will not encrypt ([bold]sslmode=disable[/]):")
    refusal = ""
    try:
        _client_query(host="127.0.0.1", port=relay.port, password=password, sslmode="disable")
    except psycopg.OperationalError as exc:
        refusal = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    refused = _last_capture(relay)
    events = refused.decode()
    errors = [e for e in events.backend if e.kind == "ErrorResponse"]
    sent_password = any(e.kind in ("PasswordMessage", "SASLInitialResponse") for e in events.frontend)
    plaintext_refused = (
        bool(errors) and "no encryption" in (errors[0].get("message") or "") and not sent_password
    )
    console.print(Text(f"  server: {errors[0].summary if errors else refusal or 'connected!'}"))
    console.print("  refused before any password was sent: ", _ok(plaintext_refused))

    _section(console, 5, "pgbatten check, after")
    ca = x509.load_pem_x509_certificates(ca_cert.read_bytes())
    after_check = _check(console, f"localhost:{cluster.port}", ca)
    return DemoOutcome(
        before=before,
        after=after,
        refused=refused,
        card_seen_before=card_seen,
        leaks_after=leaks,
        tls_only_after=tls_only,
        plaintext_refused=plaintext_refused,
        refusal=refusal,
        before_check=before_check,
        after_check=after_check,
    )


def _absent(leaks: Sequence[str]) -> Text:
    return (
        Text("absent", style="green") if not leaks else Text("FOUND: " + ", ".join(leaks), style="red bold")
    )


def run_demo(console: Console, *, keep: bool = False) -> int:
    """``pgbatten demo``: 0 when the after-state is proven (plaintext refused, card number absent from the
    TLS capture), 1 when not. Expected failures raise :class:`~pgbatten.errors.PgBattenError`."""
    return demonstrate(console, keep=keep).exit_code
