"""Which cluster of this machine serves a TCP address: so that a printed fix can name its data directory.

``pgbatten check`` talks to a server over the network and learns no path; when the server is on this
machine, its ``fix`` commands can say ``--pgdata /the/real/dir`` instead of a placeholder. The answer comes
from the kernel, not from guessing: an address is this machine's when a socket can be bound to it, and a
running postmaster is found by its process (``/proc/PID/cwd`` is its data directory, whose
``postmaster.pid`` must name that very process and the port). Only root and a server's owner may see its
working directory; for anyone else the answer is "unknown" and the placeholder stays.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from pathlib import Path

from pgbatten.cluster.discover import read_postmaster_pid
from pgbatten.errors import PgBattenError

_PROC = Path("/proc")
_SERVER_NAMES = frozenset({"postgres", "postmaster"})


def is_local_address(address: str) -> bool:
    """Whether ``address`` (an IP address) belongs to this machine: a socket can be bound to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except (OSError, ValueError, OverflowError):
        return False
    return True


def local_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to that are this machine's (none for a name that does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos if is_local_address(str(info[4][0]))]


def running_data_dirs(port: int) -> list[Path]:
    """Data directories of the postmasters running here (that this process may see) with ``port``."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() not in _SERVER_NAMES:
                    continue
                data_dir = (entry / "cwd").readlink()
            except OSError:  # ended meanwhile, or not ours to look at
                continue
            try:
                running = read_postmaster_pid(data_dir)
            except PgBattenError:
                continue
            # A backend shares the directory but not the PID; a server in a container names its own PID.
            if running is not None and running.pid == int(entry.name) and running.port == port:
                found.append(data_dir)
    return found


def data_dir_serving(hosts: Iterable[str], port: int) -> Path | None:
    """The data directory of the one running cluster here that serves ``port`` on one of ``hosts``."""
    if not any(local_addresses(host, port) for host in hosts):
        return None
    candidates = set(running_data_dirs(port))
    return candidates.pop() if len(candidates) == 1 else None
