"""A relay on loopback that forwards a PostgreSQL connection, optionally delays it, and counts round trips.

``DelayRelay(upstream, delay=0.025)`` listens on 127.0.0.1 (or ::1), and forwards every connection it
accepts to ``upstream``, holding each chunk ``delay`` seconds in each direction: a link with round-trip time
``2 * delay``. Since a client's TCP connect to loopback completes at once, the relay also holds the first
client bytes two more delays, as SYN / SYN-ACK would on a real link, so a connection costs what it would
cost there. With ``delay=0`` it only watches: ``pgbatten bench`` counts the round trips to a real server
that way.

What it saw on each connection is a :class:`~pgbatten.bench.flights.ConnectionTrace`; the counting itself is
pure and lives in :mod:`pgbatten.bench.flights`. One thread runs one selector loop for every connection;
``close()`` (or leaving the ``with`` block) stops it and closes every socket.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from pgbatten.bench.flights import ConnectionTrace, FlightRecorder, Sender
from pgbatten.errors import UsageError

CHUNK = 65536
_EOF = None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Pipe:
    """One direction of a connection: bytes read from ``src`` wait in ``queue`` until due, then go to
    ``dst``."""

    sender: Sender
    src: socket.socket
    dst: socket.socket
    extra_first: float = 0.0
    queue: collections.deque[tuple[float, bytes | None]] = field(default_factory=collections.deque)
    pending: bytes = b""
    last_due: float = 0.0
    read_eof: bool = False
    write_eof: bool = False
    started: bool = False

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue and not self.pending else None


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket
    recorder: FlightRecorder
    upstream_ready: bool = False
    up: _Pipe = field(init=False)
    down: _Pipe = field(init=False)
    done: bool = False

    def __post_init__(self) -> None:
        self.up = _Pipe(Sender.CLIENT, self.client, self.upstream)
        self.down = _Pipe(Sender.SERVER, self.upstream, self.client)


class DelayRelay:
    """Forward connections from a loopback port to ``upstream``, delayed, recording every flight."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        delay: float = 0.0,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 10.0,
        model_tcp_handshake: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _is_loopback(listen_host):
            raise UsageError(f"the relay listens on loopback only, not {listen_host!r}")
        if not 0 <= delay <= 10:
            raise UsageError(f"relay delay must be between 0 and 10 seconds, not {delay}")
        self.upstream = upstream
        self.delay = delay
        self.connect_timeout = connect_timeout
        self.model_tcp_handshake = model_tcp_handshake
        self.clock = clock
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.host = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._connections: list[_Connection] = []
        self._finished: list[ConnectionTrace] = []
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pgbatten-relay", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- public

    def traces(self) -> list[ConnectionTrace]:
        """Every connection so far, finished ones first in the order they ended, then the open ones."""
        with self._lock:
            live = [c.recorder.trace() for c in self._connections if not c.done]
            return [*self._finished, *live]

    def wait_finished(self, count: int, timeout: float = 10.0) -> list[ConnectionTrace]:
        """Block until ``count`` connections have ended (or ``timeout``); returns the finished traces."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._finished) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self._finished)

    def clear(self) -> None:
        """Forget the finished connections."""
        with self._lock:
            self._finished.clear()

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=10)
        for conn in list(self._connections):
            self._finish(conn, "relay closed")
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> DelayRelay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- the loop

    def _run(self) -> None:
        while not self._stop:
            timeout = self._next_timeout()
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                if self._stop:
                    return
                raise
            for key, mask in events:
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                else:
                    conn: _Connection = key.data
                    sock = key.fileobj
                    if not conn.done and isinstance(sock, socket.socket):
                        self._on_event(conn, sock, mask)
            now = self.clock()
            for conn in list(self._connections):
                if not conn.done:
                    self._pump(conn, now)

    def _next_timeout(self) -> float | None:
        dues = [
            d
            for c in self._connections
            if not c.done and c.upstream_ready
            for d in (c.up.next_due(), c.down.next_due())
            if d is not None
        ]
        dues += [
            self._connect_deadline_of(c) for c in self._connections if not c.done and not c.upstream_ready
        ]
        if not dues:
            return None
        return max(0.0, min(dues) - self.clock())

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        accepted = self.clock()
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            infos = socket.getaddrinfo(*self.upstream, type=socket.SOCK_STREAM)
            upstream = socket.socket(infos[0][0], socket.SOCK_STREAM)
        except OSError as exc:
            client.close()
            with self._lock:
                self._finished.append(FlightRecorder(accepted).trace(closed=accepted, error=str(exc)))
                self._lock.notify_all()
            return
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(client=client, upstream=upstream, recorder=FlightRecorder(accepted))
        if self.model_tcp_handshake and self.delay:
            conn.up.extra_first = 2 * self.delay
        conn.up.last_due = accepted
        rc = upstream.connect_ex(infos[0][4])
        with self._lock:
            self._connections.append(conn)
        self._selector.register(client, selectors.EVENT_READ, conn)
        if rc == 0:
            conn.upstream_ready = True
            self._selector.register(upstream, selectors.EVENT_READ, conn)
        else:
            self._selector.register(upstream, selectors.EVENT_WRITE, conn)

    def _on_event(self, conn: _Connection, sock: socket.socket, mask: int) -> None:
        now = self.clock()
        if sock is conn.upstream and not conn.upstream_ready:
            err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._finish(conn, f"cannot connect to {self._upstream_text()}: {os.strerror(err)}")
                return
            conn.upstream_ready = True
            self._update_interest(conn)
            return
        if mask & selectors.EVENT_READ:
            pipe = conn.up if sock is conn.client else conn.down
            if not pipe.read_eof:
                self._read(conn, pipe, now)
        if mask & selectors.EVENT_WRITE and not conn.done:
            for pipe in (conn.up, conn.down):
                if pipe.dst is sock and pipe.pending:
                    self._flush(conn, pipe, now)

    def _read(self, conn: _Connection, pipe: _Pipe, now: float) -> None:
        try:
            data = pipe.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._broken(conn, pipe, exc)
            return
        due = now + self.delay
        if not pipe.started:
            due += pipe.extra_first
            pipe.started = True
        due = max(due, pipe.last_due)
        pipe.last_due = due
        if data:
            conn.recorder.received(pipe.sender, data, now)
            pipe.queue.append((due, data))
        else:
            pipe.read_eof = True
            pipe.queue.append((due, _EOF))
        self._update_interest(conn)

    def _pump(self, conn: _Connection, now: float) -> None:
        if not conn.upstream_ready:
            if now > self._connect_deadline_of(conn):
                self._finish(conn, f"cannot connect to {self._upstream_text()}: timed out")
            return
        for pipe in (conn.up, conn.down):
            while not conn.done and not pipe.pending and pipe.queue and pipe.queue[0][0] <= now:
                _, data = pipe.queue.popleft()
                if data is _EOF:
                    with contextlib.suppress(OSError):
                        pipe.dst.shutdown(socket.SHUT_WR)
                    pipe.write_eof = True
                else:
                    pipe.pending = data
                    self._flush(conn, pipe, now)
        if conn.up.write_eof and conn.down.write_eof and not conn.done:
            self._finish(conn, None)
        elif not conn.done:
            self._update_interest(conn)

    def _upstream_text(self) -> str:
        host, port = self.upstream
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _connect_deadline_of(self, conn: _Connection) -> float:
        return conn.recorder.accepted + self.connect_timeout

    def _flush(self, conn: _Connection, pipe: _Pipe, now: float) -> None:
        try:
            sent = pipe.dst.send(pipe.pending)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broken(conn, pipe, exc)
            return
        pipe.pending = pipe.pending[sent:]
        if not pipe.pending and not (pipe.queue and pipe.queue[0][0] <= now):
            conn.recorder.delivered(pipe.sender, self.clock())
        self._update_interest(conn)

    def _update_interest(self, conn: _Connection) -> None:
        if conn.done:
            return
        for sock in (conn.client, conn.upstream):
            if sock is conn.upstream and not conn.upstream_ready:
                continue
            mask = 0
            reading = conn.up if sock is conn.client else conn.down
            writing = conn.down if sock is conn.client else conn.up
            if not reading.read_eof:
                mask |= selectors.EVENT_READ
            if writing.pending:
                mask |= selectors.EVENT_WRITE
            try:
                if mask:
                    self._selector.modify(sock, mask, conn)
                else:
                    self._selector.unregister(sock)
            except KeyError:
                if mask:
                    self._selector.register(sock, mask, conn)
            except (ValueError, OSError):
                pass

    def _broken(self, conn: _Connection, pipe: _Pipe, exc: OSError) -> None:
        # A client that closes with bytes unread (a server's close_notify after Terminate) resets the
        # connection instead of closing it: an ending, not a failure. What was counted stands.
        self._finish(conn, None, reset=f"{pipe.sender.value} side: {exc.strerror or exc}")

    def _finish(self, conn: _Connection, error: str | None, reset: str | None = None) -> None:
        if conn.done:
            return
        conn.done = True
        for sock in (conn.client, conn.upstream):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            sock.close()
        trace = conn.recorder.trace(closed=self.clock(), error=error, reset=reset)
        with self._lock:
            self._connections.remove(conn)
            self._finished.append(trace)
            self._lock.notify_all()
