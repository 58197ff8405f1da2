"""Round trips counted from what a relay saw: flights, labels, the cut at the first row. Pure."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from pgbatten.bench.flights import TCP_HANDSHAKE, FlightRecorder, Sender, name_exchange
from pgbatten.bench.stats import Timing, percentile
from pgbatten.probe.cipher_suites import SECP256R1, X25519
from pgbatten.probe.client_hello import build_client_hello
from pgbatten.probe.tlsraw import HRR_RANDOM
from pgbatten.probe.versions import TlsVersion
from pgbatten.probe.wire import SSL_REQUEST

STARTUP = struct.pack("!II", 41, 3 << 16) + b"user\x00bench\x00database\x00postgres\x00\x00"
SASL_INITIAL = b"p" + struct.pack("!I", 20) + b"SCRAM-SHA-256\x00" + b"\x00" * 2
QUERY = b"Q" + struct.pack("!I", 13) + b"SELECT 1\x00"


def _record(ctype: int, payload: bytes) -> bytes:
    return struct.pack("!BHH", ctype, 0x0303, len(payload)) + payload


def _server_hello(random: bytes, group: int, hrr: bool) -> bytes:
    key_share = struct.pack("!H", group) if hrr else struct.pack("!HH", group, 32) + b"\x01" * 32
    exts = struct.pack("!HHH", 0x002B, 2, 0x0304) + struct.pack("!HH", 0x0033, len(key_share)) + key_share
    body = struct.pack("!H", 0x0303) + random + b"\x00" + struct.pack("!HB", 0x1301, 0)
    body += struct.pack("!H", len(exts)) + exts
    return _record(0x16, b"\x02" + len(body).to_bytes(3, "big") + body)


def _hello(shares: dict[int, bytes]) -> bytes:
    return build_client_hello(
        version=TlsVersion.TLSv1_3,
        cipher_suites=[0x1301],
        groups=[X25519, SECP256R1],
        server_name="db.example.com",
        key_shares=shares,
    )


def _replay(flights: list[tuple[Sender, list[bytes]]], *, step: float = 1.0) -> FlightRecorder:
    """Feed flights to a recorder as a relay would: chunk by chunk, delivering each flight as it ends."""
    rec = FlightRecorder(accepted=0.0)
    t = 0.0
    for sender, chunks in flights:
        for chunk in chunks:
            t += step
            rec.received(sender, chunk, t)
        rec.delivered(sender, t + step / 2)
    return rec


def test_plaintext_scram_login_and_query_is_five_round_trips() -> None:
    rec = _replay(
        [
            (Sender.CLIENT, [STARTUP]),
            (Sender.SERVER, [b"R..sasl"]),
            (Sender.CLIENT, [SASL_INITIAL]),
            (Sender.SERVER, [b"R..continue"]),
            (Sender.CLIENT, [b"p\x00\x00\x00\x10client-final"]),
            (Sender.SERVER, [b"R..final", b"R..ok", b"S..params", b"K..key", b"Z..ready"]),
            (Sender.CLIENT, [QUERY]),
            (Sender.SERVER, [b"T..desc", b"D..row", b"C..done", b"Z..ready"]),
        ]
    )
    trips = rec.trace().round_trips()
    assert trips.count == 5
    assert trips.steps == (TCP_HANDSHAKE, "StartupMessage", "password/SASL", "password/SASL", "Query")
    assert not trips.hello_retry


def test_cut_at_first_row_leaves_out_terminate_and_close_notify() -> None:
    rec = _replay(
        [
            (Sender.CLIENT, [STARTUP]),
            (Sender.SERVER, [b"R..ok Z..ready"]),
            (Sender.CLIENT, [QUERY]),
            (Sender.SERVER, [b"D..row Z..ready"]),
        ]
    )
    had_row = 10.0
    rec.received(Sender.CLIENT, b"X\x00\x00\x00\x04", 11.0)
    rec.received(Sender.SERVER, _record(0x17, b"close_notify"), 12.0)
    trace = rec.trace()
    assert trace.round_trips().count == 4
    until_row = trace.round_trips(until=had_row)
    assert until_row.count == 3
    # The latency ends when the row was passed on to the client: the 4th flight, delivered at 4.5.
    assert until_row.latency == 4.5


def test_tls13_with_hello_retry_request_is_labelled_and_flagged() -> None:
    first = _hello({X25519: b"\x09" * 32})
    retry = _record(0x14, b"\x01") + _hello({SECP256R1: b"\x04" + b"\x07" * 64})
    rec = _replay(
        [
            (Sender.CLIENT, [SSL_REQUEST]),
            (Sender.SERVER, [b"S"]),
            (Sender.CLIENT, [first]),
            (Sender.SERVER, [_server_hello(HRR_RANDOM, SECP256R1, hrr=True)]),
            (Sender.CLIENT, [retry]),
            (Sender.SERVER, [_server_hello(b"\x22" * 32, SECP256R1, hrr=False), _record(0x17, b"finished")]),
            (Sender.CLIENT, [_record(0x17, b"client finished"), _record(0x17, b"startup")]),
            (Sender.SERVER, [_record(0x17, b"auth")]),
        ]
    )
    trips = rec.trace().round_trips()
    assert trips.hello_retry
    assert trips.count == 5
    assert trips.steps[1] == "SSLRequest"
    assert trips.steps[2] == "TLS ClientHello (key share x25519) -> HelloRetryRequest for secp256r1"
    assert trips.steps[3] == "TLS ClientHello (key share secp256r1)"
    assert trips.steps[4] == "encrypted"
    assert trips.summary.startswith("TCP handshake, SSLRequest, TLS ClientHello (key share x25519) ->")
    assert trips.compact == (
        "TCP, SSLRequest, ClientHello[x25519] HRR[secp256r1], ClientHello[secp256r1], encrypted"
    )


def test_direct_tls_has_no_ssl_request_step() -> None:
    rec = _replay(
        [
            (Sender.CLIENT, [_hello({SECP256R1: b"\x04" + b"\x07" * 64})]),
            (Sender.SERVER, [_server_hello(b"\x33" * 32, SECP256R1, hrr=False)]),
            (Sender.CLIENT, [_record(0x17, b"finished+startup")]),
            (Sender.SERVER, [_record(0x17, b"auth")]),
            (Sender.CLIENT, [_record(0x17, b"sasl")]),
            (Sender.SERVER, [_record(0x17, b"auth")]),
        ]
    )
    trips = rec.trace().round_trips()
    assert trips.count == 4
    assert trips.summary == "TCP handshake, TLS ClientHello (key share secp256r1), 2 encrypted"
    assert not trips.hello_retry


def test_tls12_second_flight_is_named() -> None:
    step = name_exchange(_record(0x16, b"\x10\x00\x00\x21" + b"\x00" * 33), b"\x14\x03\x03")
    assert (step.label, step.short) == ("TLS 1.2 key exchange", "KeyExchange")


def test_unreadable_client_hello_still_counts() -> None:
    assert name_exchange(b"\x16\x03\x01\x00\x05\x01\x00", b"garbage").label == "TLS ClientHello"
    assert name_exchange(b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"S").label == "SSLRequest"
    assert name_exchange(b"\x00\x00\x00\x08\x04\xd2\x16\x30", b"N").label == "GSSENCRequest"
    assert name_exchange(b"?", b"").label == "data"


def test_a_server_that_speaks_first_is_no_round_trip() -> None:
    rec = _replay([(Sender.SERVER, [b"hello"]), (Sender.CLIENT, [b"Q..."]), (Sender.SERVER, [b"D..."])])
    assert rec.trace().round_trips().count == 2


def test_byte_totals_and_no_delivery() -> None:
    rec = FlightRecorder(accepted=5.0)
    rec.received(Sender.CLIENT, b"abc", 6.0)
    rec.received(Sender.SERVER, b"", 6.5)  # an empty read is no data
    rec.received(Sender.SERVER, b"de", 7.0)
    trace = rec.trace(closed=8.0, error="boom")
    trips = trace.round_trips()
    assert (trips.bytes_from_client, trips.bytes_from_server) == (3, 2)
    assert trips.latency is None
    assert trace.error == "boom"
    assert trips.as_dict()["count"] == 2


_exchanges = st.lists(
    st.tuples(
        st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4),
        st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4),
    ),
    max_size=12,
)


@given(_exchanges)
def test_count_is_exchanges_plus_tcp_whatever_the_chunking(
    exchanges: list[tuple[list[bytes], list[bytes]]],
) -> None:
    flights: list[tuple[Sender, list[bytes]]] = []
    for client_chunks, server_chunks in exchanges:
        flights.append((Sender.CLIENT, client_chunks))
        flights.append((Sender.SERVER, server_chunks))
    trips = _replay(flights).trace().round_trips()
    assert trips.count == len(exchanges) + 1
    assert len(trips.steps) == trips.count
    assert trips.bytes_from_client == sum(len(b) for c, _ in exchanges for b in c)


def test_timing_summary() -> None:
    samples = [0.3, 0.1, 0.2, 0.4, 0.5]
    timing = Timing.of(samples)
    assert (timing.median, timing.minimum, timing.maximum, timing.runs) == (0.3, 0.1, 0.5, 5)
    assert timing.p95 == 0.5
    assert percentile([float(i) for i in range(1, 21)], 0.95) == 19.0
    assert timing.as_dict()["median_seconds"] == 0.3
