"""What `pgbatten wiretap` and `pgbatten mitm` share: the listen and upstream addresses, the warning that
these tools are for systems you own, and Ctrl-C/SIGTERM as the normal way to stop them."""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pgbatten.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    # pgbatten.probe imports every probe module: only the commands that parse a target pay for it.
    from pgbatten.probe.wire import Target

F = TypeVar("F", bound=Callable[..., Any])

LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> Target:
    """``HOST:PORT``, ``HOST`` (a free port) or ``PORT`` (on 127.0.0.1); port 0 is not accepted."""
    from pgbatten.probe.wire import parse_target

    if text.isascii() and text.isdigit():
        return parse_target(f"{LOOPBACK}:{text}")
    return parse_target(text, default_port=0)


def parse_upstream(text: str) -> Target:
    """``HOST[:PORT]`` of the real server (port 5432 when left out)."""
    from pgbatten.probe.wire import parse_target

    return parse_target(text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (a name is resolved: ``localhost``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UsageError(f"cannot resolve the listen address {host!r}: {exc}") from exc
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def warning(tool: str, listen: Target, what: str) -> str:
    text = (
        f"pgbatten {tool}: for testing systems you own or are allowed to test. {what} "
        "Nothing captured is written to disk."
    )
    if not is_loopback(listen.host):
        text += (
            f" WARNING: {listen.host} is not a loopback address: anyone who can reach it can use this relay."
        )
    return text


def warn_on_stderr(tool: str, listen: Target, what: str) -> Console:
    """Say :func:`warning` on stderr before anything is relayed; return the stderr console for later notes."""
    from pgbatten.cli.app import make_console

    errors = make_console(stderr=True)
    errors.print(warning(tool, listen, what), style="yellow", soft_wrap=True)
    return errors


def emit_json(obj: dict[str, object]) -> None:
    """One JSON object on its own line, flushed at once (``--json``: a reader follows live)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def duration_option(func: F) -> F:
    return click.option(
        "--duration",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Stop after this many seconds.",
    )(func)


def address_options(func: F) -> F:
    func = click.option(
        "--upstream",
        required=True,
        metavar="HOST:PORT",
        help="The real PostgreSQL server (port 5432 when left out).",
    )(func)
    return click.option(
        "--listen",
        default=LOOPBACK,
        show_default=True,
        metavar="HOST:PORT",
        help="Where clients connect: HOST:PORT, HOST (a free port, printed) or PORT (on 127.0.0.1).",
    )(func)


def stop_on_sigterm() -> None:
    """SIGTERM (kill, timeout) stops the tool like Ctrl-C does: connections closed, summary printed."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
