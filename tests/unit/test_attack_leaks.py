"""What the connection summary says leaked, and the attacker commands' bad input."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from pgbatten.attack.decode import decode_connection
from pgbatten.attack.leaks import Sensitivity, summarize
from pgbatten.cli import main
from tests.unit.test_attack_decode import (
    CARD,
    PLAIN_CLIENT,
    PLAIN_SERVER,
    SSL_REQUEST,
    client_hello,
    cstr,
    msg,
    startup,
    tls_record,
)


def test_plaintext_summary_lists_credentials_sql_rows_and_cancel_key() -> None:
    summary = summarize(decode_connection(PLAIN_CLIENT, PLAIN_SERVER).events)
    assert (summary.transport, summary.negotiation, summary.encrypted) == ("plaintext", "SSLRequest", False)
    leaks = {leak.what: leak for leak in summary.leaks}
    assert leaks["user"].detail == "app" and leaks["database"].detail == "shop"
    assert "deadbeef" in leaks["md5 hash"].detail and leaks["md5 hash"].sensitivity == Sensitivity.SECRET
    assert leaks["SQL"].detail == "1 statements: SELECT holder, card_number FROM payments"
    assert leaks["rows"].detail.startswith(f"2 rows of holder, card_number; first: Alice Example | {CARD}")
    assert leaks["cancel key"].detail.startswith("backend 4242, key 00000007")
    assert leaks["server version"].detail == "15.8"
    assert summary.client_bytes == len(PLAIN_CLIENT) and summary.server_bytes == len(PLAIN_SERVER)


def test_cleartext_password_and_scram_proof() -> None:
    events = decode_connection(startup(user="u") + msg(b"p", cstr("hunter2")), b"").events
    assert summarize(events).leaked("password")[0].detail == "cleartext: hunter2"
    sasl = cstr("SCRAM-SHA-256") + b"\x00\x00\x00\x09n,,n=,r=x"
    client = startup(user="u") + msg(b"p", sasl) + msg(b"p", b"c=biws,r=xy,p=cHJvb2Y=")
    (scram,) = summarize(decode_connection(client, b"").events).leaked("SCRAM exchange")
    assert scram.sensitivity == Sensitivity.SECRET and "offline guessing" in scram.detail


def test_tls_summary_keeps_only_metadata() -> None:
    client = SSL_REQUEST + tls_record(22, client_hello("db.internal"), 0x0301) + tls_record(23, bytes(40))
    summary = summarize(decode_connection(client, b"S" + tls_record(23, bytes(70))).events)
    assert summary.transport == "TLS" and summary.encrypted
    assert summary.leaked("server name (SNI)")[0].detail == "db.internal"
    assert "(45 bytes)" in summary.leaked("record sizes")[0].detail
    assert {leak.sensitivity for leak in summary.leaks} == {Sensitivity.METADATA}


def test_refused_and_cancel() -> None:
    assert summarize(decode_connection(SSL_REQUEST, b"N").events).transport == "refused"
    cancel = b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + b"\x00\x00\x10\x92" + b"\xca\xfe\xba\xbe"
    summary = summarize(decode_connection(cancel, b"").events)
    assert summary.transport == "cancel request"
    assert summary.leaked("CancelRequest")[0].detail == "backend 4242, key cafebabe"


def test_wiretap_bad_input_is_one_line() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["wiretap", "--upstream", "bad host!"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("pgbatten: error: invalid target 'bad host!'")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(main, ["wiretap", "--listen", str(port), "--upstream", "127.0.0.1:5432"])
    assert result.exit_code == 2
    assert f"pgbatten: error: 127.0.0.1:{port}: cannot listen" in result.output
