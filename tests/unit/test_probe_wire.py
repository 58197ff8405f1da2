"""Pure protocol bytes of the outside check."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbatten.errors import PgBattenError, UsageError
from pgbatten.probe.wire import (
    GSSENC_REQUEST,
    MAX_MESSAGE_LENGTH,
    SSL_REQUEST,
    BackendMessage,
    SslAnswer,
    Target,
    classify_ssl_response,
    classify_startup_response,
    parse_error_fields,
    parse_error_response,
    parse_message,
    parse_target,
    startup_message,
)


def error_response(fields: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + v.encode() + b"\0" for k, v in fields.items()) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


def auth_request(code: int, extra: bytes = b"") -> bytes:
    body = struct.pack("!I", code) + extra
    return b"R" + struct.pack("!I", len(body) + 4) + body


NO_ENCRYPTION = {
    "S": "FATAL",
    "V": "FATAL",
    "C": "28000",
    "M": 'no pg_hba.conf entry for host "127.0.0.1", user "pgbatten_probe", database "postgres", '
    "no encryption",
    "F": "auth.c",
    "L": "543",
    "R": "ClientAuthentication",
}


def test_request_constants() -> None:
    assert SSL_REQUEST == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert struct.unpack("!II", SSL_REQUEST) == (8, 80877103)
    assert struct.unpack("!II", GSSENC_REQUEST) == (8, 80877104)


def test_startup_message_layout() -> None:
    msg = startup_message("pgbatten_probe", "postgres", {"application_name": "pgbatten"})
    (length, version) = struct.unpack("!II", msg[:8])
    assert length == len(msg)
    assert version == 196608
    assert msg[8:] == b"user\0pgbatten_probe\0database\0postgres\0application_name\0pgbatten\0\0"


def test_startup_message_rejects_nul() -> None:
    with pytest.raises(UsageError):
        startup_message("a\0b", "postgres")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db.example.com", Target("db.example.com", 5432)),
        ("db.example.com:5433", Target("db.example.com", 5433)),
        ("127.0.0.1", Target("127.0.0.1", 5432)),
        ("127.0.0.1:6543", Target("127.0.0.1", 6543)),
        ("[::1]:5433", Target("::1", 5433)),
        ("[::1]", Target("::1", 5432)),
        ("::1", Target("::1", 5432)),
        ("fe80::1%eth0", Target("fe80::1%eth0", 5432)),
        ("localhost", Target("localhost", 5432)),
    ],
)
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":5432",
        "db:",
        "db:0",
        "db:65536",
        "db:abc",
        "[::1",
        "[nothost]:5432",
        "[::1]x",
        "db..x",
        "a b",
        "::1:x",
    ],
)
def test_parse_target_invalid(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


def test_target_str_brackets_ipv6() -> None:
    assert str(Target("::1", 5433)) == "[::1]:5433"
    assert str(Target("db", 5432)) == "db:5432"


def test_ssl_response_accept_refuse_close() -> None:
    assert classify_ssl_response(b"S").answer is SslAnswer.ACCEPTED
    assert not classify_ssl_response(b"S").bytes_after_answer
    assert classify_ssl_response(b"N").answer is SslAnswer.REFUSED
    assert classify_ssl_response(b"").answer is SslAnswer.CLOSED


def test_ssl_response_buffered_bytes_is_reported() -> None:
    resp = classify_ssl_response(b"S\x16\x03\x01junk")
    assert resp.answer is SslAnswer.ACCEPTED
    assert resp.bytes_after_answer
    assert resp.extra == b"\x16\x03\x01junk"


def test_ssl_response_error_old_server() -> None:
    resp = classify_ssl_response(
        error_response({"S": "FATAL", "C": "08P01", "M": "unsupported frontend protocol"})
    )
    assert resp.answer is SslAnswer.ERROR
    assert resp.error is not None
    assert resp.error.code == "08P01"


def test_ssl_response_not_postgres() -> None:
    resp = classify_ssl_response(b"HTTP/1.1 400 Bad Request\r\n")
    assert resp.answer is SslAnswer.UNEXPECTED
    assert "HTTP/1.1 400" in resp.detail


def test_error_fields() -> None:
    fields = parse_error_response(error_response(NO_ENCRYPTION))
    assert fields.problem is None
    assert fields.severity == "FATAL"
    assert fields.code == "28000"
    assert fields.message is not None
    assert fields.message.endswith("no encryption")


def test_error_fields_malformed() -> None:
    assert parse_error_fields(b"Mabc").problem == "unterminated error field"
    assert parse_error_fields(b"").problem == "error fields not terminated"
    assert parse_error_fields(b"\0xx").problem is not None


@pytest.mark.parametrize("length", [0, 3, MAX_MESSAGE_LENGTH + 1, 0xFFFFFFFF])
def test_bad_lengths_are_problems(length: int) -> None:
    msg = parse_message(b"E" + struct.pack("!I", length))
    assert msg.problem is not None


def test_truncated_and_trailing() -> None:
    assert parse_message(b"R\x00\x00\x00\x08\x00").problem is not None
    assert parse_message(auth_request(5, b"salt") + b"x").problem is not None


@pytest.mark.parametrize(
    ("data", "accepted", "method"),
    [
        (auth_request(5, b"salt"), True, "md5-password"),
        (auth_request(10, b"SCRAM-SHA-256\0\0"), True, "sasl"),
        (auth_request(0), True, "ok"),
        (auth_request(3), True, "cleartext-password"),
    ],
)
def test_startup_auth_requests_mean_accepted(data: bytes, accepted: bool, method: str) -> None:
    verdict = classify_startup_response(parse_message(data))
    assert verdict.accepted is accepted
    assert verdict.auth_method == method


def test_startup_no_encryption_means_refused() -> None:
    verdict = classify_startup_response(parse_message(error_response(NO_ENCRYPTION)))
    assert verdict.accepted is False


def test_startup_hostnossl_reject_means_refused() -> None:
    fields = dict(NO_ENCRYPTION)
    fields["M"] = 'pg_hba.conf rejects connection for host "10.0.0.1", user "x", database "y", no encryption'
    assert classify_startup_response(parse_message(error_response(fields))).accepted is False


def test_startup_old_wording_means_refused() -> None:
    fields = dict(NO_ENCRYPTION)
    fields["M"] = 'no pg_hba.conf entry for host "127.0.0.1", user "x", database "y", SSL off'
    assert classify_startup_response(parse_message(error_response(fields))).accepted is False


def test_startup_other_auth_failure_means_accepted() -> None:
    fields = dict(NO_ENCRYPTION)
    fields["M"] = 'role "pgbatten_probe" does not exist'
    assert classify_startup_response(parse_message(error_response(fields))).accepted is True
    fields["C"] = "28P01"
    fields["M"] = 'password authentication failed for user "pgbatten_probe"'
    assert classify_startup_response(parse_message(error_response(fields))).accepted is True


def test_startup_undetermined() -> None:
    fields = {"S": "FATAL", "C": "53300", "M": "sorry, too many clients already"}
    assert classify_startup_response(parse_message(error_response(fields))).accepted is None
    assert classify_startup_response(BackendMessage("Z", b"I")).accepted is None
    assert classify_startup_response(BackendMessage("R", b"\0")).accepted is None


@given(st.binary(max_size=300))
def test_parsers_never_raise_foreign_errors(data: bytes) -> None:
    try:
        classify_ssl_response(data)
        parse_error_response(data)
        parse_error_fields(data)
        classify_startup_response(parse_message(data))
    except PgBattenError:
        pass


@given(st.binary(max_size=300))
def test_error_response_with_arbitrary_body(body: bytes) -> None:
    data = b"E" + struct.pack("!I", len(body) + 4) + body
    try:
        classify_ssl_response(data)
        classify_startup_response(parse_message(data))
    except PgBattenError:
        pass


@pytest.mark.parametrize(
    "message",
    [
        # lc_messages follows the locale initdb ran in (Debian's pg_createcluster too), and the refusal is
        # sent before authentication in that language; only the file name stays as it is.
        "kein pg_hba.conf-Eintrag für Host »127.0.0.1«, Benutzer »pgbatten_probe«, Datenbank »postgres«, "
        "keine Verschlüsselung",
        "aucune entrée dans pg_hba.conf pour l'hôte « 127.0.0.1 », utilisateur « pgbatten_probe », "
        "base de données « postgres », pas de chiffrement",
        "pg_hba.conf rechaza la conexión para el host «10.0.0.1», usuario «x», base de datos «y», "
        "sin cifrado",
    ],
    ids=["de", "fr", "es-reject"],
)
def test_startup_translated_pg_hba_refusal_means_refused(message: str) -> None:
    fields = dict(NO_ENCRYPTION)
    fields["M"] = message
    verdict = classify_startup_response(parse_message(error_response(fields)))
    assert verdict.accepted is False, verdict.reason


def test_startup_translated_role_error_still_means_accepted() -> None:
    # trust over plaintext, then the role lookup fails: the login was processed without TLS.
    fields = dict(NO_ENCRYPTION)
    fields["M"] = "Rolle »pgbatten_probe« existiert nicht"
    assert classify_startup_response(parse_message(error_response(fields))).accepted is True
