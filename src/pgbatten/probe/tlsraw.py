"""Raw TLS bytes for enumeration: read the server's first flight. No I/O.

Python's :mod:`ssl` cannot choose TLS 1.3 suites nor offer TLS 1.0/1.1 against today's OpenSSL, and a full
handshake per probe is wasted work: the server's first answer (ServerHello, HelloRetryRequest or an
alert) already says which version, suite and group it picked. So the scanner writes the ClientHello
itself (:mod:`probe.client_hello`) and stops reading once that answer, plus for TLS <= 1.2 the cleartext
Certificate and ServerKeyExchange of the same flight, is in hand.

Everything the server sends is untrusted. :func:`parse_server_response` either returns a
:class:`ServerAnswer` (possibly ``kind == INCOMPLETE``: keep reading) or raises :class:`TlsDecodeError`;
it never raises anything else, whatever the bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from pgbatten.errors import ProbeError
from pgbatten.probe.cipher_suites import CIPHER_SUITES


class TlsDecodeError(ProbeError):
    """The peer's bytes are not a TLS answer we can understand.

    Raised by the pure parser, which does not know the peer; :meth:`at` re-targets it for the report.
    """

    def __init__(self, reason: str, host: str = "", port: int = 0) -> None:
        super().__init__(host, port, reason)
        if not host:
            self.message = f"malformed TLS answer: {reason}"

    def at(self, host: str, port: int) -> ProbeError:
        """The same problem as a :class:`ProbeError` naming ``host:port``."""
        return ProbeError(host, port, f"malformed TLS answer: {self.reason}")


ALERT_DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        0: "close_notify",
        10: "unexpected_message",
        20: "bad_record_mac",
        21: "decryption_failed",
        22: "record_overflow",
        30: "decompression_failure",
        40: "handshake_failure",
        41: "no_certificate",
        42: "bad_certificate",
        43: "unsupported_certificate",
        44: "certificate_revoked",
        45: "certificate_expired",
        46: "certificate_unknown",
        47: "illegal_parameter",
        48: "unknown_ca",
        49: "access_denied",
        50: "decode_error",
        51: "decrypt_error",
        60: "export_restriction",
        70: "protocol_version",
        71: "insufficient_security",
        80: "internal_error",
        86: "inappropriate_fallback",
        90: "user_canceled",
        100: "no_renegotiation",
        109: "missing_extension",
        110: "unsupported_extension",
        111: "certificate_unobtainable",
        112: "unrecognized_name",
        113: "bad_certificate_status_response",
        114: "bad_certificate_hash_value",
        115: "unknown_psk_identity",
        116: "certificate_required",
        120: "no_application_protocol",
    }
)

HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
"""RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest."""

# Record content types, handshake message types and extension numbers used here.
CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE, HS_SKE, HS_CERT_REQ, HS_DONE = 1, 2, 11, 12, 13, 14
EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIGALGS, EXT_ALPN = 0, 10, 11, 13, 16
EXT_SUPPORTED_VERSIONS, EXT_PSK_MODES, EXT_KEY_SHARE, EXT_RENEGOTIATION = 43, 45, 51, 0xFF01
SCSV_RENEGOTIATION = 0x00FF

_MAX_RECORD = 2**14 + 2048
"""RFC 5246 6.2.3: the largest ciphertext record; anything longer is not TLS."""
_MAX_HANDSHAKE = 2**18
"""A first flight (ServerHello + chain + ServerKeyExchange) is far below this; beyond it we stop reading."""
_MAX_FLIGHT = _MAX_HANDSHAKE + 2**14
"""Bytes of whole records, headers and change-cipher-spec included, before the answer must be complete."""


# --------------------------------------------------------------------------------------------- reading


class Reader:
    """Bounds-checked cursor over untrusted bytes: every short read becomes a TlsDecodeError naming what was
    being read."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, item: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TlsDecodeError(f"{self.what} truncated in {item}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, item: str) -> int:
        return self.take(1, item)[0]

    def u16(self, item: str) -> int:
        return int.from_bytes(self.take(2, item), "big")

    def u24(self, item: str) -> int:
        return int.from_bytes(self.take(3, item), "big")

    def vec8(self, item: str) -> bytes:
        return self.take(self.u8(item), item)

    def vec16(self, item: str) -> bytes:
        return self.take(self.u16(item), item)

    def vec24(self, item: str) -> bytes:
        return self.take(self.u24(item), item)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def extensions(self) -> dict[int, bytes]:
        """A trailing extensions block (absent = none), duplicates rejected as RFC 8446 4.2 requires."""
        found: dict[int, bytes] = {}
        if self.left == 0:
            return found
        block = Reader(self.vec16("extensions"), self.what)
        while block.left:
            kind = block.u16("extension type")
            if kind in found:
                raise TlsDecodeError(f"{self.what} repeats extension {kind}")
            found[kind] = block.vec16(f"extension {kind}")
        if self.left:
            raise TlsDecodeError(f"{self.left} stray bytes after {self.what}")
        return found


# --------------------------------------------------------------------------------------------- server answer


class AnswerKind(StrEnum):
    """What the server's first flight turned out to be."""

    SERVER_HELLO = "server_hello"
    HELLO_RETRY_REQUEST = "hello_retry_request"
    ALERT = "alert"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class ServerAnswer:
    """What the server said in its first flight, as far as the bytes so far go.

    ``complete`` means nothing more is worth reading: TLS 1.3 ServerHello/HRR (the rest is encrypted),
    TLS <= 1.2 ServerHelloDone, or an alert. ``kind == INCOMPLETE`` means no decision yet.
    """

    kind: AnswerKind
    complete: bool
    version: int | None = None
    """Negotiated version: supported_versions when present, else the ServerHello's legacy version."""
    cipher_suite: int | None = None
    group: int | None = None
    """TLS 1.3: key_share group (ServerHello) or selected_group (HRR); TLS <= 1.2: ECDHE named curve."""
    dh_prime_bits: int | None = None
    """TLS <= 1.2 DHE: size of the server's prime."""
    certificates: tuple[bytes, ...] = ()
    """TLS <= 1.2 Certificate message: the DER chain, leaf first."""
    alert_level: int | None = None
    alert_description: int | None = None
    extensions: tuple[int, ...] = ()
    """Extension types in the ServerHello, in wire order."""
    alpn: bytes | None = None
    session_id: bytes = b""
    consumed: int = 0
    """Bytes of input that formed complete records."""
    notes: tuple[str, ...] = field(default=())

    @property
    def alert_name(self) -> str | None:
        """IANA name of the alert description, ``alert_NN`` for unknown ones, None without an alert."""
        if self.alert_description is None:
            return None
        return ALERT_DESCRIPTIONS.get(self.alert_description, f"alert_{self.alert_description}")


@dataclass
class _Flight:
    kind: AnswerKind = AnswerKind.INCOMPLETE
    complete: bool = False
    version: int | None = None
    suite: int | None = None
    group: int | None = None
    dh_bits: int | None = None
    certificates: tuple[bytes, ...] = ()
    alert: tuple[int, int] | None = None
    extensions: tuple[int, ...] = ()
    alpn: bytes | None = None
    session_id: bytes = b""
    notes: list[str] = field(default_factory=list)

    def answer(self, consumed: int) -> ServerAnswer:
        return ServerAnswer(
            kind=self.kind,
            complete=self.complete,
            version=self.version,
            cipher_suite=self.suite,
            group=self.group,
            dh_prime_bits=self.dh_bits,
            certificates=self.certificates,
            alert_level=self.alert[0] if self.alert else None,
            alert_description=self.alert[1] if self.alert else None,
            extensions=self.extensions,
            alpn=self.alpn,
            session_id=self.session_id,
            consumed=consumed,
            notes=tuple(self.notes),
        )


def _describe_non_tls(head: bytes) -> str:
    if head[:1] == b"E":
        return "the peer sent a PostgreSQL ErrorResponse instead of TLS"
    if head[:4] in (b"HTTP", b"SSH-"):
        return f"the peer speaks {head[:4].decode()}, not TLS"
    return f"not a TLS record (starts {head.hex()})"


def parse_server_response(data: bytes) -> ServerAnswer:
    """Interpret the bytes a server sent in answer to our ClientHello.

    Returns ``kind == INCOMPLETE`` (and ``complete == False``) when more bytes are needed to decide, and a
    ``SERVER_HELLO`` with ``complete == False`` while a TLS <= 1.2 flight is still arriving. Raises
    :class:`TlsDecodeError` for bytes that are not a well-formed TLS answer.
    """
    flight = _Flight()
    pos = 0
    handshake = bytearray()
    while not flight.complete:
        if len(data) - pos < 5:
            if pos == 0 and data and data[0] not in (CT_ALERT, CT_HANDSHAKE):
                raise TlsDecodeError(_describe_non_tls(data[:8]))
            break
        ctype, major, _minor, length = data[pos], data[pos + 1], data[pos + 2], be16(data, pos + 3)
        if ctype not in (CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA) or major != 3:
            if pos == 0:
                raise TlsDecodeError(_describe_non_tls(data[:8]))
            raise TlsDecodeError(f"bad record header {data[pos : pos + 5].hex()} at offset {pos}")
        if length > _MAX_RECORD or (length == 0 and ctype != CT_APPDATA):
            raise TlsDecodeError(f"record length {length} is not valid TLS")
        if len(data) - pos - 5 < length:
            break
        fragment = data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if pos > _MAX_FLIGHT:
            # Records that add nothing (change-cipher-spec, HelloRequest) would otherwise never end it.
            raise TlsDecodeError(f"first flight larger than {_MAX_FLIGHT} bytes")
        if ctype == CT_ALERT:
            if len(fragment) != 2:
                raise TlsDecodeError(f"alert record of {len(fragment)} bytes (expected 2)")
            flight.alert = (fragment[0], fragment[1])
            if flight.kind is AnswerKind.INCOMPLETE:
                flight.kind = AnswerKind.ALERT
            else:
                flight.notes.append(f"alert {_alert_text(fragment[1])} after the server's hello")
            flight.complete = True
        elif ctype == CT_HANDSHAKE:
            handshake += fragment
            if len(handshake) > _MAX_HANDSHAKE:
                raise TlsDecodeError(f"first flight larger than {_MAX_HANDSHAKE} bytes")
            _consume_handshake(handshake, flight)
        elif ctype == CT_APPDATA:
            if flight.kind is AnswerKind.INCOMPLETE:
                raise TlsDecodeError("encrypted data before any ServerHello")
            flight.complete = True
        # Change-cipher-spec records (TLS 1.3 middlebox compatibility) carry nothing for us.
    return flight.answer(pos)


def _alert_text(description: int) -> str:
    return ALERT_DESCRIPTIONS.get(description, f"alert_{description}")


def _consume_handshake(buf: bytearray, flight: _Flight) -> None:
    """Handle every complete handshake message at the front of ``buf`` (removing them)."""
    while len(buf) >= 4 and not flight.complete:
        htype = buf[0]
        hlen = int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + hlen:
            return
        body = bytes(buf[4 : 4 + hlen])
        del buf[: 4 + hlen]
        if htype == HS_SERVER_HELLO:
            if flight.kind is not AnswerKind.INCOMPLETE:
                raise TlsDecodeError("second ServerHello in one flight")
            _server_hello(body, flight)
        elif flight.kind is AnswerKind.INCOMPLETE:
            if htype == 0:
                continue  # HelloRequest: legal noise before the ServerHello
            raise TlsDecodeError(f"handshake message type {htype} before the ServerHello")
        elif htype == HS_CERTIFICATE:
            flight.certificates = _certificate_list(body)
        elif htype == HS_SKE:
            _server_key_exchange(body, flight)
        elif htype == HS_DONE:
            flight.complete = True
        elif htype != HS_CERT_REQ:
            flight.notes.append(f"unexpected handshake message type {htype} in the first flight")


def _server_hello(body: bytes, flight: _Flight) -> None:
    r = Reader(body, "ServerHello")
    legacy_version = r.u16("version")
    random = r.take(32, "random")
    flight.session_id = r.vec8("session id")
    flight.suite = r.u16("cipher suite")
    compression = r.u8("compression method")
    exts = r.extensions()
    flight.extensions = tuple(exts)
    hrr = random == HRR_RANDOM
    version = legacy_version
    if EXT_SUPPORTED_VERSIONS in exts:
        sv = Reader(exts[EXT_SUPPORTED_VERSIONS], "supported_versions")
        version = sv.u16("selected version")
    if legacy_version >> 8 != 3 or version >> 8 != 3:
        raise TlsDecodeError(f"ServerHello version 0x{version:04x} is not SSL 3 / TLS")
    if compression != 0:
        flight.notes.append(f"server chose TLS compression method {compression} (CRIME)")
    flight.version = version
    if EXT_KEY_SHARE in exts:
        ks = Reader(exts[EXT_KEY_SHARE], "key_share")
        flight.group = ks.u16("group")
        if not hrr:
            ks.vec16("key exchange")
    if EXT_ALPN in exts:
        names = Reader(Reader(exts[EXT_ALPN], "ALPN").vec16("protocol list"), "ALPN")
        flight.alpn = names.vec8("protocol")
    flight.kind = AnswerKind.HELLO_RETRY_REQUEST if hrr else AnswerKind.SERVER_HELLO
    # From TLS 1.3 on everything after the ServerHello is encrypted; an HRR ends the flight by definition.
    flight.complete = hrr or version >= 0x0304


def parse_certificate_message(body: bytes) -> tuple[bytes, ...]:
    """The DER certificates of a TLS <= 1.2 Certificate handshake message body (the server's or, under
    TLS 1.2, a client's), leaf first. Raises TlsDecodeError."""
    return _certificate_list(body)


def _certificate_list(body: bytes) -> tuple[bytes, ...]:
    r = Reader(body, "Certificate")
    chain = Reader(r.vec24("certificate list"), "Certificate")
    certs: list[bytes] = []
    while chain.left:
        certs.append(chain.vec24("certificate"))
    return tuple(certs)


def _server_key_exchange(body: bytes, flight: _Flight) -> None:
    suite = CIPHER_SUITES.get(flight.suite) if flight.suite is not None else None
    if suite is None:
        return
    r = Reader(body, "ServerKeyExchange")
    if suite.kex == "ECDHE":
        curve_type = r.u8("curve type")
        if curve_type == 3:  # named_curve; explicit curves (1, 2) have no group number
            flight.group = r.u16("named curve")
        else:
            flight.notes.append(f"server used explicit curve parameters (type {curve_type})")
    elif suite.kex == "DHE":
        prime = r.vec16("DH prime").lstrip(b"\x00")
        flight.dh_bits = len(prime) * 8 - (8 - prime[0].bit_length()) if prime else 0


def be16(data: bytes, at: int) -> int:
    """The big-endian 16-bit value at ``at``."""
    return (data[at] << 8) | data[at + 1]
