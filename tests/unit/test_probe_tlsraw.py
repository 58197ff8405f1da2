"""Raw ClientHello building and first-flight parsing, including answers from a real OpenSSL server."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgbatten.probe.cipher_suites import (
    BY_NAME,
    CIPHER_SUITES,
    EC_GROUPS,
    NAMED_GROUPS,
    TLS13_SUITES,
    Rating,
    candidates_for,
    suite_name,
)
from pgbatten.probe.client_hello import build_client_hello, generate_key_shares, parse_client_hello
from pgbatten.probe.tlsraw import HRR_RANDOM, AnswerKind, TlsDecodeError, parse_server_response
from pgbatten.probe.versions import TlsVersion
from tests.unit.tls_helpers import write_self_signed

# --------------------------------------------------------------------------------------------- helpers


def _record(ctype: int, payload: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(payload)) + payload


def _handshake(htype: int, body: bytes) -> bytes:
    return struct.pack("!B", htype) + len(body).to_bytes(3, "big") + body


def _server_hello(
    *, version: int = 0x0303, suite: int = 0xC02B, random: bytes = b"\x11" * 32, exts: bytes | None = None
) -> bytes:
    body = struct.pack("!H", version) + random + b"\x20" + b"\x00" * 32 + struct.pack("!HB", suite, 0)
    if exts is not None:
        body += struct.pack("!H", len(exts)) + exts
    return _handshake(2, body)


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    return write_self_signed(tmp_path_factory.mktemp("tlsraw"))


def _ask_openssl(ctx: ssl.SSLContext, hello: bytes) -> bytes:
    """Send ``hello`` to a one-shot stdlib TLS server on loopback; return everything it answered."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(5)
        with (
            conn,
            ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls,
            contextlib.suppress(ssl.SSLError, OSError),
        ):
            tls.do_handshake()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    data = b""
    with listener, socket.create_connection(listener.getsockname(), timeout=5) as sock:
        sock.sendall(hello)
        while not parse_server_response(data).complete:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    thread.join(5)
    return data


@pytest.fixture
def openssl_ctx(server_cert: tuple[Path, Path, bytes]) -> Iterator[ssl.SSLContext]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert[0], server_cert[1])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    yield ctx


# --------------------------------------------------------------------------------------------- tables


def test_cipher_table_properties() -> None:
    gcm = BY_NAME["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    assert (gcm.code, gcm.is_aead, gcm.forward_secret, gcm.rating) == (0xC02B, True, True, Rating.RECOMMENDED)
    assert gcm.min_version == TlsVersion.TLSv1_2
    cbc = CIPHER_SUITES[0x002F]
    assert (cbc.is_aead, cbc.forward_secret, cbc.rating) == (False, False, Rating.WEAK)
    assert CIPHER_SUITES[0x0003].export and CIPHER_SUITES[0x0003].rating is Rating.INSECURE
    assert CIPHER_SUITES[0x0034].auth == "anon" and CIPHER_SUITES[0x0034].rating is Rating.INSECURE
    assert CIPHER_SUITES[0x1305].rating is Rating.SECURE and CIPHER_SUITES[0x1301].tls13
    assert TLS13_SUITES == (0x1301, 0x1302, 0x1303, 0x1304, 0x1305)
    assert suite_name(0xFAFA) == "UNKNOWN_0xFAFA"
    assert NAMED_GROUPS[29] == "x25519" and NAMED_GROUPS[256] == "ffdhe2048"


def test_candidates_respect_version_limits() -> None:
    tls10 = candidates_for(TlsVersion.TLSv1)
    assert 0xC02B not in tls10 and 0x002F in tls10 and 0x1301 not in tls10
    assert set(candidates_for(TlsVersion.TLSv1_3)) == set(TLS13_SUITES)
    # weakest first: the first candidates are NULL/EXPORT suites, never a recommended one
    assert CIPHER_SUITES[candidates_for(TlsVersion.TLSv1_2)[0]].rating is Rating.INSECURE


# --------------------------------------------------------------------------------------------- build


def test_tls13_hello_round_trip() -> None:
    shares = generate_key_shares([29, 23])
    hello = build_client_hello(
        version=TlsVersion.TLSv1_3,
        cipher_suites=TLS13_SUITES,
        groups=[29, 23, 24],
        server_name="db.example.com",
        alpn=[b"postgresql"],
        key_shares=shares,
    )
    info = parse_client_hello(hello)
    assert info.legacy_version == 0x0303 and info.supported_versions == (0x0304,)
    assert info.max_version == 0x0304
    assert info.cipher_suites == TLS13_SUITES
    assert info.groups == (29, 23, 24)
    assert info.server_name == "db.example.com"
    assert info.alpn == (b"postgresql",)
    assert len(info.key_shares[29]) == 32 and len(info.key_shares[23]) == 65
    assert len(info.session_id) == 32
    assert 0xFF01 not in info.extensions


def test_legacy_hellos() -> None:
    hello12 = parse_client_hello(
        build_client_hello(
            version=TlsVersion.TLSv1_2, cipher_suites=[0xC02F], groups=EC_GROUPS, server_name="127.0.0.1"
        )
    )
    assert hello12.legacy_version == 0x0303 and hello12.supported_versions == ()
    assert hello12.server_name is None  # no SNI for IP literals
    assert 0xFF01 in hello12.extensions and hello12.signature_schemes
    hello11 = parse_client_hello(
        build_client_hello(version=TlsVersion.TLSv1_1, cipher_suites=[0x002F], groups=[23], server_name="h")
    )
    assert hello11.legacy_version == 0x0302 and hello11.signature_schemes == ()
    ssl3 = parse_client_hello(
        build_client_hello(version=TlsVersion.SSLv3, cipher_suites=[0x002F], groups=[23], server_name="h")
    )
    assert ssl3.record_version == 0x0300 and ssl3.extensions == ()
    assert ssl3.cipher_suites == (0x002F, 0x00FF)  # renegotiation SCSV in place of the extension
    assert 0x5600 not in ssl3.cipher_suites  # never TLS_FALLBACK_SCSV
    with pytest.raises(ValueError, match="at least one"):
        build_client_hello(version=TlsVersion.TLSv1_2, cipher_suites=[], groups=[], server_name=None)


# --------------------------------------------------------------------------------------------- parse


def test_parse_synthetic_tls12_flight() -> None:
    cert = b"\x30\x03\x02\x01\x01"
    certificate = _handshake(11, (len(cert) + 3).to_bytes(3, "big") + len(cert).to_bytes(3, "big") + cert)
    ske = _handshake(12, b"\x03\x00\x17" + b"\x41" + b"\x04" * 65)
    flight = _server_hello(exts=_ext(0xFF01, b"\x00")) + certificate + ske + _handshake(14, b"")
    data = _record(22, flight)
    answer = parse_server_response(data)
    assert answer.kind is AnswerKind.SERVER_HELLO and answer.complete
    assert (answer.version, answer.cipher_suite, answer.group) == (0x0303, 0xC02B, 23)
    assert answer.certificates == (cert,)
    assert answer.consumed == len(data)
    # every proper prefix is "need more", never an error
    for cut in range(len(data)):
        assert not parse_server_response(data[:cut]).complete


def test_parse_split_records_and_dhe() -> None:
    prime = b"\xff" * 256
    ske = _handshake(12, struct.pack("!H", len(prime)) + prime + b"\x00\x01\x02" + b"\x00\x01\x05")
    flight = _server_hello(suite=0x009E) + ske + _handshake(14, b"")
    data = _record(22, flight[:10]) + _record(22, flight[10:])
    answer = parse_server_response(data)
    assert answer.complete and answer.dh_prime_bits == 2048


def test_parse_tls13_server_hello_and_hrr() -> None:
    sh = _server_hello(
        suite=0x1302, exts=_ext(43, b"\x03\x04") + _ext(51, b"\x00\x1d\x00\x20" + b"\x01" * 32)
    )
    answer = parse_server_response(_record(22, sh) + _record(20, b"\x01") + _record(23, b"xx"))
    assert (answer.kind, answer.version, answer.cipher_suite, answer.group) == (
        AnswerKind.SERVER_HELLO,
        0x0304,
        0x1302,
        29,
    )
    assert answer.complete
    hrr = _server_hello(suite=0x1301, random=HRR_RANDOM, exts=_ext(43, b"\x03\x04") + _ext(51, b"\x01\x00"))
    retry = parse_server_response(_record(22, hrr))
    assert retry.kind is AnswerKind.HELLO_RETRY_REQUEST and retry.group == 256 and retry.complete


def test_parse_alerts() -> None:
    answer = parse_server_response(_record(21, b"\x02\x28"))
    assert answer.kind is AnswerKind.ALERT and answer.alert_name == "handshake_failure"
    assert answer.alert_level == 2 and answer.complete
    assert parse_server_response(_record(21, b"\x02\xfe")).alert_name == "alert_254"
    after = parse_server_response(_record(22, _server_hello()) + _record(21, b"\x02\x47"))
    assert after.kind is AnswerKind.SERVER_HELLO and after.alert_name == "insufficient_security"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"E\x00\x00\x00\x10SFATAL", "ErrorResponse"),
        (b"HTTP/1.1 400 Bad", "HTTP"),
        (b"\x15\x03\x03\x00\x03\x02\x28\x00", "alert record of 3 bytes"),
        (b"\x16\x03\x03\x00\x04\x0b\x00\x00\x00", "before the ServerHello"),
        (b"\x16\x03\x03\xff\xff", "record length"),
        (_record(22, _handshake(2, b"\x03\x03")), "truncated"),
        (_record(23, b"abc"), "encrypted data before"),
    ],
)
def test_parse_malformed(data: bytes, message: str) -> None:
    with pytest.raises(TlsDecodeError, match=message) as info:
        parse_server_response(data)
    assert str(info.value).startswith("malformed TLS answer")
    assert str(info.value.at("db", 5432)).startswith("db:5432: malformed TLS answer")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_total_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(TlsDecodeError):
        parse_server_response(data)


@settings(max_examples=300, deadline=None)
@given(
    ctype=st.sampled_from([20, 21, 22, 23]),
    htype=st.integers(0, 20),
    body=st.binary(max_size=300),
    prefix_sh=st.booleans(),
)
def test_parser_total_on_record_shaped_bytes(ctype: int, htype: int, body: bytes, prefix_sh: bool) -> None:
    payload = _handshake(htype, body) if ctype == 22 else body
    data = (_record(22, _server_hello()) if prefix_sh else b"") + _record(ctype, payload)
    with contextlib.suppress(TlsDecodeError):
        parse_server_response(data)


# --------------------------------------------------------------------------------------------- real OpenSSL


def test_real_openssl_tls13(openssl_ctx: ssl.SSLContext) -> None:
    hello = build_client_hello(
        version=TlsVersion.TLSv1_3,
        cipher_suites=[0x1301, 0x1303],
        groups=[29, 23],
        server_name="localhost",
        key_shares=generate_key_shares([29]),
    )
    answer = parse_server_response(_ask_openssl(openssl_ctx, hello))
    assert answer.kind is AnswerKind.SERVER_HELLO and answer.version == 0x0304
    assert answer.cipher_suite in (0x1301, 0x1303) and answer.group == 29


def test_real_openssl_hrr_without_key_share(openssl_ctx: ssl.SSLContext) -> None:
    hello = build_client_hello(
        version=TlsVersion.TLSv1_3, cipher_suites=TLS13_SUITES, groups=[24], server_name="localhost"
    )
    answer = parse_server_response(_ask_openssl(openssl_ctx, hello))
    assert answer.kind is AnswerKind.HELLO_RETRY_REQUEST and answer.group == 24


def test_real_openssl_tls12_flight(
    openssl_ctx: ssl.SSLContext, server_cert: tuple[Path, Path, bytes]
) -> None:
    openssl_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    hello = build_client_hello(
        version=TlsVersion.TLSv1_2, cipher_suites=candidates_for(0x0303), groups=[24, 23], server_name=None
    )
    answer = parse_server_response(_ask_openssl(openssl_ctx, hello))
    assert answer.kind is AnswerKind.SERVER_HELLO and answer.complete and answer.version == 0x0303
    assert answer.cipher_suite is not None and CIPHER_SUITES[answer.cipher_suite].auth == "ECDSA"
    assert answer.group in (23, 24)
    assert answer.certificates == (server_cert[2],)


def test_real_openssl_refusals(openssl_ctx: ssl.SSLContext) -> None:
    old = build_client_hello(
        version=TlsVersion.TLSv1_1, cipher_suites=candidates_for(0x0302), groups=EC_GROUPS, server_name=None
    )
    assert parse_server_response(_ask_openssl(openssl_ctx, old)).alert_name == "protocol_version"
    rsa_only = build_client_hello(
        version=TlsVersion.TLSv1_2, cipher_suites=[0x009C, 0x002F], groups=EC_GROUPS, server_name=None
    )
    assert parse_server_response(_ask_openssl(openssl_ctx, rsa_only)).alert_name == "handshake_failure"


@pytest.mark.parametrize(
    "unit",
    [
        _record(20, b"\x01"),  # change_cipher_spec, endlessly, before any ServerHello
        _record(22, _handshake(0, b"")),  # HelloRequest, endlessly
    ],
    ids=["ccs", "hello-request"],
)
def test_endless_records_that_add_nothing_are_bounded(unit: bytes) -> None:
    # Each record is consumed and dropped, so the handshake buffer never grows: the caller, reading until
    # the answer is complete, would keep every byte and re-parse it for as long as the server keeps sending.
    data = unit * (2**19 // len(unit))
    with pytest.raises(TlsDecodeError, match="first flight larger than"):
        parse_server_response(data)
