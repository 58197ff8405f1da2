"""TCP connections whose name resolution is bounded too.

``socket.create_connection`` bounds the connect, not ``getaddrinfo``: a broken resolver could hold a fleet
worker for the resolver's own timeouts (tens of seconds), whatever ``--timeout`` says. Here the lookup runs
in a daemon thread we stop waiting for at the deadline, and its answer is reused for a minute, so the dozen
connections of one audit cost one lookup.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

_TTL = 60.0
# getaddrinfo's exact tuple type differs between typeshed releases; we only unpack it.
_AddrInfo = list[tuple[Any, ...]]
_cache: dict[tuple[str, int], tuple[float, _AddrInfo]] = {}
_lock = threading.Lock()


def resolve(host: str, port: int, timeout: float) -> _AddrInfo:
    """getaddrinfo for a TCP connection, within ``timeout`` seconds; ``socket.gaierror`` otherwise."""
    key = (host, port)
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
        if cached is not None and now - cached[0] < _TTL:
            return cached[1]
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["result"] = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(max(timeout, 0.0))
    if worker.is_alive():
        raise socket.gaierror(socket.EAI_AGAIN, f"name resolution took longer than {timeout:g} s")
    error = box.get("error")
    if isinstance(error, OSError):
        raise error
    result = box["result"]
    assert isinstance(result, list)
    with _lock:
        _cache[key] = (time.monotonic(), result)
    return result


def connect_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """Like ``socket.create_connection``, with the lookup inside ``timeout`` as well."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    for family, kind, proto, _canon, address in resolve(host, port, timeout):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    if last is not None:
        raise last
    raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")


def clear_cache() -> None:
    """Forget every cached answer (tests, long-running callers after a DNS change)."""
    with _lock:
        _cache.clear()
