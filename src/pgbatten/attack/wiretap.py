"""``pgbatten wiretap``: a passive relay that shows, live, what an eavesdropper on that path reads.

An application pointed at the wiretap's address reaches its real server through it; every byte is
forwarded unchanged and decoded as it passes. The library reports through a :class:`TapSink` (the CLI
prints lines or JSON) and returns one :class:`TappedConnection` per connection when it stops: at the end
of ``duration``, once ``max_bytes`` have been captured, or when the caller's ``stop`` event is set (Ctrl-C).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pgbatten.attack.decode import ConnectionDecoder
from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.leaks import ConnectionSummary, summarize
from pgbatten.attack.relay import Relay, wait_until_stopped
from pgbatten.probe.wire import Target

MAX_KEPT_EVENTS = 10_000
"""Decoded messages kept per connection for its summary."""


class TapSink(Protocol):
    """Where the wiretap reports; called from the relay's threads, one call at a time."""

    def opened(self, conn_id: int, peer: tuple[str, int]) -> None: ...

    def event(self, conn_id: int, event: WireEvent) -> None: ...

    def closed(self, conn_id: int, connection: TappedConnection) -> None: ...


@dataclass
class TappedConnection:
    """One connection the wiretap saw: who, when, its summary once it ended."""

    conn_id: int
    peer: tuple[str, int]
    started: float
    events: list[WireEvent] = field(default_factory=list)
    summary: ConnectionSummary | None = None
    error: str | None = None
    cut_short: bool = False
    """The wiretap stopped decoding it (byte limit reached or the wiretap stopped) before it ended."""

    def to_json(self) -> dict[str, object]:
        return {
            "conn": self.conn_id,
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "error": self.error,
            "cut_short": self.cut_short,
            **(self.summary.to_json() if self.summary is not None else {}),
        }


@dataclass(frozen=True)
class WiretapOptions:
    listen: Target
    upstream: Target
    max_bytes: int | None = None
    """Stop once this many bytes (both directions, all connections) have been captured."""
    duration: float | None = None
    """Stop after this many seconds."""
    connect_timeout: float = 10.0


class Wiretap:
    """The relay's observer: decodes each connection live and tells the sink."""

    def __init__(self, sink: TapSink, *, max_bytes: int | None = None) -> None:
        self.sink = sink
        self.max_bytes = max_bytes
        self.limit_reached = threading.Event()
        self.captured = 0
        self.connections: dict[int, TappedConnection] = {}
        self._decoders: dict[int, ConnectionDecoder] = {}
        self._lock = threading.Lock()

    def opened(self, conn_id: int, peer: tuple[str, int]) -> None:
        with self._lock:
            self.connections[conn_id] = TappedConnection(conn_id, peer, time.time())
            self._decoders[conn_id] = ConnectionDecoder()
            self.sink.opened(conn_id, peer)

    def chunk(self, conn_id: int, direction: Direction, data: bytes) -> None:
        with self._lock:
            tapped = self.connections[conn_id]
            if self.limit_reached.is_set():
                tapped.cut_short = True
                return
            if self.max_bytes is not None and self.captured + len(data) >= self.max_bytes:
                data = data[: self.max_bytes - self.captured]
                self.limit_reached.set()
                tapped.cut_short = True
            self.captured += len(data)
            for event in self._decoders[conn_id].feed(direction, data):
                self._keep(tapped, event)
                self.sink.event(conn_id, event)

    @staticmethod
    def _keep(tapped: TappedConnection, event: WireEvent) -> None:
        # The summary reads the kept events; a connection that runs for hours keeps only its beginning
        # (where the login and the TLS handshake are), and every event still reaches the sink.
        if len(tapped.events) < MAX_KEPT_EVENTS:
            tapped.events.append(event)

    def stop_decoding(self) -> None:
        """Connections still open from here on are cut short: their tails are not decoded."""
        with self._lock:
            self.limit_reached.set()
            for tapped in self.connections.values():
                if tapped.summary is None:
                    tapped.cut_short = True

    def closed(self, conn_id: int, error: str | None) -> None:
        with self._lock:
            tapped = self.connections[conn_id]
            decoder = self._decoders.pop(conn_id)
            if not tapped.cut_short:
                for event in decoder.finish():
                    self._keep(tapped, event)
                    self.sink.event(conn_id, event)
            tapped.error = error
            tapped.summary = summarize(tapped.events)
            self.sink.closed(conn_id, tapped)


def run_wiretap(
    options: WiretapOptions,
    sink: TapSink,
    *,
    stop: threading.Event | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> list[TappedConnection]:
    """Relay and decode until a bound is reached or ``stop`` is set; every connection, in accept order.

    ``on_listening`` gets the bound port (useful with port 0). ``ProbeError`` if the address is taken.
    """
    stop = stop or threading.Event()
    tap = Wiretap(sink, max_bytes=options.max_bytes)
    relay = Relay(
        options.upstream.host,
        options.upstream.port,
        listen_host=options.listen.host,
        listen_port=options.listen.port,
        max_connections=None,
        max_bytes=0,  # the wiretap decodes live; it keeps no copy of the bytes
        idle_timeout=None,  # an application's pooled connections may idle for hours
        connect_timeout=options.connect_timeout,
        observer=tap,
    )
    with relay:
        if on_listening is not None:
            on_listening(relay.port)
        wait_until_stopped(stop, duration=options.duration, also=tap.limit_reached)
        tap.stop_decoding()
    return [tap.connections[k] for k in sorted(tap.connections)]
