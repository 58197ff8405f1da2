"""What each PostgreSQL protocol message says, decoded from its body: the startup packets, the frontend
messages (SQL, parameters, passwords) and the backend messages (authentication requests, rows, errors).

Pure and total over the body bytes it is given: a body shorter than its fields raise :class:`Short`, which
the streams in :mod:`attack.decode` turn into a ``malformed`` event. Constants and ErrorResponse fields come
from :mod:`probe.wire`.
"""

from __future__ import annotations

from pgbatten.attack.events import Body, Short, printable, text_of
from pgbatten.probe.wire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    parse_error_fields,
)

AUTH_REQUESTS = {
    0: "AuthenticationOk",
    2: "AuthenticationKerberosV5",
    3: "AuthenticationCleartextPassword",
    5: "AuthenticationMD5Password",
    7: "AuthenticationGSS",
    8: "AuthenticationGSSContinue",
    9: "AuthenticationSSPI",
    10: "AuthenticationSASL",
    11: "AuthenticationSASLContinue",
    12: "AuthenticationSASLFinal",
}

FRONTEND_TYPES = {
    "Q": "Query",
    "P": "Parse",
    "B": "Bind",
    "p": "PasswordMessage",
    "E": "Execute",
    "D": "Describe",
    "S": "Sync",
    "H": "Flush",
    "C": "Close",
    "X": "Terminate",
    "F": "FunctionCall",
    "d": "CopyData",
    "c": "CopyDone",
    "f": "CopyFail",
}
BACKEND_TYPES = {
    "R": "Authentication",
    "S": "ParameterStatus",
    "K": "BackendKeyData",
    "Z": "ReadyForQuery",
    "T": "RowDescription",
    "D": "DataRow",
    "C": "CommandComplete",
    "E": "ErrorResponse",
    "N": "NoticeResponse",
    "1": "ParseComplete",
    "2": "BindComplete",
    "3": "CloseComplete",
    "n": "NoData",
    "t": "ParameterDescription",
    "s": "PortalSuspended",
    "I": "EmptyQueryResponse",
    "A": "NotificationResponse",
    "v": "NegotiateProtocolVersion",
    "d": "CopyData",
    "c": "CopyDone",
    "G": "CopyInResponse",
    "H": "CopyOutResponse",
}

Decoded = tuple[str, str, list[tuple[str, str]]]
"""(kind, summary, fields) of one message body."""


def decode_startup(code: int, body: Body) -> Decoded:
    """An untyped first message, from its code and the rest of its body."""
    if code == SSL_REQUEST_CODE:
        return "SSLRequest", "SSLRequest: may we switch to TLS?", []
    if code == GSSENC_REQUEST_CODE:
        return "GSSENCRequest", "GSSENCRequest: may we switch to GSSAPI encryption?", []
    if code == CANCEL_REQUEST_CODE:
        pid = body.int32()
        key = body.rest().hex()
        return "CancelRequest", f"CancelRequest for backend {pid}", [("pid", str(pid)), ("key", key)]
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        return (
            "StartupMessage",
            f"startup with unknown protocol {major}.{minor}",
            [("protocol", f"{major}.{minor}")],
        )
    fields = [("protocol", f"{major}.{minor}")]
    while body.remaining:
        key = body.cstring()
        if not key:
            break
        fields.append((printable(key, 64), printable(body.cstring())))
    shown = ", ".join(f"{k}={v}" for k, v in fields[1:] if k in ("user", "database", "application_name"))
    return "StartupMessage", f"StartupMessage {shown}".rstrip(), fields


def _password(body: bytes) -> Decoded:
    """The 'p' message's meaning depends on what the server asked for; its shape tells which."""
    text = body[:-1] if body.endswith(b"\0") else body
    if len(text) == 35 and text.startswith(b"md5") and all(c in b"0123456789abcdef" for c in text[3:]):
        digest = text.decode()
        return "PasswordMessage", f"md5 password hash {digest}", [("method", "md5"), ("hash", digest)]
    b = Body(body)
    try:
        mechanism = b.cstring()
        if mechanism.startswith("SCRAM-") and b.remaining >= 4:
            length = b.int32()
            initial = text_of(b.take(length)) if length >= 0 else ""
            return (
                "SASLInitialResponse",
                f"SASLInitialResponse {mechanism}: {printable(initial, 60)}",
                [("mechanism", mechanism), ("data", printable(initial))],
            )
    except Short:
        pass
    if body.endswith(b"\0") and b"\0" not in text:
        shown = printable(text_of(text))
        if text.isascii() and all(32 <= c < 127 for c in text):
            return (
                "PasswordMessage",
                f"cleartext password {shown!r}",
                [("method", "cleartext"), ("password", shown)],
            )
    shown = printable(text_of(body), 60)
    return "SASLResponse", f"SASLResponse: {shown}", [("data", printable(text_of(body)))]


def decode_frontend_message(mtype: str, body: bytes) -> Decoded:
    name = FRONTEND_TYPES.get(mtype, f"message {mtype!r}")
    b = Body(body)
    if mtype == "Q":
        query = b.cstring()
        return name, f"Query: {printable(query)}", [("query", printable(query, 4000))]
    if mtype == "P":
        stmt = b.cstring()
        query = b.cstring()
        return (
            name,
            f"Parse: {printable(query)}",
            [("statement", printable(stmt)), ("query", printable(query, 4000))],
        )
    if mtype == "B":
        portal, stmt = b.cstring(), b.cstring()
        b.take(2 * b.int16())  # parameter format codes
        values: list[tuple[str, str]] = []
        for _ in range(b.int16()):
            length = b.int32()
            values.append(("value", "NULL" if length < 0 else printable(text_of(b.take(length)))))
        shown = ", ".join(v for _, v in values)
        return (
            name,
            f"Bind {len(values)} parameters: {printable(shown)}",
            [("portal", printable(portal)), ("statement", printable(stmt)), *values],
        )
    if mtype == "p":
        return _password(body)
    return name, name, []


def _auth(b: Body) -> Decoded:
    code = b.int32()
    kind = AUTH_REQUESTS.get(code, f"Authentication({code})")
    fields = [("code", str(code))]
    if code == 5:
        salt = b.take(4).hex()
        return kind, f"{kind}, salt {salt}", [*fields, ("salt", salt)]
    if code == 10:
        mechanisms = []
        while b.remaining:
            mechanism = b.cstring()
            if not mechanism:
                break
            mechanisms.append(printable(mechanism, 40))
        return kind, f"{kind}: {', '.join(mechanisms)}", [*fields, *(("mechanism", m) for m in mechanisms)]
    if code in (11, 12):
        data = printable(text_of(b.data[b.pos :]))
        return kind, f"{kind}: {printable(data, 60)}", [*fields, ("data", data)]
    return kind, kind, fields


def decode_backend_message(mtype: str, body: bytes) -> Decoded:
    name = BACKEND_TYPES.get(mtype, f"message {mtype!r}")
    b = Body(body)
    if mtype == "R":
        return _auth(b)
    if mtype == "S":
        key, value = printable(b.cstring(), 64), printable(b.cstring())
        return name, f"{key} = {value}", [("name", key), ("value", value)]
    if mtype == "K":
        pid = b.int32()
        cancel_key = b.rest()
        return (
            name,
            f"backend pid {pid}, cancel key of {len(cancel_key)} bytes",
            [("pid", str(pid)), ("key", cancel_key.hex())],
        )
    if mtype == "Z":
        status = chr(b.int8())
        return name, f"ReadyForQuery ({printable(status)})", [("status", printable(status))]
    if mtype == "T":
        columns = []
        for _ in range(b.int16()):
            columns.append(printable(b.cstring(), 64))
            b.take(18)  # table oid, column number, type oid, type size, type modifier, format
        return name, f"columns: {', '.join(columns)}", [("column", c) for c in columns]
    if mtype == "D":
        values = []
        for _ in range(b.int16()):
            length = b.int32()
            values.append("NULL" if length < 0 else printable(text_of(b.take(length))))
        return name, f"row: {printable(' | '.join(values))}", [("value", v) for v in values]
    if mtype == "C":
        tag = printable(b.cstring())
        return name, tag, [("tag", tag)]
    if mtype in ("E", "N"):
        parsed = parse_error_fields(body)
        if parsed.problem is not None:
            raise Short
        fields = [
            (key, printable(value, 400))
            for key, value in (
                ("severity", parsed.severity),
                ("severity_nonlocalized", parsed.severity_nonlocalized),
                ("code", parsed.code),
                ("message", parsed.message),
                ("detail", parsed.detail),
                ("hint", parsed.hint),
            )
            if value is not None
        ]
        severity = parsed.severity_nonlocalized or parsed.severity or ""
        return name, f"{severity} {parsed.code or ''}: {parsed.message or ''}".strip(), fields
    return name, name, []
