"""What one connection gave away to someone on the path: its transport and the list of what leaked.

Pure: a function of the decoded events of both directions. In plaintext that is everything (who logs in,
the password or what can be guessed from, the SQL, the rows, the cancel key); under TLS it is what TLS
leaves in the clear (that it is PostgreSQL, the server name asked for, ALPN, under TLS 1.2 the server's
certificate and a client certificate, and every record's size).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pgbatten.attack.events import Direction, WireEvent, printable

QUERIES_SHOWN = 5


class Sensitivity(StrEnum):
    """How much a leak hurts: a secret (a password or what replaces it), data, or metadata."""

    SECRET = "secret"  # noqa: S105 - a category name, not a password
    DATA = "data"
    METADATA = "metadata"


@dataclass(frozen=True)
class Leak:
    """One thing an eavesdropper learnt, e.g. ``Leak("user", "app", DATA)``."""

    what: str
    detail: str
    sensitivity: Sensitivity

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "detail": self.detail, "sensitivity": str(self.sensitivity)}


@dataclass(frozen=True)
class ConnectionSummary:
    """How a connection travelled and what it leaked."""

    transport: str
    """``plaintext``, ``TLS``, ``GSSAPI``, ``cancel request``, ``refused`` (the client asked for TLS, was
    told no, and gave up) or ``no PostgreSQL traffic``."""
    negotiation: str
    """How encryption was asked for: ``SSLRequest``, ``direct TLS``, ``GSSENCRequest``, or ``none``."""
    tls_version: str | None
    cipher: str | None
    client_bytes: int
    server_bytes: int
    leaks: tuple[Leak, ...]

    @property
    def encrypted(self) -> bool:
        return self.transport in ("TLS", "GSSAPI")

    def leaked(self, what: str) -> list[Leak]:
        return [leak for leak in self.leaks if leak.what == what]

    def to_json(self) -> dict[str, object]:
        return {
            "transport": self.transport,
            "negotiation": self.negotiation,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "client_bytes": self.client_bytes,
            "server_bytes": self.server_bytes,
            "leaks": [leak.to_json() for leak in self.leaks],
        }


def _first(events: Iterable[WireEvent], name: str) -> str | None:
    return next((v for e in events if (v := e.get(name)) is not None), None)


def summarize(events: Iterable[WireEvent]) -> ConnectionSummary:
    """Classify a connection from its decoded events (both directions, any order)."""
    events = list(events)
    kinds = {e.kind for e in events}
    front = [e for e in events if e.direction == Direction.FRONTEND]
    tls = [e for e in events if e.kind == "TLSRecord"]
    sizes = (
        sum(e.size for e in front),
        sum(e.size for e in events if e.direction == Direction.BACKEND),
    )
    if "SSLRequest" in kinds:
        negotiation = "SSLRequest"
    elif front and front[0].kind == "TLSRecord":
        negotiation = "direct TLS"
    elif "GSSENCRequest" in kinds:
        negotiation = "GSSENCRequest"
    else:
        negotiation = "none"
    leaks: list[Leak] = []
    if tls:
        transport = "TLS"
        leaks += _tls_leaks(tls, negotiation)
    elif "GSSWrapped" in kinds:
        transport = "GSSAPI"
        leaks.append(Leak("encryption request", "GSSENCRequest in plaintext", Sensitivity.METADATA))
    elif "CancelRequest" in kinds:
        transport = "cancel request"
    elif "StartupMessage" in kinds:
        transport = "plaintext"
    elif "SSLAnswer" in kinds:
        transport = "refused"
    else:
        transport = "no PostgreSQL traffic"
    leaks += _plaintext_leaks(events)
    return ConnectionSummary(
        transport=transport,
        negotiation=negotiation,
        tls_version=_first(tls, "negotiated"),
        cipher=_first(tls, "cipher"),
        client_bytes=sizes[0],
        server_bytes=sizes[1],
        leaks=tuple(leaks),
    )


def _tls_leaks(tls: list[WireEvent], negotiation: str) -> list[Leak]:
    meta = Sensitivity.METADATA
    out = [
        Leak(
            "encryption request",
            "SSLRequest in plaintext: marks the connection as PostgreSQL"
            if negotiation == "SSLRequest"
            else "a TLS ClientHello without SSLRequest (direct TLS)",
            meta,
        )
    ]
    if (sni := _first(tls, "server_name")) is not None:
        out.append(Leak("server name (SNI)", sni, meta))
    if (alpn := _first(tls, "alpn")) is not None:
        selected = _first(tls, "alpn_selected")
        out.append(Leak("ALPN", alpn + (f" (server chose {selected})" if selected else ""), meta))
    version, cipher = _first(tls, "negotiated"), _first(tls, "cipher")
    if version:
        out.append(Leak("TLS version", f"{version}{', ' + cipher if cipher else ''}", meta))
    for prefix, label in (
        ("certificate", "server certificate"),
        ("client_certificate", "client certificate"),
    ):
        if (subject := _first(tls, prefix)) is not None:
            sans = _first(tls, f"{prefix}_sans")
            issuer = _first(tls, f"{prefix}_issuer")
            detail = (
                subject + (f", SANs {sans}" if sans else "") + (f", issued by {issuer}" if issuer else "")
            )
            out.append(Leak(label, detail, meta))
    for event in tls:
        if event.get("alert"):
            who = "client" if event.direction == Direction.FRONTEND else "server"
            out.append(Leak("TLS alert", f"{who} sent {event.get('alert_level')} {event.get('alert')}", meta))
    data = [e for e in tls if e.get("content_type") == "application_data"]
    if data:
        client = [e.size for e in data if e.direction == Direction.FRONTEND]
        server = [e.size for e in data if e.direction == Direction.BACKEND]
        out.append(
            Leak(
                "record sizes",
                f"{len(client)} encrypted records from the client ({sum(client)} bytes), {len(server)} "
                f"from the server ({sum(server)} bytes): sizes and timing of queries and results",
                meta,
            )
        )
    return out


def _plaintext_leaks(events: list[WireEvent]) -> list[Leak]:
    out: list[Leak] = []
    data, secret, meta = Sensitivity.DATA, Sensitivity.SECRET, Sensitivity.METADATA
    by_kind: dict[str, list[WireEvent]] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(event)
    for startup in by_kind.get("StartupMessage", [])[:1]:
        for name in ("user", "database", "application_name"):
            if (value := startup.get(name)) is not None:
                out.append(Leak(name, value, data))
    for message in by_kind.get("PasswordMessage", []):
        if message.get("method") == "cleartext":
            out.append(Leak("password", f"cleartext: {message.get('password')}", secret))
        elif message.get("method") == "md5":
            salt = _first(by_kind.get("AuthenticationMD5Password", []), "salt")
            out.append(
                Leak(
                    "md5 hash",
                    f"{message.get('hash')} with salt {salt or '(not seen)'}: enough for offline guessing",
                    secret,
                )
            )
    if "SASLInitialResponse" in by_kind:
        mechanism = _first(by_kind["SASLInitialResponse"], "mechanism")
        proof = any("p=" in (e.get("data") or "") for e in by_kind.get("SASLResponse", []))
        out.append(
            Leak(
                "SCRAM exchange",
                f"{mechanism}: salt, iteration count"
                + (" and client proof: enough for offline guessing" if proof else ""),
                secret if proof else meta,
            )
        )
    queries = [q for e in events if e.kind in ("Query", "Parse") and (q := e.get("query"))]
    if queries:
        shown = "; ".join(printable(q, 80) for q in queries[:QUERIES_SHOWN])
        more = f" (+{len(queries) - QUERIES_SHOWN} more)" if len(queries) > QUERIES_SHOWN else ""
        out.append(Leak("SQL", f"{len(queries)} statements: {shown}{more}", data))
    binds = by_kind.get("Bind", [])
    values = [v for e in binds for v in e.values("value")]
    if values:
        out.append(Leak("parameters", printable(", ".join(values), 120), data))
    rows = by_kind.get("DataRow", [])
    if rows:
        columns = [c for e in by_kind.get("RowDescription", []) for c in e.values("column")]
        first = " | ".join(rows[0].values("value"))
        cols = f" of {', '.join(columns)}" if columns else ""
        out.append(Leak("rows", f"{len(rows)} rows{cols}; first: {printable(first, 100)}", data))
    for error in by_kind.get("ErrorResponse", [])[:3]:
        out.append(Leak("error", error.summary, meta))
    for key in by_kind.get("BackendKeyData", []):
        out.append(
            Leak("cancel key", f"backend {key.get('pid')}, key {key.get('key')}: lets anyone cancel", data)
        )
    for cancel in by_kind.get("CancelRequest", []):
        out.append(Leak("CancelRequest", f"backend {cancel.get('pid')}, key {cancel.get('key')}", data))
    version = next(
        (e.get("value") for e in by_kind.get("ParameterStatus", []) if e.get("name") == "server_version"),
        None,
    )
    if version:
        out.append(Leak("server version", version, meta))
    return out
