"""One connection as ``pgbatten mitm`` records it (what the client did, what was captured, the verdict), the
options of a run, and where the man in the middle reports as connections pass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from pgbatten.attack.events import WireEvent
from pgbatten.attack.forge import Attack
from pgbatten.pki import CertificateAuthority
from pgbatten.probe.wire import Target

MAX_KEPT_EVENTS = 10_000
"""Decoded messages kept per connection (all are reported to the sink as they pass)."""


class Verdict:
    """What the attack achieved on one connection, from the client's behaviour."""

    REFUSED = "refused"
    """The client stopped before sending its startup (or its password, when asked in cleartext)."""
    FOOLED = "fooled"
    """It went on through the attack and sent its startup and credentials, but the man in the middle
    could not log in to the real server with them: he has who, where, and what can be guessed from."""
    READ = "read"
    """Fooled, and the session was relayed: the man in the middle read (and could change) its queries."""


@dataclass
class MitmConnection:
    """One attacked connection: what the client did, what was captured, how the upstream login went."""

    conn_id: int
    peer: tuple[str, int]
    attack: Attack
    started: float = field(default_factory=time.time)
    asked: str = "nothing"
    """How the client started: ``SSLRequest``, ``direct TLS``, ``plaintext`` (a startup without asking for
    encryption), ``CancelRequest``, or ``nothing``."""
    client_tls: str | None = None
    """The TLS session the client accepted from the man in the middle (version and suite)."""
    stripped: bool = False
    """The client asked for TLS and was told 'N'."""
    refusal: str | None = None
    """Why the client stopped, as seen on the wire, when it did."""
    startup: dict[str, str] = field(default_factory=dict)
    credentials: list[str] = field(default_factory=list)
    password: str | None = None
    """A cleartext password the client sent, kept in memory only."""
    upstream_tls: str | None = None
    upstream_login: str | None = None
    """``ok``, ``failed: REASON``, or None when it was never tried."""
    queries: list[str] = field(default_factory=list)
    rows: int = 0
    ready: bool = False
    """The client got ReadyForQuery through the man in the middle: its session runs through him."""
    cancel: dict[str, str] | None = None
    error: str | None = None
    events: list[WireEvent] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.upstream_login == "ok" and self.ready:
            return Verdict.READ
        if self.startup and self.refusal is None and self.error is None:
            return Verdict.FOOLED
        return Verdict.REFUSED

    def to_json(self) -> dict[str, object]:
        return {
            "conn": self.conn_id,
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "attack": str(self.attack),
            "verdict": self.verdict,
            "asked": self.asked,
            "client_tls": self.client_tls,
            "stripped": self.stripped,
            "refusal": self.refusal,
            "user": self.startup.get("user"),
            "database": self.startup.get("database"),
            "application_name": self.startup.get("application_name"),
            "credentials": self.credentials,
            "password": self.password,
            "upstream_tls": self.upstream_tls,
            "upstream_login": self.upstream_login,
            "queries": self.queries,
            "rows": self.rows,
            "session_relayed": self.ready,
            "cancel": self.cancel,
            "error": self.error,
        }


class MitmSink(Protocol):
    """Where the man in the middle reports; called from connection threads, one call at a time."""

    def opened(self, conn: MitmConnection) -> None: ...

    def step(self, conn: MitmConnection, text: str) -> None: ...

    def event(self, conn: MitmConnection, event: WireEvent) -> None: ...

    def closed(self, conn: MitmConnection) -> None: ...


class QuietSink:
    """A sink that keeps nothing: for callers that read :attr:`Mitm.connections` afterwards."""

    def opened(self, conn: MitmConnection) -> None:
        pass

    def step(self, conn: MitmConnection, text: str) -> None:
        pass

    def event(self, conn: MitmConnection, event: WireEvent) -> None:
        pass

    def closed(self, conn: MitmConnection) -> None:
        pass


@dataclass(frozen=True)
class MitmOptions:
    listen: Target
    upstream: Target
    attack: Attack
    ca: CertificateAuthority | None = None
    """The CA the client trusts, when its key is at hand (``same-ca-wrong-host`` needs it)."""
    names: tuple[str, ...] = ()
    """The names to forge a certificate for; default: the upstream certificate's, else the upstream host."""
    timeout: float = 10.0
    """Seconds to wait for a client's next step during the attack, or to reach the server."""
    duration: float | None = None
