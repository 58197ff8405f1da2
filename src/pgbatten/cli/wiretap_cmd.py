"""`pgbatten wiretap`: relay an application's connections and show what an eavesdropper reads."""

from __future__ import annotations

import threading
import time

import click

from pgbatten.cli import options as opt
from pgbatten.cli.app import main, make_console
from pgbatten.cli.attack_options import (
    address_options,
    duration_option,
    emit_json,
    parse_listen,
    parse_upstream,
    stop_on_sigterm,
    warn_on_stderr,
)


@main.command("wiretap")
@address_options
@opt.json_output("One JSON object per line: every message, every summary.")
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop once N bytes (both directions, all connections) have been captured.",
)
@duration_option
def wiretap_cmd(
    listen: str, upstream: str, as_json: bool, max_bytes: int | None, duration: float | None
) -> None:
    """Relay connections to UPSTREAM unchanged, decoding live what an eavesdropper on the path reads."""
    from pgbatten.attack.events import WireEvent
    from pgbatten.attack.render import event_line, summary_table, transport_text
    from pgbatten.attack.wiretap import TappedConnection, WiretapOptions, run_wiretap

    options = WiretapOptions(
        listen=parse_listen(listen), upstream=parse_upstream(upstream), max_bytes=max_bytes, duration=duration
    )
    console = make_console()
    errors = warn_on_stderr(
        "wiretap", options.listen, "Every byte relayed is decoded and shown, passwords included."
    )
    lock = threading.Lock()
    emit = emit_json

    class Sink:
        def opened(self, conn_id: int, peer: tuple[str, int]) -> None:
            with lock:
                if as_json:
                    emit(
                        {
                            "type": "connection",
                            "conn": conn_id,
                            "peer": f"{peer[0]}:{peer[1]}",
                            "time": time.time(),
                        }
                    )
                else:
                    console.print(
                        f"[dim]{time.strftime('%H:%M:%S')}[/] #{conn_id} connection from {peer[0]}:{peer[1]}"
                    )

        def event(self, conn_id: int, event: WireEvent) -> None:
            with lock:
                if as_json:
                    emit({"type": "message", "conn": conn_id, "time": time.time(), **event.to_json()})
                else:
                    console.print(event_line(conn_id, event), soft_wrap=True)

        def closed(self, conn_id: int, connection: TappedConnection) -> None:
            with lock:
                if as_json:
                    emit({"type": "closed", "time": time.time(), **connection.to_json()})
                elif connection.summary is not None:
                    line = transport_text(connection.summary)
                    whats = list(dict.fromkeys(leak.what for leak in connection.summary.leaks))
                    line.append(f"; leaked: {', '.join(whats) or 'nothing'}")
                    if connection.error:
                        line.append(f"; {connection.error}", style="red")
                    console.print(
                        f"[dim]{time.strftime('%H:%M:%S')}[/] #{conn_id} closed:", line, soft_wrap=True
                    )

    def listening(port: int) -> None:
        where = f"{options.listen.host}:{port}"
        with lock:
            if as_json:
                emit({"type": "listening", "listen": where, "port": port, "upstream": str(options.upstream)})
            else:
                errors.print(f"listening on {where}, relaying to {options.upstream} (Ctrl-C to stop)")

    stop_on_sigterm()
    connections = run_wiretap(options, Sink(), on_listening=listening)
    done = [c for c in connections if c.summary is not None]
    if as_json:
        emit({"type": "summary", "connections": [c.to_json() for c in done]})
        return
    if done:
        rows = [(c.conn_id, f"{c.peer[0]}:{c.peer[1]}", c.summary) for c in done if c.summary is not None]
        console.print(summary_table(rows, title="What an eavesdropper on this path read"))
    else:
        console.print("No connection was relayed.")
