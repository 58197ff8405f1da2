"""What an eavesdropper on a PostgreSQL connection reads: a decoder of both directions' bytes.

The decoder is total over arbitrary bytes: the capture comes from the network, so anything it cannot
understand becomes a ``malformed`` or ``truncated`` event instead of an exception. The two directions are
decoded separately (frontend: client to server; backend: server to client) because that is how a wire tap
records them; the backend needs one fact from the frontend, how many SSLRequest/GSSENCRequest the client
sent, since each gets a one-byte answer (``S``/``G`` switch to encryption, ``N`` refuses).

:class:`FrontendStream` and :class:`BackendStream` decode as bytes arrive (the live wiretap and the man in
the middle); :func:`decode_frontend`, :func:`decode_backend` and :func:`decode_connection` decode a whole
capture with the same machines. Message bodies are read by :mod:`attack.messages`, TLS records by
:mod:`attack.tlsview`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pgbatten.attack.events import Body, Direction, Short, WireEvent, printable
from pgbatten.attack.messages import (
    BACKEND_TYPES,
    FRONTEND_TYPES,
    Decoded,
    decode_backend_message,
    decode_frontend_message,
    decode_startup,
)
from pgbatten.attack.tlsview import TlsStream

MAX_STARTUP_LENGTH = 10_000
"""PostgreSQL refuses longer startup packets; a longer length means we are not looking at one."""

# ------------------------------------------------------------------------------------------ streams


class _Stream:
    """One direction's bytes, decoded as they arrive: a buffer, its stream offset, and the phase."""

    direction: Direction

    def __init__(self, max_message: int | None) -> None:
        self._buf = bytearray()
        self._base = 0
        self._phase = "start"
        self._tls: TlsStream | None = None
        self._skip = 0
        self._max_message = max_message

    @property
    def encrypted(self) -> str | None:
        """``"tls"`` or ``"gss"`` once this direction switched to encryption, else None."""
        return self._phase if self._phase in ("tls", "gss") else None

    def feed(self, data: bytes) -> list[WireEvent]:
        """The events of every unit that ``data`` completes."""
        if self._tls is not None:
            return self._tls.feed(data)
        if self._phase == "dead":
            return []
        if self._phase == "gss":
            return [self._opaque(len(data))] if data else []
        if self._skip:
            passed = min(self._skip, len(data))
            self._skip -= passed
            self._base += passed
            data = data[passed:]
        self._buf += data
        events: list[WireEvent] = []
        while self._buf and self._tls is None and self._phase not in ("dead", "gss"):
            if not self._step(events):
                break
        return events

    def finish(self) -> list[WireEvent]:
        """What is left at the end of the capture: a message cut short, or nothing."""
        if self._tls is not None:
            return self._tls.finish()
        if self._phase == "dead" or not self._buf:
            return []
        rest = len(self._buf)
        event = self._truncated(rest)
        self._buf.clear()
        self._phase = "dead"
        return [event]

    # -- shared steps -------------------------------------------------------------------------------------

    def _step(self, events: list[WireEvent]) -> bool:
        """Decode one unit at the front of the buffer into ``events``; False when more bytes are needed."""
        raise NotImplementedError

    def _truncated(self, rest: int) -> WireEvent:
        raise NotImplementedError

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._base += n

    def _malformed(self, summary: str, fields: tuple[tuple[str, str], ...] = ()) -> WireEvent:
        event = WireEvent(self.direction, "malformed", summary, fields, self._base, len(self._buf))
        self._phase = "dead"
        self._consume(len(self._buf))
        return event

    def _start_tls(self, events: list[WireEvent]) -> None:
        self._tls = TlsStream(self.direction, self._base)
        rest = bytes(self._buf)
        self._buf.clear()
        events += self._tls.feed(rest)

    def _opaque(self, n: int) -> WireEvent:
        event = WireEvent(self.direction, "GSSWrapped", f"{n} GSSAPI-encrypted bytes", (), self._base, n)
        self._base += n
        return event

    def _start_gss(self, events: list[WireEvent]) -> None:
        self._phase = "gss"
        if self._buf:
            events.append(self._opaque(len(self._buf)))
            self._buf.clear()

    def _typed_step(
        self, events: list[WireEvent], decode: Callable[[str, bytes], Decoded], names: dict[str, str]
    ) -> bool:
        buf = self._buf
        if len(buf) < 5:
            return False
        mtype = chr(buf[0])
        (length,) = struct.unpack("!i", buf[1:5])
        if length < 4:
            events.append(self._malformed(f"message {mtype!r} with impossible length {length}"))
            return True
        if self._max_message is not None and length - 4 > self._max_message:
            # Too big to hold for decoding: report its type and size, pass its bytes through.
            events.append(
                WireEvent(
                    self.direction,
                    names.get(mtype, f"message {mtype!r}"),
                    f"{printable(mtype)} message of {length - 4} bytes, too large to decode",
                    (("type", printable(mtype)), ("bytes", str(length - 4))),
                    self._base,
                    1 + length,
                )
            )
            taken = min(len(buf), 1 + length)
            self._skip = 1 + length - taken
            self._consume(taken)
            return True
        if len(buf) < 1 + length:
            return False
        body = bytes(buf[5 : 1 + length])
        try:
            kind, summary, fields = decode(mtype, body)
        except Short:
            kind, summary, fields = "malformed", f"{printable(mtype)} message with a malformed body", []
        events.append(WireEvent(self.direction, kind, summary, tuple(fields), self._base, 1 + length))
        self._consume(1 + length)
        return True

    def _typed_truncated(self, rest: int) -> WireEvent:
        if rest < 5:
            return WireEvent(
                self.direction, "truncated", f"{rest} bytes of a message header", (), self._base, rest
            )
        mtype = chr(self._buf[0])
        (length,) = struct.unpack("!i", self._buf[1:5])
        return WireEvent(
            self.direction,
            "truncated",
            f"{printable(mtype)} message: {rest - 5} of {length - 4} body bytes captured",
            (("type", printable(mtype)),),
            self._base,
            rest,
        )


class FrontendStream(_Stream):
    """What a client sends: untyped requests and startup, then typed messages, or TLS records.

    The frontend alone tells whether TLS followed an SSLRequest: a TLS record starts with byte 22, a
    startup packet's length with byte 0. ``requests`` counts the SSLRequest/GSSENCRequest seen so far.
    """

    direction = Direction.FRONTEND

    def __init__(self, *, max_message: int | None = None) -> None:
        super().__init__(max_message)
        self.requests = 0
        self._after_gssenc = False

    def _step(self, events: list[WireEvent]) -> bool:
        if self._phase == "typed":
            return self._typed_step(events, decode_frontend_message, FRONTEND_TYPES)
        buf = self._buf
        if self._after_gssenc:
            self._after_gssenc = False
            if buf[0] != 0:  # accepted: GSSAPI-wrapped tokens from here on, which we do not unwrap
                self._start_gss(events)
                return True
        if buf[0] == 22:  # TLS after SSLRequest, or direct TLS (PostgreSQL 17+ sslnegotiation=direct)
            self._start_tls(events)
            return True
        if len(buf) < 8:
            return False
        length, code = struct.unpack("!ii", buf[:8])
        if not 8 <= length <= MAX_STARTUP_LENGTH:
            events.append(self._malformed(f"startup packet with impossible length {length}"))
            return True
        if len(buf) < length:
            return False
        try:
            kind, summary, fields = decode_startup(code, Body(bytes(buf[8:length])))
        except Short:
            kind, summary, fields = "malformed", "startup packet with a malformed body", []
        events.append(WireEvent(Direction.FRONTEND, kind, summary, tuple(fields), self._base, length))
        self._consume(length)
        if kind in ("SSLRequest", "GSSENCRequest"):
            self.requests += 1
        self._after_gssenc = kind == "GSSENCRequest"
        if kind in ("StartupMessage", "CancelRequest"):
            self._phase = "typed"
        return True

    def _truncated(self, rest: int) -> WireEvent:
        if self._phase == "typed":
            return self._typed_truncated(rest)
        if rest < 8:
            return WireEvent(
                Direction.FRONTEND, "truncated", f"{rest} bytes of a startup packet", (), self._base, rest
            )
        (length,) = struct.unpack("!i", self._buf[:4])
        return WireEvent(
            Direction.FRONTEND,
            "truncated",
            f"startup packet: {rest - 8} of {length - 8} body bytes captured",
            (),
            self._base,
            rest,
        )


_ANSWERS = {"S": "yes, TLS", "G": "yes, GSSAPI", "N": "no, go on unencrypted"}


class BackendStream(_Stream):
    """What a server sends. ``requests`` says how many SSLRequest/GSSENCRequest the client has sent so far
    (a number for a finished capture, or the live :class:`FrontendStream`'s count)."""

    direction = Direction.BACKEND

    def __init__(self, requests: int | Callable[[], int] = 0, *, max_message: int | None = None) -> None:
        super().__init__(max_message)
        self._requests = requests
        self.answered = 0

    def _owed(self) -> int:
        asked = self._requests() if callable(self._requests) else self._requests
        return max(asked, 0) - self.answered

    def _step(self, events: list[WireEvent]) -> bool:
        if self._phase == "typed":
            return self._typed_step(events, decode_backend_message, BACKEND_TYPES)
        buf = self._buf
        if self._owed() <= 0:
            if self.answered == 0 and buf[0] == 0x16:
                self._start_tls(events)  # direct TLS: the server answers a ClientHello
            else:
                self._phase = "typed"
            return True
        answer = chr(buf[0])
        if answer == "E":
            self._phase = "typed"  # a server too old for SSLRequest answers with an ErrorResponse
            return True
        meaning = _ANSWERS.get(answer)
        if meaning is None:
            events.append(
                WireEvent(
                    Direction.BACKEND,
                    "malformed",
                    f"unexpected answer byte {printable(answer)!r}",
                    (("answer", printable(answer)),),
                    self._base,
                    1,
                )
            )
            self._consume(1)
            self._phase = "dead"
            return True
        events.append(
            WireEvent(
                Direction.BACKEND,
                "SSLAnswer",
                f"{answer!r}: {meaning}",
                (("answer", answer),),
                self._base,
                1,
            )
        )
        self._consume(1)
        self.answered += 1
        if answer == "S":
            self._start_tls(events)
        elif answer == "G":
            self._start_gss(events)
        return True

    def _truncated(self, rest: int) -> WireEvent:
        return self._typed_truncated(rest)


# -------------------------------------------------------------------------------------- whole captures


def decode_frontend(data: bytes) -> list[WireEvent]:
    """Decode what a client sent."""
    stream = FrontendStream()
    return stream.feed(data) + stream.finish()


def decode_backend(data: bytes, *, requests: int = 0) -> list[WireEvent]:
    """Decode what a server sent. ``requests`` is how many SSLRequest/GSSENCRequest the client sent first:
    each gets a one-byte answer (``S``/``G`` accept and switch to encryption, ``N`` refuses)."""
    stream = BackendStream(requests)
    return stream.feed(data) + stream.finish()


@dataclass(frozen=True)
class Conversation:
    """Both directions of one connection, decoded."""

    frontend: tuple[WireEvent, ...]
    backend: tuple[WireEvent, ...]

    @property
    def events(self) -> tuple[WireEvent, ...]:
        return self.frontend + self.backend

    def of_kind(self, kind: str) -> list[WireEvent]:
        return [e for e in self.events if e.kind == kind]


def decode_connection(client_bytes: bytes, server_bytes: bytes) -> Conversation:
    """Decode a connection's two recorded directions, answering each client request from the server side."""
    frontend = decode_frontend(client_bytes)
    requests = sum(1 for e in frontend if e.kind in ("SSLRequest", "GSSENCRequest"))
    return Conversation(tuple(frontend), tuple(decode_backend(server_bytes, requests=requests)))


class ConnectionDecoder:
    """Both directions of one live connection, decoded as the relay forwards each chunk."""

    def __init__(self, *, max_message: int | None = 1 << 20) -> None:
        self.frontend = FrontendStream(max_message=max_message)
        self.backend = BackendStream(lambda: self.frontend.requests, max_message=max_message)

    def feed(self, direction: Direction, data: bytes) -> list[WireEvent]:
        stream: _Stream = self.frontend if direction == Direction.FRONTEND else self.backend
        return stream.feed(data)

    def finish(self) -> list[WireEvent]:
        return self.frontend.finish() + self.backend.finish()


def interleave(
    events: Iterable[WireEvent], transcript: Iterable[tuple[Direction, int, int]]
) -> list[WireEvent]:
    """Order events of both directions as they crossed the wire, from the relay's ``(direction, start, end)``
    record of each chunk it forwarded."""
    order: dict[tuple[Direction, int], int] = {}
    spans = list(transcript)

    def rank(event: WireEvent) -> int:
        key = (event.direction, event.offset)
        if key not in order:
            order[key] = next(
                (
                    i
                    for i, (d, start, end) in enumerate(spans)
                    if d == event.direction and start <= event.offset < end
                ),
                len(spans),
            )
        return order[key]

    return sorted(events, key=lambda e: (rank(e), e.direction == Direction.BACKEND, e.offset))
