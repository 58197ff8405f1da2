"""What TLS leaves readable, on handshakes made by the real OpenSSL; and live decoding chunk by chunk
agreeing with decoding the whole capture."""

from __future__ import annotations

import ssl
import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pgbatten.attack.decode import BackendStream, ConnectionDecoder, FrontendStream, decode_connection
from pgbatten.attack.events import Direction, WireEvent
from pgbatten.attack.tlsview import decode_tls
from pgbatten.pki import CertificateAuthority
from tests.unit.test_attack_decode import PLAIN_CLIENT, PLAIN_SERVER, SSL_REQUEST, msg


def _handshake(
    tmp_path: Path, *, version: ssl.TLSVersion, client_cert: bool = False
) -> tuple[bytes, bytes, str]:
    """Both directions' bytes of a complete TLS handshake between two in-memory OpenSSL endpoints."""
    ca = CertificateAuthority.create()
    server = ca.issue_server(["db.example.test"])
    (tmp_path / "s.crt").write_bytes(server.cert_pem())
    (tmp_path / "s.key").write_bytes(server.key_pem())
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    sctx.maximum_version = version
    sctx.set_alpn_protocols(["postgresql"])
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(tmp_path / "ca.crt")
    cctx.set_alpn_protocols(["postgresql"])
    if client_cert:
        user = ca.issue_client("alice")
        (tmp_path / "c.crt").write_bytes(user.cert_pem())
        (tmp_path / "c.key").write_bytes(user.key_pem())
        cctx.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
        sctx.verify_mode = ssl.CERT_REQUIRED
        sctx.load_verify_locations(tmp_path / "ca.crt")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(c_in, c_out, server_hostname="db.example.test")
    srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    to_server, to_client = b"", b""
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, end in (("c", client), ("s", srv)):
            try:
                end.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        chunk = c_out.read()
        to_server += chunk
        s_in.write(chunk)
        chunk = s_out.read()
        to_client += chunk
        c_in.write(chunk)
        if all(done.values()) and not chunk:
            break
    client.write(b"SELECT secret")
    to_server += c_out.read()
    return to_server, to_client, server.fingerprint_sha256


def _fields(events: list[WireEvent], name: str) -> list[str]:
    return [v for e in events for v in e.values(name)]


def test_tls12_shows_the_certificate_and_tls13_hides_it(tmp_path: Path) -> None:
    client, server, fingerprint = _handshake(tmp_path, version=ssl.TLSVersion.TLSv1_2)
    conv = decode_connection(SSL_REQUEST + client, b"S" + server)
    assert _fields(list(conv.frontend), "server_name") == ["db.example.test"]
    assert _fields(list(conv.frontend), "alpn") == ["postgresql"]
    backend = list(conv.backend)
    assert _fields(backend, "negotiated") == ["TLS 1.2"]
    assert _fields(backend, "alpn_selected") == ["postgresql"]
    assert _fields(backend, "cipher")[0].startswith("TLS_ECDHE_ECDSA_WITH_")
    assert _fields(backend, "certificate") == ["CN=db.example.test"]
    assert _fields(backend, "certificate_sans") == ["DNS:db.example.test"]
    assert _fields(backend, "certificate_sha256") == [fingerprint]
    assert not any(b"SELECT secret" in e.summary.encode() for e in conv.events)

    client, server, _ = _handshake(tmp_path, version=ssl.TLSVersion.TLSv1_3)
    conv = decode_connection(SSL_REQUEST + client, b"S" + server)
    assert _fields(list(conv.frontend), "server_name") == ["db.example.test"]
    assert _fields(list(conv.backend), "negotiated") == ["TLS 1.3"]
    assert not _fields(list(conv.backend), "certificate")
    # Once encrypted, record types say nothing: no handshake name is read from ciphertext.
    after_ccs = [e for e in conv.backend if e.get("content_type") == "application_data"]
    assert after_ccs and not any(e.get("handshake") for e in after_ccs)


def test_tls12_client_certificate_travels_in_the_clear(tmp_path: Path) -> None:
    client, _, _ = _handshake(tmp_path, version=ssl.TLSVersion.TLSv1_2, client_cert=True)
    assert _fields(decode_tls(client, Direction.FRONTEND), "client_certificate") == ["CN=alice"]
    client, _, _ = _handshake(tmp_path, version=ssl.TLSVersion.TLSv1_3, client_cert=True)
    assert not _fields(decode_tls(client, Direction.FRONTEND), "client_certificate")


def test_alert_before_encryption_is_named() -> None:
    events = decode_tls(struct.pack("!BHHBB", 21, 0x0303, 2, 2, 48), Direction.FRONTEND)
    assert (events[0].get("alert"), events[0].get("alert_level")) == ("unknown_ca", "fatal")


def _live(client: bytes, server: bytes, cuts: list[int]) -> tuple[list[WireEvent], list[WireEvent]]:
    decoder = ConnectionDecoder(max_message=None)
    front: list[WireEvent] = []
    back: list[WireEvent] = []
    # Feed the client side first in pieces, then the server side: the answer bytes need the requests.
    for data, out, direction in ((client, front, Direction.FRONTEND), (server, back, Direction.BACKEND)):
        last = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}):
            out += decoder.feed(direction, data[last:cut])
            last = cut
        out += decoder.feed(direction, data[last:])
    front += decoder.frontend.finish()
    back += decoder.backend.finish()
    return front, back


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_live_decoding_equals_whole_capture(cuts: list[int]) -> None:
    extended = PLAIN_CLIENT[:-5] + msg(b"P", b"\0SELECT 1\0\0\0") + PLAIN_CLIENT[-5:]
    for client, server in ((PLAIN_CLIENT, PLAIN_SERVER), (extended, PLAIN_SERVER[:-7])):
        whole = decode_connection(client, server)
        front, back = _live(client, server, cuts)
        assert tuple(front) == whole.frontend
        assert tuple(back) == whole.backend


def test_oversized_message_is_reported_and_skipped_live() -> None:
    stream = BackendStream(0, max_message=10)
    big = msg(b"D", struct.pack("!hi", 1, 20) + b"x" * 20)
    events = stream.feed(big[:8]) + stream.feed(big[8:] + msg(b"Z", b"I"))
    assert [e.kind for e in events] == ["DataRow", "ReadyForQuery"]
    assert events[0].get("bytes") == "26"
    assert events[1].offset == len(big)


def test_frontend_counts_requests_for_the_backend() -> None:
    front = FrontendStream()
    back = BackendStream(lambda: front.requests)
    gss = struct.pack("!ii", 8, 80877104)
    events = front.feed(gss) + back.feed(b"N") + front.feed(SSL_REQUEST) + back.feed(b"N")
    events += back.feed(msg(b"R", struct.pack("!i", 0)))
    assert [e.kind for e in events] == [
        "GSSENCRequest",
        "SSLAnswer",
        "SSLRequest",
        "SSLAnswer",
        "AuthenticationOk",
    ]
