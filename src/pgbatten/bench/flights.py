"""Counting the round trips of one connection from the bytes a relay saw. Pure: no sockets, no clock.

A relay between a client and a server sees chunks of bytes arriving from either side. Consecutive chunks
from the same side form a **flight**; a **round trip** is the client waiting for the server: a client flight
followed by a server flight. Counted that way, the number does not depend on how fast the machine is, only on
the protocol: PostgreSQL and TLS are strictly request/response up to the first row (no side speaks twice
while the other waits), so every change of direction from client to server is one round trip.

The count stops at a moment the caller names (``until``): the instant the client had its first row, so
that what follows (Terminate, close_notify) is not counted. The TCP handshake is one more round trip that
no relay sees in the bytes; :attr:`ConnectionTrace.round_trips` includes it, so that the figure is what a
client on a link with round-trip time R waits: ``round_trips * R`` plus computation.

The bytes at the start of each flight are kept (a few kilobytes) to name what the client waited for:
SSLRequest, a TLS ClientHello (and the server's HelloRetryRequest), the StartupMessage, a query.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pgbatten.probe.cipher_suites import group_name
from pgbatten.probe.client_hello import parse_client_hello
from pgbatten.probe.tlsraw import AnswerKind, TlsDecodeError, parse_server_response
from pgbatten.probe.wire import GSSENC_REQUEST_CODE, PROTOCOL_VERSION_3_0, SSL_REQUEST_CODE

HEAD_BYTES = 4096
"""Bytes kept from the start of each flight: a ClientHello with a post-quantum key share is ~1.6 kB."""

TCP_HANDSHAKE = "TCP handshake"

_TLS_HANDSHAKE = 0x16
_TLS_CCS = 0x14
_TLS_APPDATA = 0x17
_TLS_ALERT = 0x15
_CANCEL_REQUEST_CODE = 80877102


class Sender(StrEnum):
    """Which side sent a flight."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class Flight:
    """Bytes one side sent before the other side sent anything."""

    sender: Sender
    started: float
    """When its first byte reached the relay (seconds on the caller's monotonic clock)."""
    ended: float
    """When its last byte reached the relay."""
    delivered: float | None
    """When the relay had passed its last byte on to the other side (after any delay); None if never."""
    nbytes: int
    head: bytes = field(repr=False)
    """The first :data:`HEAD_BYTES` bytes."""


@dataclass
class FlightRecorder:
    """Builds the flights of one connection from the relay's events; :meth:`trace` freezes the result."""

    accepted: float
    _flights: list[Flight] = field(default_factory=list)
    _sent_by_client: int = 0
    _sent_by_server: int = 0

    def received(self, sender: Sender, data: bytes, at: float) -> None:
        """``data`` arrived from ``sender`` at time ``at``."""
        if not data:
            return
        if sender is Sender.CLIENT:
            self._sent_by_client += len(data)
        else:
            self._sent_by_server += len(data)
        last = self._flights[-1] if self._flights else None
        if last is not None and last.sender is sender:
            head = last.head if len(last.head) >= HEAD_BYTES else (last.head + data)[:HEAD_BYTES]
            self._flights[-1] = Flight(
                sender=sender,
                started=last.started,
                ended=at,
                delivered=None,
                nbytes=last.nbytes + len(data),
                head=head,
            )
        else:
            self._flights.append(
                Flight(
                    sender=sender,
                    started=at,
                    ended=at,
                    delivered=None,
                    nbytes=len(data),
                    head=data[:HEAD_BYTES],
                )
            )

    def delivered(self, sender: Sender, at: float) -> None:
        """Everything ``sender`` sent so far has been passed on, at time ``at``."""
        for i in range(len(self._flights) - 1, -1, -1):
            flight = self._flights[i]
            if flight.sender is sender:
                if flight.delivered is None or flight.delivered < at:
                    self._flights[i] = Flight(
                        sender=flight.sender,
                        started=flight.started,
                        ended=flight.ended,
                        delivered=at,
                        nbytes=flight.nbytes,
                        head=flight.head,
                    )
                return

    def trace(
        self, *, closed: float | None = None, error: str | None = None, reset: str | None = None
    ) -> ConnectionTrace:
        return ConnectionTrace(
            accepted=self.accepted,
            flights=tuple(self._flights),
            bytes_from_client=self._sent_by_client,
            bytes_from_server=self._sent_by_server,
            closed=closed,
            error=error,
            reset=reset,
        )


@dataclass(frozen=True)
class Step:
    """What the client waited for in one round trip."""

    what: str
    """``TCP handshake``, ``SSLRequest``, ``TLS ClientHello``, ``StartupMessage``, ``encrypted``…"""
    key_shares: tuple[str, ...] = ()
    """A ClientHello's key shares, by group name."""
    retry_for: str | None = None
    """The group a HelloRetryRequest asked for, when the server answered with one."""

    @property
    def label(self) -> str:
        text = self.what
        if self.key_shares:
            text += f" (key share {', '.join(self.key_shares)})"
        if self.retry_for is not None:
            text += f" -> HelloRetryRequest for {self.retry_for}"
        return text

    @property
    def short(self) -> str:
        text = _SHORT.get(self.what, self.what)
        if self.key_shares:
            text += f"[{','.join(self.key_shares)}]"
        if self.retry_for is not None:
            text += f" HRR[{self.retry_for}]"
        return text


_SHORT = {TCP_HANDSHAKE: "TCP", "TLS ClientHello": "ClientHello", "TLS 1.2 key exchange": "KeyExchange"}


@dataclass(frozen=True)
class RoundTrips:
    """The round trips of one connection up to a moment, and what each one waited for."""

    exchanges: tuple[Step, ...]
    """One step per round trip, in order, the TCP handshake first."""
    latency: float | None
    """From the accepted connection to the delivery of the last server flight counted (seconds)."""
    bytes_from_client: int
    bytes_from_server: int

    @property
    def count(self) -> int:
        """Round trips the client waited for, the TCP handshake included."""
        return len(self.exchanges)

    @property
    def steps(self) -> tuple[str, ...]:
        """One label per round trip: ``TCP handshake``, ``SSLRequest``, ``TLS ClientHello (key share …)``…"""
        return tuple(step.label for step in self.exchanges)

    @property
    def hello_retry(self) -> bool:
        """The server answered a ClientHello with a HelloRetryRequest: a round trip spent on the key share."""
        return any(step.retry_for is not None for step in self.exchanges)

    @property
    def summary(self) -> str:
        """The steps on one line, runs of ``encrypted`` folded: ``TCP handshake, SSLRequest, 4 encrypted``."""
        return _fold(step.label for step in self.exchanges)

    @property
    def compact(self) -> str:
        """The same in table width: ``TCP, SSLRequest, ClientHello[x25519] HRR[secp256r1], 4 encrypted``."""
        return _fold(step.short for step in self.exchanges)

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "steps": list(self.steps),
            "hello_retry": self.hello_retry,
            "latency_seconds": self.latency,
            "bytes_from_client": self.bytes_from_client,
            "bytes_from_server": self.bytes_from_server,
        }


def _fold(labels: Iterable[str]) -> str:
    parts: list[str] = []
    run = 0
    for label in (*labels, ""):
        if label == "encrypted":
            run += 1
            continue
        if run:
            parts.append("encrypted" if run == 1 else f"{run} encrypted")
            run = 0
        if label:
            parts.append(label)
    return ", ".join(parts)


@dataclass(frozen=True)
class ConnectionTrace:
    """Everything a relay saw on one connection."""

    accepted: float
    flights: tuple[Flight, ...]
    bytes_from_client: int
    bytes_from_server: int
    closed: float | None = None
    error: str | None = None
    """Why the relay could not carry the connection (the server could not be reached)."""
    reset: str | None = None
    """The connection ended with a reset rather than a close (which side, and the error)."""

    def round_trips(self, until: float | None = None) -> RoundTrips:
        """The round trips whose client flight began before ``until`` (all of them without ``until``)."""
        flights = [f for f in self.flights if until is None or f.started < until]
        steps = [Step(TCP_HANDSHAKE)]
        for i in range(1, len(flights)):
            before, after = flights[i - 1], flights[i]
            if before.sender is Sender.CLIENT and after.sender is Sender.SERVER:
                steps.append(name_exchange(before.head, after.head))
        deliveries = [f.delivered for f in flights if f.sender is Sender.SERVER and f.delivered is not None]
        return RoundTrips(
            exchanges=tuple(steps),
            latency=deliveries[-1] - self.accepted if deliveries else None,
            bytes_from_client=sum(f.nbytes for f in flights if f.sender is Sender.CLIENT),
            bytes_from_server=sum(f.nbytes for f in flights if f.sender is Sender.SERVER),
        )


# ------------------------------------------------------------------------------------------ labelling


def name_exchange(client_head: bytes, server_head: bytes) -> Step:
    """Name a round trip by what the client sent first, and what a TLS server answered to a ClientHello.

    Only bytes before encryption can be named; once TLS is up every flight is ``encrypted``.
    """
    # TLS 1.3 clients in middlebox-compatibility mode start their second flight with a ChangeCipherSpec.
    while client_head[:1] == bytes([_TLS_CCS]) and client_head[1:2] == b"\x03" and len(client_head) > 5 + 1:
        client_head = client_head[5 + int.from_bytes(client_head[3:5], "big") :]
    first = client_head[:1]
    tls_record = client_head[1:2] == b"\x03"
    if first == bytes([_TLS_HANDSHAKE]) and tls_record and len(client_head) > 5:
        if client_head[5] == 1:
            return _client_hello(client_head, server_head)
        return Step("TLS 1.2 key exchange")
    if tls_record and first in (bytes([_TLS_APPDATA]), bytes([_TLS_CCS]), bytes([_TLS_ALERT])):
        return Step("encrypted")
    if len(client_head) >= 8 and first == b"\x00":
        # Untyped messages: Int32 length, Int32 code (a request code or the protocol version).
        length, code = struct.unpack("!II", client_head[:8])
        if length == 8 and code == SSL_REQUEST_CODE:
            return Step("SSLRequest")
        if length == 8 and code == GSSENC_REQUEST_CODE:
            return Step("GSSENCRequest")
        if length == 16 and code == _CANCEL_REQUEST_CODE:
            return Step("CancelRequest")
        if code >> 16 == PROTOCOL_VERSION_3_0 >> 16:
            return Step("StartupMessage")
    return Step(_FRONTEND.get(first.decode("latin-1"), "data"))


def _client_hello(client_head: bytes, server_head: bytes) -> Step:
    shares: tuple[str, ...] = ()
    with contextlib.suppress(TlsDecodeError):
        shares = tuple(group_name(g) for g in parse_client_hello(client_head).key_shares)
    try:
        answer = parse_server_response(server_head)
    except TlsDecodeError:
        return Step("TLS ClientHello", shares)
    if answer.kind is AnswerKind.HELLO_RETRY_REQUEST:
        wanted = group_name(answer.group) if answer.group is not None else "another group"
        return Step("TLS ClientHello", shares, retry_for=wanted)
    return Step("TLS ClientHello", shares)


_FRONTEND = {
    "p": "password/SASL",
    "Q": "Query",
    "P": "Parse",
    "B": "Bind",
    "S": "Sync",
    "X": "Terminate",
    "d": "CopyData",
    "c": "CopyDone",
    "F": "FunctionCall",
}
