"""PostgreSQL frontend/backend protocol bytes for the outside check: pure, no I/O.

Everything a remote server sends is untrusted; the parsers here are total functions. They never raise on
malformed input: what cannot be understood is reported in a ``problem`` field, so the caller can record it
as a finding instead of aborting the scan.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pgbatten.errors import UsageError
from pgbatten.netutil import is_ip_address

DEFAULT_PORT = 5432

SSL_REQUEST_CODE = 80877103
"""1234 in the high 16 bits, 5679 in the low 16: deliberately not a protocol version."""
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_VERSION_3_0 = 3 << 16

SSL_REQUEST = struct.pack("!II", 8, SSL_REQUEST_CODE)
GSSENC_REQUEST = struct.pack("!II", 8, GSSENC_REQUEST_CODE)

MAX_MESSAGE_LENGTH = 64 * 1024
"""Upper bound on any backend message we read before TLS; a real pre-auth message is a few hundred bytes."""

HEADER_LENGTH = 5
"""Type byte plus Int32 length."""

PROBE_USER = "pgbatten_probe"
PROBE_DATABASE = "postgres"

AUTH_METHODS: Mapping[int, str] = {
    0: "ok",
    2: "kerberos-v5",
    3: "cleartext-password",
    5: "md5-password",
    7: "gss",
    8: "gss-continue",
    9: "sspi",
    10: "sasl",
    11: "sasl-continue",
    12: "sasl-final",
}


# --------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A host and TCP port to probe. ``str()`` gives ``host:port`` with IPv6 literals in brackets.

    As in libpq, ``host`` is the name a ``verify-full`` client checks the certificate against and
    ``hostaddr`` (when given) the address it connects to; ``sslrootcert``, ``sslcrl`` and ``sslcrldir``
    are the trust settings that came with the target (a conninfo string or service).

    ``host_name_given`` is False for a connection string with ``hostaddr`` and no ``host``: ``host`` then
    holds the address only to name the target, and libpq has no name to verify (``verify-full`` fails
    with "host name must be specified for a verified SSL connection").
    """

    host: str
    port: int = DEFAULT_PORT
    hostaddr: str | None = None
    sslrootcert: str | None = None
    sslcrl: str | None = None
    sslcrldir: str | None = None
    host_name_given: bool = True

    @property
    def address(self) -> str:
        """Where to connect: ``hostaddr`` when given, else ``host``."""
        return self.hostaddr or self.host

    @property
    def verify_name(self) -> str:
        """The name a ``verify-full`` client compares with the certificate ("" when none was given)."""
        return self.host if self.host_name_given else ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = f"{host}:{self.port}"
        if not self.host_name_given:
            return f"{shown} (hostaddr only)"
        return f"{shown} (hostaddr {self.hostaddr})" if self.hostaddr else shown


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address literal (never sent as SNI, RFC 6066 3)."""
    return is_ip_address(host.strip("[]"))


_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")


def valid_host_name(host: str) -> bool:
    """A DNS name or IPv4 literal as a target may carry (letters, digits, ``_.-``; no empty label)."""
    return bool(_HOSTNAME_RE.match(host)) and ".." not in host


def _parse_port(text: str, original: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise UsageError(f"invalid target {original!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid target {original!r}: port {port} is out of range 1-65535")
    return port


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> Target:
    """Parse ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 literal into a :class:`Target`.

    Raises :class:`UsageError` on anything else.
    """
    original = text
    text = text.strip()
    if not text:
        raise UsageError("invalid target '': empty host")
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise UsageError(f"invalid target {original!r}: missing ']'")
        host = text[1:close]
        rest = text[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"invalid target {original!r}: {host!r} is not an IPv6 address") from None
        if rest == "":
            return Target(host, default_port)
        if not rest.startswith(":"):
            raise UsageError(f"invalid target {original!r}: unexpected text after ']'")
        return Target(host, _parse_port(rest[1:], original))
    if text.count(":") > 1:
        # Unbracketed IPv6 is only unambiguous without a port.
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise UsageError(
                f"invalid target {original!r}: write IPv6 addresses in brackets, e.g. [::1]:5432"
            ) from None
        return Target(text, default_port)
    host, sep, port_text = text.partition(":")
    port = _parse_port(port_text, original) if sep else default_port
    if not valid_host_name(host):
        raise UsageError(f"invalid target {original!r}: {host!r} is not a valid host name")
    return Target(host, port)


# --------------------------------------------------------------------------------------------- frontend


def startup_message(user: str, database: str, extra: Mapping[str, str] | None = None) -> bytes:
    """A protocol 3.0 StartupMessage carrying ``user``, ``database`` and any ``extra`` parameters."""
    params: dict[str, str] = {"user": user, "database": database}
    if extra:
        params.update(extra)
    body = bytearray(struct.pack("!I", PROTOCOL_VERSION_3_0))
    for key, value in params.items():
        if "\0" in key or "\0" in value or not key:
            raise UsageError(f"startup parameter {key!r} must be non-empty and free of NUL bytes")
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + bytes(body)


# --------------------------------------------------------------------------------------------- backend


def message_length_problem(length: int) -> str | None:
    """Why a backend message length (which counts itself) cannot be honoured, or None if it is sane."""
    if length < 4:
        return f"malformed message length {length} (must be at least 4)"
    if length > MAX_MESSAGE_LENGTH:
        return f"oversized message length {length} (limit {MAX_MESSAGE_LENGTH})"
    return None


@dataclass(frozen=True)
class BackendMessage:
    """One backend message: its type byte as a 1-character string, and its body (after the length)."""

    type: str
    body: bytes
    problem: str | None = None


def parse_header(header: bytes) -> tuple[str, int, str | None]:
    """Split a 5-byte message header into (type, body length, problem)."""
    if len(header) < HEADER_LENGTH:
        return ("", 0, f"truncated message header ({len(header)} of {HEADER_LENGTH} bytes)")
    (length,) = struct.unpack("!I", header[1:5])
    problem = message_length_problem(length)
    return (chr(header[0]), max(length - 4, 0) if problem is None else 0, problem)


def parse_message(data: bytes) -> BackendMessage:
    """Parse one complete backend message from ``data``; trailing bytes are reported as a problem."""
    mtype, body_length, problem = parse_header(data[:HEADER_LENGTH])
    if problem is not None:
        return BackendMessage(mtype, b"", problem)
    body = data[HEADER_LENGTH : HEADER_LENGTH + body_length]
    if len(body) < body_length:
        return BackendMessage(mtype, body, f"truncated message ({len(body)} of {body_length} body bytes)")
    trailing = len(data) - HEADER_LENGTH - body_length
    if trailing:
        return BackendMessage(mtype, body, f"{trailing} unexpected bytes after the message")
    return BackendMessage(mtype, body)


@dataclass(frozen=True)
class ErrorFields:
    """The fields of an ErrorResponse (or NoticeResponse) that matter before authentication."""

    severity: str | None = None
    severity_nonlocalized: str | None = None
    code: str | None = None
    message: str | None = None
    detail: str | None = None
    hint: str | None = None
    problem: str | None = None

    def summary(self) -> str:
        """One line: ``FATAL 28000: message``."""
        sev = self.severity_nonlocalized or self.severity or "ERROR"
        return f"{sev} {self.code or '?????'}: {self.message or '(no message)'}"


# ErrorResponse/NoticeResponse field codes we show, by the names the protocol docs give them.
ERROR_FIELD_NAMES = {
    "S": "severity",
    "V": "severity_nonlocalized",
    "C": "code",
    "M": "message",
    "D": "detail",
    "H": "hint",
}


def parse_error_fields(body: bytes) -> ErrorFields:
    """Parse the body of an ErrorResponse: (field type byte, NUL-terminated string)* then a NUL."""
    values: dict[str, str] = {}
    problem: str | None = None
    pos = 0
    while True:
        if pos >= len(body):
            problem = "error fields not terminated"
            break
        ftype = body[pos]
        if ftype == 0:
            if pos + 1 != len(body):
                problem = f"{len(body) - pos - 1} bytes after the error fields terminator"
            break
        end = body.find(b"\0", pos + 1)
        if end == -1:
            problem = "unterminated error field"
            break
        name = ERROR_FIELD_NAMES.get(chr(ftype))
        if name is not None and name not in values:
            values[name] = body[pos + 1 : end].decode("utf-8", errors="replace")
        pos = end + 1
    return ErrorFields(problem=problem, **values)


def parse_error_response(data: bytes) -> ErrorFields:
    """Parse a complete ErrorResponse message (``E``, length, fields)."""
    msg = parse_message(data)
    if msg.type != "E":
        return ErrorFields(problem=f"not an ErrorResponse (type {msg.type!r})")
    fields = parse_error_fields(msg.body)
    if msg.problem is not None:
        return ErrorFields(**{**_as_dict(fields), "problem": msg.problem})
    return fields


def _as_dict(fields: ErrorFields) -> dict[str, str | None]:
    return {
        "severity": fields.severity,
        "severity_nonlocalized": fields.severity_nonlocalized,
        "code": fields.code,
        "message": fields.message,
        "detail": fields.detail,
        "hint": fields.hint,
        "problem": fields.problem,
    }


def printable_preview(data: bytes, limit: int = 40) -> str:
    """A short, safe rendering of unknown bytes for a finding's detail."""
    text = data[:limit].decode("latin-1")
    shown = "".join(ch if 32 <= ord(ch) < 127 else "." for ch in text)
    return shown + ("..." if len(data) > limit else "")


# --------------------------------------------------------------------------------------------- SSLRequest


class SslAnswer(StrEnum):
    """What a server answered to SSLRequest."""

    ACCEPTED = "accepted"  # 'S'
    REFUSED = "refused"  # 'N'
    ERROR = "error"  # 'E': servers that predate SSLRequest, or a refusal with a reason
    CLOSED = "closed"  # connection closed without an answer
    UNEXPECTED = "unexpected"  # not a PostgreSQL answer at all


@dataclass(frozen=True)
class SslResponse:
    """The classified answer to SSLRequest.

    ``extra`` holds bytes that arrived after the single answer byte before we said anything else. After
    ``S`` that is the CVE-2021-23222 pattern: a client that reads them after the handshake would treat
    unencrypted, injectable bytes as if they came over TLS.
    """

    answer: SslAnswer
    extra: bytes = b""
    error: ErrorFields | None = None
    detail: str = ""

    @property
    def bytes_after_answer(self) -> bool:
        """True when the server (or a man in the middle) sent more than the single answer byte."""
        return bool(self.extra) and self.answer in (SslAnswer.ACCEPTED, SslAnswer.REFUSED)


_BANNERS = (b"SSH-",)
"""Greetings of other services whose first byte happens to be a valid SSLRequest answer."""


def classify_ssl_response(data: bytes) -> SslResponse:
    """Classify everything read after sending SSLRequest (the answer byte plus anything buffered)."""
    if not data:
        return SslResponse(SslAnswer.CLOSED, detail="connection closed without answering SSLRequest")
    if data.startswith(_BANNERS):
        # An SSH server greets every client with "SSH-2.0-...": its first byte is not an 'S' answer.
        return SslResponse(
            SslAnswer.UNEXPECTED, detail=f"not a PostgreSQL answer to SSLRequest: {printable_preview(data)!r}"
        )
    first = data[:1]
    extra = data[1:]
    if first == b"S":
        detail = "server accepts TLS"
        if extra:
            detail += f"; {len(extra)} unexpected bytes followed the 'S': {printable_preview(extra)!r}"
        return SslResponse(SslAnswer.ACCEPTED, extra, detail=detail)
    if first == b"N":
        detail = "server does not offer TLS"
        if extra:
            detail += f"; {len(extra)} unexpected bytes followed the 'N'"
        return SslResponse(SslAnswer.REFUSED, extra, detail=detail)
    if first == b"E":
        fields = parse_error_response(data)
        return SslResponse(SslAnswer.ERROR, b"", fields, detail=f"server answered with {fields.summary()}")
    return SslResponse(
        SslAnswer.UNEXPECTED,
        b"",
        detail=f"not a PostgreSQL answer to SSLRequest: {printable_preview(data)!r}",
    )


# --------------------------------------------------------------------------------------------- startup

_INJECTION_REFUSED = "received unencrypted data after ssl request"


def classify_buffered_answer(msg: BackendMessage) -> tuple[bool | None, str]:
    """Did the server process a startup message sent with the SSLRequest, before the TLS handshake?

    ``msg`` is the first message it sent over TLS, with nothing sent over TLS by us: an authentication
    request or a login error means it processed bytes no TLS protected (CVE-2021-23214); its refusal
    (``08P01``, "received unencrypted data after SSL request") means it did not. None: cannot tell.
    """
    if msg.problem is not None:
        return None, f"no verdict: {msg.problem}"
    if msg.type == "R":
        return True, "the server answered the buffered startup message with an authentication request"
    if msg.type == "E":
        fields = parse_error_fields(msg.body)
        if fields.code == "08P01" or _INJECTION_REFUSED in (fields.message or "").lower():
            return False, f"the server refused the buffered bytes: {fields.summary()}"
        if fields.code in ("28000", "28P01", "3D000"):
            return True, f"the server processed the buffered startup message: {fields.summary()}"
        return None, f"the server answered {fields.summary()}"
    return None, f"unexpected message type {msg.type!r} after the handshake"


@dataclass(frozen=True)
class PlaintextVerdict:
    """Whether a server went on with a plaintext login.

    ``accepted`` is None when the answer does not tell (an unexpected message, a non-authentication error).
    """

    accepted: bool | None
    reason: str
    auth_method: str | None = None
    error: ErrorFields | None = None


_REFUSAL_MARKERS = (
    "no encryption",  # PostgreSQL 14+: "no pg_hba.conf entry for host ..., no encryption"
    "ssl off",  # PostgreSQL <= 13 wording of the same line
)
_HBA_REFUSAL_PREFIXES = ("no pg_hba.conf entry", "pg_hba.conf rejects connection")
_HBA_FILE_NAME = "pg_hba.conf"
"""Left untranslated in every language's version of both refusals (lc_messages applies before the login);
no other 28000 error sent before authentication names the file."""


def classify_startup_response(msg: BackendMessage) -> PlaintextVerdict:
    """Classify the first answer to a plaintext StartupMessage.

    An AuthenticationRequest of any kind, or an authentication error other than the pg_hba refusal of an
    unencrypted connection, means the server is processing a plaintext login: plaintext is accepted.
    """
    if msg.problem is not None:
        return PlaintextVerdict(None, f"malformed answer to the startup message: {msg.problem}")
    if msg.type == "R":
        if len(msg.body) < 4:
            return PlaintextVerdict(None, "truncated AuthenticationRequest")
        (code,) = struct.unpack("!I", msg.body[:4])
        method = AUTH_METHODS.get(code, f"unknown-{code}")
        if code == 0:
            reason = "server let an unencrypted login in without any authentication (trust)"
        else:
            reason = f"server asked for {method} authentication over an unencrypted connection"
        return PlaintextVerdict(True, reason, auth_method=method)
    if msg.type == "E":
        fields = parse_error_fields(msg.body)
        text = (fields.message or "").lower()
        if fields.code in ("28000", "28P01"):
            if (
                any(m in text for m in _REFUSAL_MARKERS)
                or text.startswith(_HBA_REFUSAL_PREFIXES)
                or _HBA_FILE_NAME in text
            ):
                return PlaintextVerdict(False, f"pg_hba.conf refused it: {fields.summary()}", error=fields)
            return PlaintextVerdict(True, f"server processed the login: {fields.summary()}", error=fields)
        if fields.code == "3D000":
            # The database check comes after authentication succeeded.
            return PlaintextVerdict(True, f"authentication passed: {fields.summary()}", error=fields)
        return PlaintextVerdict(None, f"server answered {fields.summary()}", error=fields)
    return PlaintextVerdict(None, f"unexpected message type {msg.type!r} in answer to the startup message")
