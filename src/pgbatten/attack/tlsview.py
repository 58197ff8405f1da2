"""What TLS leaves readable on the wire: record types and sizes, and the handshake sent in the clear.

The records' framing is read here; what the cleartext handshake means is asked of the probe's own parsers
(:func:`client_hello.parse_client_hello`, :func:`tlsraw.parse_server_response`), so the eavesdropper and the
scanner read a ClientHello or a ServerHello the same way. What stays visible: the ClientHello's server
name (SNI) and ALPN offer, the ServerHello's version, suite and ALPN choice, under TLS 1.2 the server's
certificate chain (and a client certificate), alerts sent before encryption starts, and every record's
size. Everything after a direction's change_cipher_spec, and every application_data record, is opaque.

:class:`TlsStream` decodes one direction incrementally; it never raises on bad bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cryptography import x509

from pgbatten.attack.events import Direction, WireEvent, printable
from pgbatten.certfacts import CertificateInfo
from pgbatten.probe import tlsraw
from pgbatten.probe.cipher_suites import suite_name
from pgbatten.probe.client_hello import parse_client_hello
from pgbatten.probe.versions import version_display

TLS_CONTENT_TYPES = {
    20: "change_cipher_spec",
    21: "alert",
    22: "handshake",
    23: "application_data",
    24: "heartbeat",
}
TLS_HANDSHAKE_TYPES = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
}
_CCS, _ALERT, _HANDSHAKE = 20, 21, 22
_FLIGHT_LIMIT = 1 << 18
"""Cleartext server handshake kept for the probe's parser; a real first flight is far smaller."""


def _handshake_messages(fragment: bytes) -> Iterator[tuple[int, bytes]]:
    """The complete handshake messages (type, body) a record's fragment carries."""
    pos = 0
    while pos + 4 <= len(fragment):
        length = int.from_bytes(fragment[pos + 1 : pos + 4], "big")
        if pos + 4 + length > len(fragment):
            return
        yield fragment[pos], fragment[pos + 4 : pos + 4 + length]
        pos += 4 + length


def certificate_fields(prefix: str, ders: tuple[bytes, ...]) -> list[tuple[str, str]]:
    """What a certificate chain sent in the clear tells the eavesdropper, as event fields."""
    if not ders:
        return []
    try:
        info = CertificateInfo.from_certificate(x509.load_der_x509_certificate(ders[0]))
    except ValueError:
        return [(prefix, "(unparseable)")]
    return [
        (prefix, printable(info.subject or "(empty subject)")),
        (f"{prefix}_issuer", printable(info.issuer)),
        (f"{prefix}_sans", printable(", ".join(info.sans))),
        (f"{prefix}_not_after", info.not_after.strftime("%Y-%m-%d %H:%M UTC")),
        (f"{prefix}_sha256", info.sha256),
        (f"{prefix}_chain_length", str(len(ders))),
    ]


class TlsStream:
    """Decodes one direction's TLS records as they arrive.

    ``offset`` is where the TLS bytes start in the direction's stream (after an SSLRequest and its
    answer). :meth:`feed` returns the events of every record completed so far; :meth:`finish` reports a
    record cut short at the end of the capture.
    """

    def __init__(self, direction: Direction, offset: int = 0) -> None:
        self.direction = direction
        self._buf = bytearray()
        self._base = offset  # stream offset of _buf[0]
        self._dead = False
        self._encrypted = False  # this direction sent change_cipher_spec: its handshake is opaque now
        self._flight: bytearray | None = bytearray() if direction == Direction.BACKEND else None
        self._hello_seen = False  # the current flight's ServerHello is reported
        self._chain_seen = False  # and its certificate chain

    def feed(self, data: bytes) -> list[WireEvent]:
        if self._dead:
            return []
        self._buf += data
        events: list[WireEvent] = []
        while len(self._buf) >= 5:
            ctype, version, length = struct.unpack("!BHH", self._buf[:5])
            if ctype not in TLS_CONTENT_TYPES or version >> 8 != 3:
                events.append(
                    WireEvent(
                        self.direction,
                        "malformed",
                        f"not a TLS record ({len(self._buf)} bytes follow)",
                        (("bytes", str(len(self._buf))),),
                        self._base,
                        len(self._buf),
                    )
                )
                self._dead = True
                self._buf.clear()
                break
            if len(self._buf) < 5 + length:
                break
            record = bytes(self._buf[: 5 + length])
            del self._buf[: 5 + length]
            events.append(self._record(record, self._base))
            self._base += len(record)
        return events

    def finish(self) -> list[WireEvent]:
        """The event for whatever partial record is left at the end of the capture."""
        if self._dead or not self._buf:
            return []
        data = bytes(self._buf)
        self._buf.clear()
        self._dead = True
        if len(data) < 5:
            return [
                WireEvent(
                    self.direction,
                    "truncated",
                    f"{len(data)} bytes of a TLS record header",
                    (),
                    self._base,
                    len(data),
                )
            ]
        # Whole records were decoded as they came: what is left is one cut short.
        event = self._record(data, self._base)
        captured = len(data) - 5
        return [
            WireEvent(
                event.direction,
                event.kind,
                f"{event.summary} (only {captured} captured)",
                (*event.fields, ("captured", str(captured))),
                event.offset,
                event.size,
            )
        ]

    def _record(self, record: bytes, offset: int) -> WireEvent:
        ctype, version, length = struct.unpack("!BHH", record[:5])
        fragment = record[5:]
        name = TLS_CONTENT_TYPES[ctype]
        fields = [("content_type", name), ("version", version_display(version)), ("length", str(length))]
        summary = f"TLS {name}, {length} bytes"
        if ctype == _CCS:
            self._encrypted = True
        elif ctype == _ALERT and not self._encrypted and len(fragment) == 2:
            alert = tlsraw.ALERT_DESCRIPTIONS.get(fragment[1], f"alert_{fragment[1]}")
            level = "fatal" if fragment[0] == 2 else "warning"
            fields += [("alert", alert), ("alert_level", level)]
            summary = f"TLS alert ({level} {alert}), {length} bytes"
        elif ctype == _HANDSHAKE and fragment and not self._encrypted:
            summary = self._handshake(record, fragment, fields, name, length)
        return WireEvent(self.direction, "TLSRecord", summary, tuple(fields), offset, len(record))

    def _handshake(
        self, record: bytes, fragment: bytes, fields: list[tuple[str, str]], name: str, length: int
    ) -> str:
        hs = TLS_HANDSHAKE_TYPES.get(fragment[0])
        summary = f"TLS {name}, {length} bytes"
        if hs is not None:
            fields.append(("handshake", hs))
            summary = f"TLS {name} ({hs}), {length} bytes"
        if self.direction == Direction.FRONTEND:
            return self._client_handshake(record, fragment, fields, summary)
        return self._server_handshake(record, fields, name, length, summary)

    def _client_handshake(
        self, record: bytes, fragment: bytes, fields: list[tuple[str, str]], summary: str
    ) -> str:
        if fragment[0] == 1:
            try:
                hello = parse_client_hello(record)
            except tlsraw.TlsDecodeError:
                return summary
            if hello.server_name is not None:
                sni = printable(hello.server_name)
                fields.append(("server_name", sni))
                summary += f", server name {sni!r}"
            if hello.alpn:
                fields.append(
                    ("alpn", printable(", ".join(p.decode("ascii", "replace") for p in hello.alpn)))
                )
            fields.append(("offered", version_display(hello.max_version)))
            return summary
        for htype, body in _handshake_messages(fragment):
            if htype == 11:  # a client certificate, in the clear before TLS 1.3
                try:
                    chain = tlsraw.parse_certificate_message(body)
                except tlsraw.TlsDecodeError:
                    continue
                fields += certificate_fields("client_certificate", chain)
        return summary

    def _server_handshake(
        self, record: bytes, fields: list[tuple[str, str]], name: str, length: int, summary: str
    ) -> str:
        if self._flight is None:
            return summary
        self._flight += record
        try:
            answer = tlsraw.parse_server_response(bytes(self._flight))
        except tlsraw.TlsDecodeError:
            self._flight = None  # not a first flight the probe's parser understands: names only from now on
            return summary
        chose = answer.kind in (tlsraw.AnswerKind.SERVER_HELLO, tlsraw.AnswerKind.HELLO_RETRY_REQUEST)
        if chose and answer.version is not None and not self._hello_seen:
            self._hello_seen = True
            retry = answer.kind == tlsraw.AnswerKind.HELLO_RETRY_REQUEST
            hs = "HelloRetryRequest" if retry else "ServerHello"
            chosen = version_display(answer.version)
            fields[:] = [f for f in fields if f[0] != "handshake"]
            fields.append(("handshake", hs))
            fields.append(("negotiated", chosen))
            if answer.cipher_suite is not None:
                fields.append(("cipher", suite_name(answer.cipher_suite)))
            if answer.alpn is not None:
                fields.append(("alpn_selected", printable(answer.alpn.decode("ascii", "replace"))))
            summary = f"TLS {name} ({hs}, {chosen}), {length} bytes"
        if answer.certificates and not self._chain_seen:
            self._chain_seen = True
            fields += certificate_fields("certificate", answer.certificates)
        if answer.complete or len(self._flight) > _FLIGHT_LIMIT:
            # A HelloRetryRequest or a finished first flight: any later hello starts a new one.
            self._flight = bytearray()
            self._hello_seen = self._chain_seen = False
        return summary


def decode_tls(data: bytes, direction: Direction, offset: int = 0) -> list[WireEvent]:
    """TLS records: content type, legacy version and length of each, and what the clear handshake says."""
    stream = TlsStream(direction, offset)
    return stream.feed(data) + stream.finish()
