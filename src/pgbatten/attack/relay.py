"""The eavesdropper's position on the path: a TCP relay that forwards every byte unchanged and shows them
to an observer (and keeps a bounded copy).

:class:`TcpService` is what the relay and the man in the middle share: a listener, a thread per connection,
and a ``close()`` that stops accepting, ends every connection and joins every thread. :func:`pump` copies
both ways between two sockets (plain or TLS) until both are done.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from pgbatten.attack.decode import Conversation, decode_connection, interleave
from pgbatten.attack.events import Direction, WireEvent
from pgbatten.errors import ProbeError
from pgbatten.probe import transport
from pgbatten.probe.transport import Deadline

POLL = 0.05
"""How often the accept and copy loops check for close(), so closing never waits long (seconds)."""
SEND_TIMEOUT = 30.0
"""A peer that accepts no bytes for this long is given up (seconds)."""


def close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (an IPv6 literal gets an IPv6 socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=64)
    listener.settimeout(POLL)
    return listener


def wait_until_stopped(
    stop: threading.Event, *, duration: float | None = None, also: threading.Event | None = None
) -> None:
    """Block until ``stop`` (or ``also``) is set, ``duration`` seconds pass, or Ctrl-C: how a wiretap or
    a man in the middle session normally ends, to be followed by closing it and printing its summary."""
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop.is_set() and not (also is not None and also.is_set()):
            if deadline is not None and time.monotonic() >= deadline:
                return
            # Woken at once by the bound (``also``); ``stop`` and the clock are looked at every 0.1 s.
            (also or stop).wait(0.1)
    except KeyboardInterrupt:
        return


class TcpService:
    """Listens on ``listen_host:listen_port`` (port 0: a free one) and serves each connection in a thread.

    Use as a context manager, or ``start()``/``close()``. At most ``max_connections`` connections over its
    life (None: no limit).
    """

    thread_prefix = "relay"

    def __init__(self, *, listen_host: str, listen_port: int, max_connections: int | None) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.max_connections = max_connections
        self.port = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._connection_threads: list[threading.Thread] = []
        self._accepted = 0
        self._clients: set[socket.socket] = set()

    def handle(self, conn_id: int, client: socket.socket, peer: tuple[str, int]) -> None:
        """Serve one accepted connection; the caller closes ``client`` afterwards."""
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Bind, listen, and start accepting in a background thread. ``OSError`` if the bind fails."""
        listener = listen_socket(self.listen_host, self.listen_port)
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, f"{self.thread_prefix}-accept", listener)

    def _spawn(
        self, target: Callable[..., None], name: str, *args: object, connection: bool = False
    ) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            # Registered before it starts: wait_connections() must see a connection as soon as it exists.
            self._threads.append(thread)
            if connection:
                self._connection_threads.append(thread)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket) -> None:
        # Only this thread touches the listener, so closing it cannot race with accept().
        try:
            while not self._stop.is_set() and (
                self.max_connections is None or self._accepted < self.max_connections
            ):
                try:
                    client, peer = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._accepted += 1
                self._spawn(
                    self._serve,
                    f"{self.thread_prefix}-conn-{self._accepted}",
                    self._accepted,
                    client,
                    peer,
                    connection=True,
                )
        finally:
            close_quietly(listener)

    def _serve(self, conn_id: int, client: socket.socket, peer: tuple[str, int]) -> None:
        self._register(client)
        try:
            self.handle(conn_id, client, (str(peer[0]), int(peer[1])))
        finally:
            with self._lock:
                self._clients.discard(client)
            close_quietly(client)

    def track(self, old: socket.socket, new: socket.socket) -> None:
        """``new`` now carries ``old``'s connection (TLS wraps and detaches it): close() must reach it."""
        self._register(new, instead_of=old)

    def _register(self, sock: socket.socket, instead_of: socket.socket | None = None) -> None:
        # Under the lock close() takes its list with: a socket registered after that list was taken (a
        # connection accepted, or wrapped in TLS, as close() began) is shut down here, or its thread would
        # wait for its client until a read timeout instead of ending now.
        with self._lock:
            if instead_of is not None:
                self._clients.discard(instead_of)
            self._clients.add(sock)
            late = self._stop.is_set()
        if late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._clients.discard(sock)

    def wait_connections(self, timeout: float) -> bool:
        """Wait until every connection accepted so far has ended; False on timeout.

        A client returning from ``close()`` does not mean the service has read its last bytes yet; waiting
        here makes what it recorded complete.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._connection_threads)
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)

    def close(self) -> None:
        """Stop accepting, end every connection, and wait for every thread."""
        with self._lock:
            self._stop.set()
            clients = list(self._clients)
        for client in clients:
            # Wakes a thread blocked reading from its client (mid-handshake, awaiting a password): closing
            # is immediate, not a read timeout later.
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        limit = SEND_TIMEOUT + 6.0
        while True:
            with self._lock:
                pending = [t for t in self._threads if t.is_alive()]
            if not pending:
                return
            for thread in pending:
                thread.join(timeout=limit)
            if any(t.is_alive() for t in pending):
                return  # daemon threads; never hang the caller on a stuck peer

    def __enter__(self) -> Self:
        try:
            self.start()
        except OSError as exc:
            raise ProbeError(
                self.listen_host, self.listen_port, f"cannot listen: {exc.strerror or exc}"
            ) from exc
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _recv_all_pending(sock: socket.socket) -> bytes:
    """One read, plus whatever TLS already decrypted behind it (select() cannot see that)."""
    try:
        chunk = sock.recv(65536)
        if chunk and isinstance(sock, ssl.SSLSocket):
            while sock.pending():
                more = sock.recv(65536)
                if not more:
                    break
                chunk += more
    except (OSError, ssl.SSLError):
        return b""
    return chunk


def pump(
    client: socket.socket,
    server: socket.socket,
    on_chunk: Callable[[Direction, bytes], bytes | None],
    *,
    stop: threading.Event,
    idle_timeout: float | None,
    half_close: bool = True,
) -> None:
    """Copy both ways until both sides are done, ``stop`` is set, or nothing moves for ``idle_timeout``.

    ``on_chunk`` sees each chunk before it is forwarded; the relay returns None (forward it unchanged),
    the man in the middle may return other bytes. With ``half_close`` one side's end of stream is passed
    on and the other direction keeps flowing (a plain relay); without it either end closes both (TLS).
    """
    open_ends = 2
    idle = 0.0
    with selectors.DefaultSelector() as sel:
        sel.register(client, selectors.EVENT_READ, (client, server, Direction.FRONTEND))
        sel.register(server, selectors.EVENT_READ, (server, client, Direction.BACKEND))
        for sock in (client, server):
            # Reads happen only when the selector says so; a blocking send with a timeout keeps the copy
            # simple and still bounded.
            sock.settimeout(SEND_TIMEOUT)
        pending = [s for s in (client, server) if isinstance(s, ssl.SSLSocket) and s.pending()]
        while open_ends and not stop.is_set() and (idle_timeout is None or idle < idle_timeout):
            ready = [(sel.get_key(s), 0) for s in pending] or sel.select(POLL)
            pending = []
            if not ready:
                idle += POLL
                continue
            idle = 0.0
            for key, _ in ready:
                src, dst, direction = key.data
                chunk = _recv_all_pending(src)
                if not chunk:
                    if not half_close:
                        return
                    sel.unregister(src)
                    open_ends -= 1
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    continue
                out = on_chunk(direction, chunk)
                try:
                    dst.sendall(chunk if out is None else out)
                except OSError:
                    return


class RelayObserver(Protocol):
    """Sees a relay's connections live: what the wiretap decodes and prints."""

    def opened(self, conn_id: int, peer: tuple[str, int]) -> None: ...

    def chunk(self, conn_id: int, direction: Direction, data: bytes) -> None: ...

    def closed(self, conn_id: int, error: str | None) -> None: ...


@dataclass(frozen=True)
class Capture:
    """A snapshot of one relayed connection: the bytes of each direction, and the order chunks crossed."""

    client_bytes: bytes
    server_bytes: bytes
    transcript: tuple[tuple[Direction, int, int], ...]
    truncated: bool = False

    def decode(self) -> Conversation:
        return decode_connection(self.client_bytes, self.server_bytes)

    def timeline(self) -> list[WireEvent]:
        """Both directions' events in the order they crossed the relay."""
        return interleave(self.decode().events, self.transcript)

    def contains(self, needle: bytes) -> bool:
        """Whether ``needle`` appears in either direction's raw bytes."""
        return needle in self.client_bytes or needle in self.server_bytes


@dataclass
class _Recording:
    client: bytearray = field(default_factory=bytearray)
    server: bytearray = field(default_factory=bytearray)
    transcript: list[tuple[Direction, int, int]] = field(default_factory=list)
    truncated: bool = False


class Relay(TcpService):
    """A recording TCP relay, by default on a free 127.0.0.1 port, forwarding to ``target_host:target_port``.

    Bounded: at most ``max_connections`` connections over its life (None: no limit), at most ``max_bytes``
    recorded per direction and connection (the rest is forwarded but not kept; 0 keeps nothing), and a
    connection idle for ``idle_timeout`` seconds is closed (None: never). ``observer`` sees every
    connection live. The bytes are never altered.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_connections: int | None = 32,
        max_bytes: int = 1 << 20,
        idle_timeout: float | None = 30.0,
        connect_timeout: float = 5.0,
        observer: RelayObserver | None = None,
    ) -> None:
        super().__init__(listen_host=listen_host, listen_port=listen_port, max_connections=max_connections)
        self.target = (target_host, target_port)
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.observer = observer
        self._recordings: list[_Recording] = []

    def handle(self, conn_id: int, client: socket.socket, peer: tuple[str, int]) -> None:
        recording = _Recording()
        with self._lock:
            self._recordings.append(recording)
        if self.observer is not None:
            self.observer.opened(conn_id, peer)
        error: str | None = None
        try:
            server = transport.connect(*self.target, Deadline(self.connect_timeout))
        except ProbeError as exc:
            error = f"cannot reach the server: {exc}"
        else:
            try:

                def seen(direction: Direction, chunk: bytes) -> None:
                    self._record(recording, direction, chunk)
                    if self.observer is not None:
                        self.observer.chunk(conn_id, direction, chunk)

                pump(client, server, seen, stop=self._stop, idle_timeout=self.idle_timeout)
            finally:
                close_quietly(server)
        if self.observer is not None:
            self.observer.closed(conn_id, error)

    def _record(self, recording: _Recording, direction: Direction, chunk: bytes) -> None:
        with self._lock:
            buf = recording.client if direction == Direction.FRONTEND else recording.server
            kept = chunk[: max(self.max_bytes - len(buf), 0)]
            if len(kept) < len(chunk):
                recording.truncated = True
            if kept:
                recording.transcript.append((direction, len(buf), len(buf) + len(kept)))
                buf += kept

    def captures(self) -> list[Capture]:
        """A snapshot of every connection so far, in the order they were accepted."""
        with self._lock:
            return [
                Capture(bytes(r.client), bytes(r.server), tuple(r.transcript), r.truncated)
                for r in self._recordings
            ]
