"""The plaintext login probe: does the server go on with an unencrypted login?

It never sends a credential: the startup message (:func:`probe_startup`, also what the first handshake of
the full audit buffers before TLS, see :mod:`probe.tls`) names the user ``pgbatten_probe`` and the
connection ends at the server's first answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgbatten.probe import wire
from pgbatten.probe.transport import (
    Deadline,
    Unreachable,
    connect,
    describe_os_error,
    read_message,
)

_APPLICATION_NAME = {"application_name": "pgbatten check"}


def probe_startup() -> bytes:
    """The startup message every probe sends: user ``pgbatten_probe``, no credential."""
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
        sock.sendall(probe_startup())
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


__all__ = ["PlaintextResult", "probe_plaintext", "probe_startup"]
