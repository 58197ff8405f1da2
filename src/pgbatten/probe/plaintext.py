"""The probes that speak PostgreSQL's protocol in plaintext: a login attempt, and bytes buffered before TLS.

Neither ever sends a credential: the startup message names the user ``pgbatten_probe`` and the connection
ends at the server's first answer.

* :func:`probe_plaintext` asks for an unencrypted login and classifies the first answer.
* :func:`probe_buffered_plaintext` sends an SSLRequest and, in the same packet, a startup message: the
  CVE-2021-23214 pattern, where a man in the middle injects plaintext that a server reads as if it had come
  through the TLS session that follows. A fixed server refuses it (``received unencrypted data after SSL
  request``; PostgreSQL 17 feeds it to the TLS handshake, which then fails); a vulnerable one answers the
  injected startup message over TLS.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass

from pgbatten.probe import wire
from pgbatten.probe.tls import close_gently, make_context
from pgbatten.probe.transport import (
    Deadline,
    Unreachable,
    connect,
    describe_os_error,
    read_message,
    request_tls,
)

_APPLICATION_NAME = {"application_name": "pgbatten check"}


def _probe_startup() -> bytes:
    return wire.startup_message(wire.PROBE_USER, wire.PROBE_DATABASE, _APPLICATION_NAME)


@dataclass(frozen=True)
class PlaintextResult:
    """The answer to an unencrypted StartupMessage (user ``pgbatten_probe``, no credentials ever sent)."""

    verdict: wire.PlaintextVerdict | None
    connected: bool
    error: str | None = None


def probe_plaintext(host: str, port: int, timeout: float) -> PlaintextResult:
    """Ask for an unencrypted login and classify the first answer, then hang up.

    No Terminate is sent: a backend waiting for a password logs nothing when the client just disconnects
    (as psql does at a password prompt), but logs a protocol violation for any other message.
    """
    deadline = Deadline(timeout)
    try:
        sock = connect(host, port, deadline)
    except Unreachable as exc:
        return PlaintextResult(None, False, exc.reason)
    try:
        deadline.arm(sock)
        sock.sendall(_probe_startup())
        msg = read_message(sock, deadline)
        if msg.type == "v" and msg.problem is None:
            # NegotiateProtocolVersion precedes the real answer.
            msg = read_message(sock, deadline)
        return PlaintextResult(wire.classify_startup_response(msg), True)
    except TimeoutError:
        return PlaintextResult(None, True, "no answer to the startup message before the timeout")
    except OSError as exc:
        return PlaintextResult(None, True, f"startup message failed: {describe_os_error(exc)}")
    finally:
        sock.close()


@dataclass(frozen=True)
class BufferedPlaintextResult:
    """Whether a server processes plaintext bytes that arrived with the SSLRequest, before the handshake.

    ``processed`` is True for a vulnerable server, False for one that refused them, None when the probe
    could not tell (no TLS, the server hung up or stalled before a verdict).
    """

    processed: bool | None
    connected: bool
    detail: str


_INJECTION_REFUSED = "received unencrypted data after ssl request"


def judge_buffered_answer(msg: wire.BackendMessage) -> tuple[bool | None, str]:
    """Classify the first message a server sent over TLS after the buffered startup message. Pure."""
    if msg.problem is not None:
        return None, f"no verdict: {msg.problem}"
    if msg.type == "R":
        return True, "the server answered the buffered startup message with an authentication request"
    if msg.type == "E":
        fields = wire.parse_error_fields(msg.body)
        if fields.code == "08P01" or _INJECTION_REFUSED in (fields.message or "").lower():
            return False, f"the server refused the buffered bytes: {fields.summary()}"
        if fields.code in ("28000", "28P01", "3D000"):
            return True, f"the server processed the buffered startup message: {fields.summary()}"
        return None, f"the server answered {fields.summary()}"
    return None, f"unexpected message type {msg.type!r} after the handshake"


def probe_buffered_plaintext(
    host: str, port: int, timeout: float, *, server_name: str | None = None
) -> BufferedPlaintextResult:
    """SSLRequest and a startup message in one packet, then a TLS handshake: is the startup processed?

    One connection. Nothing is sent over the TLS session: a server that answers anything other than its
    refusal has processed bytes no TLS protected.
    """
    deadline = Deadline(timeout)
    try:
        sock = connect(host, port, deadline)
    except Unreachable as exc:
        return BufferedPlaintextResult(None, False, exc.reason)
    with contextlib.closing(sock):
        try:
            response = request_tls(sock, deadline, trailing=_probe_startup())
        except (TimeoutError, OSError) as exc:
            return BufferedPlaintextResult(None, True, f"no answer to SSLRequest: {describe_os_error(exc)}")
        if response.answer is not wire.SslAnswer.ACCEPTED:
            return BufferedPlaintextResult(None, True, f"not applicable: {response.detail}")
        name = server_name if server_name is not None else host
        ctx = make_context()
        try:
            tls = ctx.wrap_socket(
                sock,
                server_hostname=None if wire.is_ip_literal(name) else name,
                do_handshake_on_connect=False,
            )
        except (OSError, ValueError) as exc:
            return BufferedPlaintextResult(None, True, f"no verdict: {exc}")
        try:
            deadline.arm(tls)
            tls.do_handshake()
        except TimeoutError:
            return BufferedPlaintextResult(None, True, "no verdict: the TLS handshake timed out")
        except (ssl.SSLError, OSError) as exc:
            # PostgreSQL 17+ hands buffered bytes to the TLS library, which cannot read them as a hello.
            reason = exc.reason if isinstance(exc, ssl.SSLError) else describe_os_error(exc)
            return BufferedPlaintextResult(
                False, True, f"the server refused the handshake after the buffered bytes ({reason})"
            )
        try:
            msg = read_message(tls, deadline)
        except TimeoutError:
            msg = wire.BackendMessage("", b"", "no answer over TLS before the timeout")
        except OSError as exc:
            msg = wire.BackendMessage("", b"", describe_os_error(exc))
        finally:
            close_gently(tls, timeout)
        processed, detail = judge_buffered_answer(msg)
        if msg.problem == "connection closed":
            processed, detail = False, "the server hung up after the handshake without processing them"
        return BufferedPlaintextResult(processed, True, detail)


__all__ = [
    "BufferedPlaintextResult",
    "PlaintextResult",
    "judge_buffered_answer",
    "probe_buffered_plaintext",
    "probe_plaintext",
]
