"""``pgbatten demo``: a throwaway server set up the way most self-hosted ones are, an eavesdropper reading a
card number off the wire, ``pgbatten secure``, the same eavesdropper left with nothing but TLS records, and
then a man in the middle: a client told to "Require SSL" (``sslmode=require``) is read anyway, and the
``verify-full`` client refuses the forged certificate.

Everything it makes (a cluster in a temp dir, a demo CA in another, relay threads) is removed on the way
out, also on an error or Ctrl-C. Nothing touches the user's real CA or any existing server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pgbatten import libpq
from pgbatten.attack.forge import Attack
from pgbatten.attack.mitm import Mitm
from pgbatten.attack.mitm_connection import MitmConnection, MitmOptions, Verdict
from pgbatten.attack.relay import Capture, Relay
from pgbatten.cluster.temp import TempCluster
from pgbatten.demo import views
from pgbatten.errors import ClusterError, ProbeError
from pgbatten.probe.check import CheckResult, check_target
from pgbatten.probe.wire import Target

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
    mitm_require: MitmConnection | None = None
    """The man in the middle's account of the ``sslmode=require`` client."""
    mitm_verify_full: MitmConnection | None = None
    """... and of the ``verify-full`` client."""
    require_read: bool = False
    """The require client got its rows through the man in the middle, who read the card number."""
    verify_full_refused: bool = False
    """The verify-full client refused the forged certificate and sent him nothing."""
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
            and self.require_read
            and self.verify_full_refused
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.proven else 1


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


def _client(
    port: int,
    password: str,
    sslmode: libpq.SslMode,
    *,
    host: str = "127.0.0.1",
    hostaddr: str | None = None,
    sslrootcert: Path | None = None,
) -> dict[str, str]:
    """The demo client's libpq parameters, pinned against the environment like every connection of ours."""
    return libpq.params(
        host=host,
        hostaddr=hostaddr,
        port=port,
        user=ROLE,
        dbname=DATABASE,
        password=password,
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        connect_timeout=CONNECT_TIMEOUT,
        application_name="pgbatten-demo",
    )


def _client_query(params: dict[str, str]) -> list[tuple[Any, ...]]:
    """Connect with libpq ``params``, run the query, return its rows."""
    # Autocommit: no BEGIN/COMMIT around the query, so the eavesdropper's view stays short.
    with psycopg.connect(libpq.conninfo(params), autocommit=True) as conn:
        return conn.execute(QUERY).fetchall()


def _must_query(params: dict[str, str]) -> list[tuple[Any, ...]]:
    """:func:`_client_query` for a step that must work: a failure ends the demo with a one-line error."""
    try:
        return _client_query(params)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()
        raise ProbeError(
            params["host"],
            int(params["port"]),
            f"the demo client could not run its query ({params['sslmode']}): "
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

    secure's own report (plan, full diffs, proofs) fills a page; the demo shows its gist from the returned
    result. A failure raises with secure's one-line reason, which says what failed.
    """
    from pgbatten.secure import SecureRequest, secure

    # The demo made the cluster, so it knows its files: no rediscovery.
    result = secure(cluster.cluster, SecureRequest(hosts=("localhost",), ca_dir=ca_dir))
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
            console.print(views.hba_diff(change.old or b"", change.new))
    proofs = result.proofs
    passed = sum(1 for p in proofs if p.ok)
    console.print(
        Text.assemble(
            "Proved from outside by secure itself: ",
            (f"{passed} of {len(proofs)} checks ok", "green" if proofs and passed == len(proofs) else "red"),
        )
    )
    return result.ca_cert_path, result.conninfo


def _check(console: Console, target: str, ca: Sequence[x509.Certificate] | None = None) -> CheckResult:
    result = check_target(target, ca=ca, timeout=CHECK_TIMEOUT)
    console.print(views.check_table(result, f"pgbatten check {target}" + (" --ca ca.crt" if ca else "")))
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
        views.section(console, 1, "A typical self-hosted PostgreSQL")
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
        views.section(console, 7, "Verdict")
        if outcome.proven:
            console.print(
                "[green bold]Proven:[/] before, the eavesdropper read the card number; after, it saw only "
                "TLS records, and the server refused a plaintext login. A man in the middle still read a "
                "client on sslmode=require; the verify-full client refused him."
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
    views.section(
        console, 2, f"An eavesdropper on 127.0.0.1:{relay.port}, and a client with default settings"
    )
    console.print(
        f"The client connects through the eavesdropper (a relay that forwards to port {cluster.port} and "
        "records every byte) with libpq's default [bold]sslmode=prefer[/] and runs:"
    )
    console.print(Text(f"    {QUERY}", style="cyan"))
    rows = _must_query(_client(relay.port, password, "prefer"))
    before = _last_capture(relay)
    console.print(
        views.eavesdropper_table("What the eavesdropper decoded (sslmode=prefer)", before.timeline())
    )
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

    views.section(console, 3, "pgbatten secure")
    ca_cert, conninfo = _run_secure(console, cluster, ca_dir)
    console.print(Text(f"What secure tells clients to use: {conninfo}", style="dim"))

    views.section(console, 4, "The same query through the same eavesdropper, sslmode=verify-full")
    # The relay is plain TCP: the client still checks the certificate against the name "localhost", while
    # hostaddr pins the address so that libpq does not try ::1 around the relay.
    rows = _must_query(
        _client(
            relay.port, password, "verify-full", host="localhost", hostaddr="127.0.0.1", sslrootcert=ca_cert
        )
    )
    after = _last_capture(relay)
    timeline = after.timeline()
    protocol = next((v for e in timeline if (v := e.get("negotiated"))), "no TLS")
    console.print(views.tls_table(f"What the eavesdropper saw ({protocol})", timeline))
    counts = Counter(e.get("content_type") for e in timeline if e.kind == "TLSRecord")
    leaks = tuple(name for name, needle in _secrets().items() if after.contains(needle))
    tls_only = all(e.kind in ("SSLRequest", "SSLAnswer", "TLSRecord") for e in timeline) and bool(counts)
    lines = Table.grid(padding=(0, 2))
    lines.add_row(
        "TLS records", Text(", ".join(f"{name} x{n}" for name, n in counts.items() if name) or "none")
    )
    lines.add_row("only SSLRequest, 'S' and TLS records", views.ok(tls_only))
    lines.add_row(f"client got its {len(rows)} rows", views.ok(len(rows) == len(CARDS)))
    lines.add_row(
        f"card number {CARD_NUMBER} in the capture", views.absent([n for n in leaks if n.startswith("card")])
    )
    lines.add_row(
        "query text, table name, holders in the capture",
        views.absent([n for n in leaks if not n.startswith("card")]),
    )
    console.print(lines)

    console.print("\nA client that will not encrypt ([bold]sslmode=disable[/]):")
    refusal = ""
    try:
        _client_query(_client(relay.port, password, "disable"))
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
    console.print("  refused before any password was sent: ", views.ok(plaintext_refused))

    mitm_require, mitm_verify_full, require_read, verify_full_refused = _mitm_scene(
        console, cluster, password, ca_cert
    )

    views.section(console, 6, "pgbatten check, after")
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
        mitm_require=mitm_require,
        mitm_verify_full=mitm_verify_full,
        require_read=require_read,
        verify_full_refused=verify_full_refused,
    )


def _mitm_scene(
    console: Console, cluster: TempCluster, password: str, ca_cert: Path
) -> tuple[MitmConnection | None, MitmConnection | None, bool, bool]:
    """A man in the middle against a client on ``sslmode=require``, then against the verify-full client."""
    options = MitmOptions(
        listen=Target("127.0.0.1", 0),
        upstream=Target("127.0.0.1", cluster.port),
        attack=Attack.DOWNGRADE_AUTH,
        timeout=CONNECT_TIMEOUT,
    )
    with Mitm(options) as mitm:
        views.section(
            console, 5, f'A man in the middle on 127.0.0.1:{mitm.port}, and a client told to "Require SSL"'
        )
        forged = mitm.forgery.info if mitm.forgery is not None else None
        console.print(
            'Most connection guides say: tick "Require SSL" ([bold]sslmode=require[/]). The client below '
            "does exactly that and connects to the same server through a man in the middle, who answers "
            f"with a certificate he made a moment ago ([bold]{forged.subject if forged else '?'}[/], signed "
            "by himself) and then asks for the password in cleartext."
        )
        params = _client(mitm.port, password, "require", host="localhost", hostaddr="127.0.0.1")
        try:
            rows = _client_query(params)
        except psycopg.Error:
            rows = None
        mitm.wait_connections(CONNECT_TIMEOUT)
        require = mitm.connections[-1] if mitm.connections else None
        read_rows = [e for e in (require.events if require else []) if e.kind == "DataRow"]
        card_read = any(CARD_NUMBER in e.values("value") for e in read_rows)
        if require is not None:
            console.print(views.mitm_table(require, read_rows))
        require_read = (
            rows is not None and card_read and require is not None and require.verdict == Verdict.READ
        )
        console.print(
            Panel(
                Text.assemble(
                    "The traffic was encrypted, twice: client to attacker, attacker to server. ",
                    ("require", "bold"),
                    " checks no certificate, so the client accepted his, and libpq sends a cleartext "
                    "password when asked unless channel_binding=require or require_auth says otherwise. He "
                    "logged in with it and relayed the session.\n",
                    (f"Card number {CARD_NUMBER} read by the man in the middle: ", "bold"),
                    ("yes" if card_read else "no", "red bold" if card_read else "green"),
                    f"  (the client got {len(rows or [])} rows and noticed nothing)",
                ),
                title="What this means",
                title_align="left",
            )
        )
        console.print("\nThe verify-full client of step 4 (the CA secure handed out), through him:")
        strict = _client(
            mitm.port, password, "verify-full", host="localhost", hostaddr="127.0.0.1", sslrootcert=ca_cert
        )
        refusal = ""
        try:
            _client_query(strict)
        except psycopg.OperationalError as exc:
            refusal = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        mitm.wait_connections(CONNECT_TIMEOUT)
        verify_full = mitm.connections[-1] if len(mitm.connections) > 1 else None
    refused = (
        bool(refusal) and verify_full is not None and not verify_full.startup and verify_full.password is None
    )
    console.print(Text(f"  client: {refusal or 'connected!'}"))
    if verify_full is not None:
        console.print(
            Text(f"  man in the middle: {verify_full.refusal or verify_full.error or verify_full.verdict}")
        )
    console.print("  refused the forged certificate, sent him nothing: ", views.ok(refused))
    return require, verify_full, require_read, refused


def run_demo(console: Console, *, keep: bool = False) -> int:
    """``pgbatten demo``: 0 when the after-state is proven (plaintext refused, card number absent from the
    TLS capture), 1 when not. Expected failures raise :class:`~pgbatten.errors.PgBattenError`."""
    return demonstrate(console, keep=keep).exit_code
