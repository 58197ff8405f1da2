"""The man in the middle's side of PostgreSQL authentication: the messages it sends, and a client for the
real server once it holds a cleartext password (SCRAM-SHA-256 without channel binding, md5, password).

Reading from sockets goes through :mod:`probe.transport` and is bounded: a peer that never completes a
message times out, and no message longer than :data:`MAX_AUTH_MESSAGE` is accepted before the login is
done.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct

from pgbatten.attack.events import Body, Short
from pgbatten.errors import ProbeError
from pgbatten.probe import transport
from pgbatten.probe.transport import Deadline
from pgbatten.probe.wire import parse_error_fields

MAX_AUTH_MESSAGE = 64 * 1024
MAX_STARTUP = 10_000


class PeerClosed(Exception):
    """The peer closed the connection (or stopped answering) before a complete message."""


def recv_exact(sock: socket.socket, n: int, deadline: Deadline) -> bytes:
    """``n`` bytes, or :class:`PeerClosed` when the peer closes or the deadline passes first."""
    try:
        data = transport.recv_exact(sock, n, deadline)
    except (OSError, TimeoutError) as exc:
        raise PeerClosed(transport.describe_os_error(exc)) from exc
    if len(data) < n:
        raise PeerClosed("closed")
    return data


def read_packet(sock: socket.socket, deadline: Deadline) -> bytes:
    """One untyped startup-phase packet (length included): SSLRequest, StartupMessage, CancelRequest."""
    header = recv_exact(sock, 4, deadline)
    (length,) = struct.unpack("!i", header)
    if not 8 <= length <= MAX_STARTUP:
        raise PeerClosed(f"not a PostgreSQL startup packet (length {length})")
    return header + recv_exact(sock, length - 4, deadline)


def read_message(sock: socket.socket, deadline: Deadline) -> tuple[str, bytes]:
    """One typed message of either side during the login: (type, body)."""
    header = recv_exact(sock, 5, deadline)
    (length,) = struct.unpack("!i", header[1:])
    if not 4 <= length <= MAX_AUTH_MESSAGE:
        raise PeerClosed(f"message {chr(header[0])!r} of impossible length {length}")
    return chr(header[0]), recv_exact(sock, length - 4, deadline)


def message(mtype: str, body: bytes) -> bytes:
    return mtype.encode() + struct.pack("!i", len(body) + 4) + body


def auth_request(code: int, extra: bytes = b"") -> bytes:
    return message("R", struct.pack("!i", code) + extra)


CLEARTEXT_REQUEST = auth_request(3)


def error_response(text: str, code: str = "08006") -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0"
    return message("E", fields)


def startup_params(packet: bytes) -> dict[str, str]:
    """The parameters of a StartupMessage packet (empty when it is something else)."""
    if len(packet) < 8 or struct.unpack("!i", packet[4:8])[0] >> 16 != 3:
        return {}
    out: dict[str, str] = {}
    b = Body(packet[8:])
    try:
        while b.remaining:
            key = b.cstring()
            if not key:
                break
            out[key] = b.cstring()
    except Short:
        pass
    return out


def client_proof(password: str, client_first_bare: str, server_first: str, final_without_proof: str) -> bytes:
    """RFC 5802 ClientProof: ClientKey XOR HMAC(StoredKey, AuthMessage), with SaltedPassword from PBKDF2."""
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    auth_message = f"{client_first_bare},{server_first},{final_without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


def _scram_client(sock: socket.socket, password: str, mechanisms: list[str], timeout: float) -> None:
    if "SCRAM-SHA-256" not in mechanisms:
        raise ProbeError("", 0, f"the server offers only {', '.join(mechanisms)}")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    initial = ("n,," + first_bare).encode()
    sock.sendall(message("p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(initial)) + initial))
    mtype, body = read_message(sock, Deadline(timeout))
    _raise_error(mtype, body)
    if mtype != "R" or struct.unpack("!i", body[:4])[0] != 11:
        raise ProbeError("", 0, "the server did not continue the SCRAM exchange")
    server_first = body[4:].decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    final_without_proof = f"c=biws,r={attrs['r']}"
    proof = client_proof(password, first_bare, server_first, final_without_proof)
    final = f"{final_without_proof},p={base64.b64encode(proof).decode()}"
    sock.sendall(message("p", final.encode()))


def _raise_error(mtype: str, body: bytes) -> None:
    if mtype == "E":
        fields = parse_error_fields(body)
        raise ProbeError("", 0, fields.summary())


def login(sock: socket.socket, startup: bytes, user: str, password: str, *, timeout: float) -> None:
    """Send ``startup`` and authenticate with ``password`` however the server asks; return once the server
    said AuthenticationOk (its next messages are left unread). ``ProbeError`` when the login fails."""
    sock.sendall(startup)
    while True:
        mtype, body = read_message(sock, Deadline(timeout))
        _raise_error(mtype, body)
        if mtype != "R" or len(body) < 4:
            raise ProbeError("", 0, f"unexpected message {mtype!r} during the login")
        code = struct.unpack("!i", body[:4])[0]
        if code == 0:
            return
        if code == 3:
            sock.sendall(message("p", password.encode() + b"\0"))
        elif code == 5:
            inner = hashlib.md5((password + user).encode()).hexdigest()  # noqa: S324 - PostgreSQL's md5
            outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()  # noqa: S324
            sock.sendall(message("p", b"md5" + outer.encode() + b"\0"))
        elif code == 10:
            mechanisms = [m for m in body[4:].decode(errors="replace").split("\0") if m]
            _scram_client(sock, password, mechanisms, timeout)
        elif code in (11, 12):
            continue  # SASLFinal: the server's signature; AuthenticationOk follows
        else:
            raise ProbeError("", 0, f"the server asks for authentication method {code}")
