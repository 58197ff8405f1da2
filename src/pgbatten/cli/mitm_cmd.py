"""`pgbatten mitm`: an active man in the middle for a test environment, and the attack matrix."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console, read_secret_file
from pgbatten.cli.attack_options import (
    duration_option,
    emit_json,
    parse_listen,
    parse_upstream,
    stop_on_sigterm,
    warn_on_stderr,
)
from pgbatten.errors import UsageError

if TYPE_CHECKING:
    # rich is imported where output is made: `pgbatten --help` must not pay for it.
    from rich.table import Table
    from rich.text import Text

    from pgbatten.attack.mitm_connection import MitmConnection
    from pgbatten.pki import CertificateAuthority

ATTACKS = ("strip", "self-signed", "other-ca", "same-ca-wrong-host", "expired", "downgrade-auth")


def _load_ca(
    ca_dir: Path | None, ca_cert: Path | None, ca_key: Path | None, passphrase_file: Path | None
) -> CertificateAuthority | None:
    from pgbatten.certfacts import load_pem_file
    from pgbatten.errors import FileProblem
    from pgbatten.pki import CAStore, CertificateAuthority, load_private_key_pem

    passphrase = read_secret_file(passphrase_file)
    if ca_dir is not None:
        if ca_cert is not None or ca_key is not None:
            raise UsageError("give either --ca-dir or --ca-cert/--ca-key, not both")
        return CAStore(ca_dir).load(passphrase)
    if (ca_cert is None) != (ca_key is None):
        raise UsageError("--ca-cert and --ca-key go together")
    if ca_cert is None or ca_key is None:
        return None
    certs = load_pem_file(ca_cert)
    if not certs:
        raise FileProblem(ca_cert, "holds no certificate")
    try:
        key_data = ca_key.read_bytes()
    except OSError as exc:
        raise FileProblem(ca_key, exc.strerror or "cannot read") from exc
    key = load_private_key_pem(key_data, passphrase, label=f"CA key {ca_key}")
    return CertificateAuthority(certificate=certs[0], key=key)


def _captured(conn: MitmConnection) -> Text:
    from rich.text import Text

    text = Text()
    if conn.startup:
        text.append(f"user {conn.startup.get('user')}, database {conn.startup.get('database')}")
    if conn.password is not None:
        text.append(f"\npassword {conn.password!r}", style="bold red")
    for credential in dict.fromkeys(conn.credentials):
        if credential != "cleartext password":
            text.append(f"\n{credential}", style="red")
    if conn.queries:
        shown = "; ".join(q[:60] for q in conn.queries[:3])
        text.append(f"\n{len(conn.queries)} queries: {shown}", style="red")
    if conn.rows:
        text.append(f"\n{conn.rows} rows", style="red")
    if conn.cancel:
        text.append(f"CancelRequest: backend {conn.cancel['pid']}, key {conn.cancel['key']}", style="red")
    return text or Text("nothing", style="green")


_VERDICT_STYLE = {"read": "bold red", "fooled": "red", "refused": "green"}


def _verdict(conn: MitmConnection) -> Text:
    from rich.text import Text

    return Text(conn.verdict, style=_VERDICT_STYLE.get(conn.verdict, ""))


def _table(connections: list[MitmConnection], attack: str) -> Table:
    from rich.table import Table

    table = Table(title=f"What the man in the middle got ({attack})", title_justify="left", show_lines=True)
    for name in ("#", "client", "verdict", "what the client did", "captured", "upstream login"):
        table.add_column(name, overflow="fold")
    for conn in connections:
        did = f"asked: {conn.asked}"
        if conn.stripped and conn.startup:
            did += "\nwent on without TLS after 'N'"
        if conn.client_tls:
            did += f"\naccepted the forged certificate ({conn.client_tls})"
        if conn.refusal:
            did += f"\n{conn.refusal}"
        table.add_row(
            str(conn.conn_id),
            f"{conn.peer[0]}:{conn.peer[1]}",
            _verdict(conn),
            did,
            _captured(conn),
            conn.upstream_login or "not tried",
        )
    return table


@main.command("mitm")
@click.option(
    "--listen",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST:PORT",
    help="Where clients connect: HOST:PORT, HOST (a free port, printed) or PORT (on 127.0.0.1).",
)
@click.option("--upstream", default=None, metavar="HOST:PORT", help="The real PostgreSQL server.")
@click.option("--attack", type=click.Choice(ATTACKS), default=None, help="How to attack each connection.")
@click.option(
    "--ca-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A pgbatten CA directory whose CA the clients trust (to mint genuine certificates).",
)
@opt.file("--ca-cert", "That CA's certificate.")
@opt.file("--ca-key", "That CA's key (PEM).")
@opt.ca_passphrase
@opt.json_output("One JSON object per line.")
@duration_option
@click.option(
    "--matrix",
    is_flag=True,
    help="Every attack against every client setting and driver, on a throwaway server.",
)
@click.option(
    "--clients",
    default=None,
    metavar="LIST",
    help="With --matrix: some of psql,psycopg,jdbc,node (default: all; those missing here are reported).",
)
def mitm_cmd(
    listen: str,
    upstream: str | None,
    attack: str | None,
    ca_dir: Path | None,
    ca_cert: Path | None,
    ca_key: Path | None,
    ca_passphrase_file: Path | None,
    as_json: bool,
    duration: float | None,
    matrix: bool,
    clients: str | None,
) -> None:
    """Attack the connections of clients pointed at --listen; say what their settings let through."""
    if matrix:
        if upstream is not None or attack is not None or ca_dir or ca_cert or ca_key:
            raise UsageError(
                "--matrix runs its own server, CA and every attack: leave out --upstream, --attack, --ca-*"
            )
        stop_on_sigterm()
        raise SystemExit(_matrix(clients, as_json=as_json))
    if clients is not None:
        raise UsageError("--clients goes with --matrix")
    if upstream is None or attack is None:
        raise UsageError("give --upstream HOST:PORT and --attack ATTACK (or --matrix)")
    from pgbatten.attack.events import WireEvent
    from pgbatten.attack.forge import Attack
    from pgbatten.attack.mitm import Mitm, run_mitm
    from pgbatten.attack.mitm_connection import MitmOptions
    from pgbatten.attack.render import event_line

    options = MitmOptions(
        listen=parse_listen(listen),
        upstream=parse_upstream(upstream),
        attack=Attack(attack),
        ca=_load_ca(ca_dir, ca_cert, ca_key, ca_passphrase_file),
        duration=duration,
    )
    console = make_console()
    errors = warn_on_stderr(
        "mitm", options.listen, "It attacks every connection and shows what it captures, passwords included."
    )
    lock = threading.Lock()
    emit = emit_json

    def say(conn: MitmConnection, text: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] #{conn.conn_id} {text}", soft_wrap=True)

    class Sink:
        def opened(self, conn: MitmConnection) -> None:
            with lock:
                peer = f"{conn.peer[0]}:{conn.peer[1]}"
                if as_json:
                    emit({"type": "connection", "conn": conn.conn_id, "peer": peer, "time": time.time()})
                else:
                    say(conn, f"connection from {peer}")

        def step(self, conn: MitmConnection, text: str) -> None:
            with lock:
                if as_json:
                    emit({"type": "step", "conn": conn.conn_id, "text": text, "time": time.time()})
                else:
                    say(conn, text)

        def event(self, conn: MitmConnection, event: WireEvent) -> None:
            with lock:
                if as_json:
                    emit({"type": "message", "conn": conn.conn_id, "time": time.time(), **event.to_json()})
                else:
                    console.print(event_line(conn.conn_id, event), soft_wrap=True)

        def closed(self, conn: MitmConnection) -> None:
            with lock:
                if as_json:
                    emit({"type": "closed", "time": time.time(), **conn.to_json()})
                else:
                    detail = (
                        conn.refusal or conn.error or f"upstream login {conn.upstream_login or 'not tried'}"
                    )
                    from rich.text import Text

                    line = Text(f"{time.strftime('%H:%M:%S')} #{conn.conn_id} closed: ", style="dim")
                    line.append_text(_verdict(conn))
                    line.append(f": {detail}")
                    console.print(line, soft_wrap=True)

    def listening(mitm: Mitm) -> None:
        where = f"{options.listen.host}:{mitm.port}"
        forged = mitm.forgery.info if mitm.forgery is not None else None
        with lock:
            if as_json:
                emit(
                    {
                        "type": "listening",
                        "listen": where,
                        "port": mitm.port,
                        "upstream": str(options.upstream),
                        "attack": str(options.attack),
                        "certificate": None
                        if forged is None
                        else {
                            "subject": forged.subject,
                            "issuer": forged.issuer,
                            "sans": list(forged.sans),
                            "not_after": forged.not_after.isoformat(),
                            "sha256": forged.sha256,
                        },
                    }
                )
            else:
                errors.print(
                    f"listening on {where}, attacking connections to {options.upstream} (Ctrl-C to stop)"
                )
                errors.print(f"attack {options.attack}: {options.attack.description}")
                if forged is not None:
                    errors.print(
                        f"forged certificate: {forged.subject}, SANs {', '.join(forged.sans)}, issued by "
                        f"{forged.issuer}, valid until {forged.not_after:%Y-%m-%d %H:%M} UTC"
                    )

    stop_on_sigterm()
    connections = run_mitm(options, Sink(), on_listening=listening)
    if as_json:
        emit({"type": "summary", "connections": [c.to_json() for c in connections]})
    elif connections:
        console.print(_table(connections, str(options.attack)))
    else:
        console.print("No client connected.")


def _matrix(clients: str | None, *, as_json: bool) -> int:
    """Run the matrix with a progress bar on stderr; print the tables (or JSON). 1 if a verdict disagrees
    with what a client reported (a bug to report), else 0."""
    from rich.progress import Progress

    from pgbatten.attack.drivers import SSLMODES
    from pgbatten.attack.forge import Attack
    from pgbatten.attack.matrix import Cell, full_settings, parse_clients, run_matrix
    from pgbatten.attack.render import matrix_tables

    keys = parse_clients(clients)
    console = make_console()
    errors = make_console(stderr=True)
    errors.print(
        "pgbatten mitm --matrix: a throwaway TLS-only server on 127.0.0.1, one man in the middle per attack, "
        f"and each of {', '.join(keys)} connecting with every setting.",
        style="yellow",
        soft_wrap=True,
    )
    total = len(keys) * len(full_settings()) * (1 + len(Attack))
    with Progress(console=errors, transient=True, disable=not errors.is_terminal) as progress:
        task = progress.add_task("measuring", total=total)

        def advance(cell: Cell) -> None:
            progress.update(task, advance=1, description=f"{cell.driver} {cell.setting.label} {cell.attack}")

        result = run_matrix(keys, progress=advance)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        for item in matrix_tables(result):
            console.print(item)
        console.print(
            f"PostgreSQL {result.server_version}; {len(result.cells)} cells in {result.elapsed:.0f} s "
            f"({len(SSLMODES)} sslmodes x {len(full_settings()) // len(SSLMODES)} variants x "
            f"{len(Attack)} attacks + no attacker, per driver of {', '.join(keys)})."
        )
    bad = result.inconsistent()
    for cell in bad:
        got = "got" if cell.outcome.got_rows else "did not get"
        where = f"{cell.driver} {cell.setting.label} {cell.attack}"
        errors.print(
            f"pgbatten: inconsistent verdict: {where}: {cell.verdict}, but the client {got} its rows"
        )
    return 1 if bad else 0
